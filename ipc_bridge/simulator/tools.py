"""What a scripted tool call looks like on the wire, and what it does to the workspace.

The ask texts follow the engine (``{"tool":"newFileCreated",...}`` and friends). Writes are real, so a
grading step can check the workspace. apply_diff fails the way the engine does when the script does not
force a failure: a missing file only shows as ``say:error``; a SEARCH text that does not match sends
``taskToolFailed`` (section 7.8 of the protocol notes). Both count in the ToolUsage ``failures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipc_bridge.redaction import SECRET_KEY, Redactor
from ipc_bridge.simulator.script import ToolCall

if TYPE_CHECKING:
    from ipc_bridge.simulator.task import Clock

# ToolName -> the "tool" of the ask:tool text, for tools the engine shows that way
_DISPLAY = {
    "read_file": "readFile",
    "list_files": "listFilesTopLevel",
    "search_files": "searchFiles",
    "codebase_search": "codebaseSearch",
    "switch_mode": "switchMode",
    "update_todo_list": "updateTodoList",
    "generate_image": "generateImage",
    "run_slash_command": "runSlashCommand",
}


def dumps(value: Any) -> str:
    """JSON.stringify: compact, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ToolStep:
    """One tool call, resolved against the workspace at the moment the agent reaches it."""

    name: str
    ask: str | None = None  # "tool" or "command"; None when the call fails before asking
    partial_text: str = ""
    final_text: str = ""
    apply: Callable[[], None] | None = None
    failure: str | None = None  # say_error | tool_failed | both
    error: str = ""
    output: str | None = None  # say:command_output after a command runs
    extra: dict[str, Any] = field(default_factory=dict)


def _diff(path: str, old: str | None, new: str) -> tuple[str, dict[str, int]]:
    lines = list(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile="/dev/null" if old is None else path,
            tofile=path,
            lineterm="\n",
        )
    )
    added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
    return "=" * 67 + "\n" + "".join(lines), {"added": added, "removed": removed}


def _file_json(tool: str, path: str, content: str, **more: Any) -> str:
    return dumps(
        {
            "tool": tool,
            "path": path,
            "content": content,
            "isOutsideWorkspace": False,
            "isProtected": False,
            **more,
        }
    )


def _writer(target: Path, content: str) -> Callable[[], None]:
    def write() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")

    return write


def _missing(abs_path: Path) -> str:
    return (
        f"File does not exist at path: {abs_path}\n\n<error_details>\nThe specified file could not be "
        "found. Please verify the file path and try again.\n</error_details>"
    )


def _no_match(search: str, current: str) -> str:
    numbered = "".join(f"{i} | {line}\n" for i, line in enumerate(current.splitlines(), 1))
    return (
        "<error_details>\nNo sufficiently similar match found (needs 100%)\n\n"
        f"Search Content:\n{search}\n\nOriginal Content:\n{numbered}\n</error_details>"
    )


def prepare(call: ToolCall, workspace: Path) -> ToolStep:
    """Resolve ``call`` against the current state of ``workspace``."""
    path = call.path or ""
    target = workspace / path
    if call.fail is not None:
        return ToolStep(call.tool, failure=call.fail, error=call.error or f"{call.tool} failed (simulated)")
    if call.tool == "write_to_file":
        return _write(call, path, target)
    if call.tool == "apply_diff":
        return _apply_diff(call, path, target)
    if call.tool == "execute_command":
        command = call.command or ""
        return ToolStep(
            "execute_command", ask="command", partial_text=command, final_text=command, output=call.output
        )
    if call.tool == "read_file":
        if not target.is_file():
            return ToolStep("read_file", failure="say_error", error=call.error or _missing(target))
        text = dumps({"tool": "readFile", "path": path, "isOutsideWorkspace": False, "content": str(target)})
        return ToolStep("read_file", ask="tool", partial_text=text, final_text=text)
    text = dumps(
        {"tool": _DISPLAY.get(call.tool, call.tool), **({"path": path} if call.path else {}), **call.args}
    )
    return ToolStep(call.tool, ask="tool", partial_text=text, final_text=text)


def _write(call: ToolCall, path: str, target: Path) -> ToolStep:
    content = call.content or ""
    old = target.read_text(encoding="utf-8", errors="replace") if target.is_file() else None
    kind = "newFileCreated" if old is None else "editedExistingFile"
    diff, stats = _diff(path, old, content)
    return ToolStep(
        "write_to_file",
        ask="tool",
        partial_text=_file_json(kind, path, content),
        final_text=_file_json(kind, path, diff, diffStats=stats),
        apply=_writer(target, content),
    )


def _apply_diff(call: ToolCall, path: str, target: Path) -> ToolStep:
    if not target.is_file():
        return ToolStep("apply_diff", failure="say_error", error=call.error or _missing(target))
    current = target.read_text(encoding="utf-8", errors="replace")
    search, replace = call.search or "", call.replace or ""
    if search not in current:
        return ToolStep("apply_diff", failure="tool_failed", error=call.error or _no_match(search, current))
    new = current.replace(search, replace, 1)
    diff, stats = _diff(path, current, new)
    partial = dumps(
        {
            "tool": "appliedDiff",
            "path": path,
            "diff": f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE",
            "isOutsideWorkspace": False,
            "isProtected": False,
        }
    )
    final = dumps(
        {
            "tool": "appliedDiff",
            "path": path,
            "diff": diff,
            "isOutsideWorkspace": False,
            "isProtected": False,
            "diffStats": stats,
        }
    )
    return ToolStep(
        "apply_diff", ask="tool", partial_text=partial, final_text=final, apply=_writer(target, new)
    )


OUTPUT_LIMIT = 50_000
"""Characters of a command's output that are shown: the first 20 % and the last 80 %, with a
``[...N characters omitted...]`` line between, as Roo's ``truncateOutput`` keeps its
``terminalOutputCharacterLimit`` (50,000 by default). Only that much is ever held in memory."""


def command_env() -> tuple[dict[str, str], Redactor]:
    """The environment a command runs with: the host's, less every variable whose name looks secret
    (``*key*``, ``*token*``...: the rule the orchestrator applies to its own children); and a redactor of
    those variables' values, in case the command finds them some other way."""
    env = {name: value for name, value in os.environ.items() if not SECRET_KEY.search(name)}
    return env, Redactor(value for name, value in os.environ.items() if SECRET_KEY.search(name))


def secret_values(config: Mapping[str, Any]) -> list[str]:
    """The string values under secret-looking keys of a StartNewTask configuration (API keys)."""
    return [v for k, v in config.items() if isinstance(v, str) and v and SECRET_KEY.search(k)]


class _CappedOutput:
    """The head and the tail of a stream, at most ``limit`` characters in all (counted as bytes)."""

    def __init__(self, limit: int) -> None:
        self.head_size = limit // 5
        self.tail_size = limit - self.head_size
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_size - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_size:
            del self.tail[: len(self.tail) - self.tail_size]

    def text(self) -> str:
        omitted = self.total - len(self.head) - len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        return head + tail if omitted <= 0 else f"{head}\n[...{omitted} characters omitted...]\n{tail}"


async def run_command(
    command: str,
    cwd: Path,
    timeout: float,
    clock: Clock,
    *,
    redactor: Redactor | None = None,
    limit: int = OUTPUT_LIMIT,
) -> str:
    """Run an execute_command for real, like the engine's terminal: ``sh -c`` in the task's workspace
    (the attempt's own copy, under the orchestrator), stdout and stderr together, with no secret-looking
    environment variable (:func:`command_env`). Timers due meanwhile (usage, status) fire on time through
    ``clock``. A command past ``timeout`` seconds is killed with everything it started, and its output so
    far is shown. The output is capped at ``limit`` characters and redacted: of the variables left out,
    and of ``redactor``'s secrets (the task's API keys)."""
    env, hidden = command_env()
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a kill reaches whatever it started
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    output = _CappedOutput(limit)

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def read() -> None:
        while chunk := await stdout.read(65536):
            output.add(chunk)
        await proc.wait()

    reader = asyncio.ensure_future(read())
    bounded = asyncio.ensure_future(asyncio.wait_for(asyncio.shield(reader), timeout))
    try:
        await clock.wait(bounded)
    except TimeoutError:
        kill_group()
        # the output so far; a process that left the group could hold the pipe open for ever
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5.0)
    finally:
        if proc.returncode is None:
            kill_group()
            bounded.cancel()
            await proc.wait()
    text = hidden.text(output.text())
    return redactor.text(text) if redactor is not None else text
