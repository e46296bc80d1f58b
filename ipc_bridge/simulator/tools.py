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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


async def run_command(command: str, cwd: Path, timeout: float, clock: Clock) -> str:
    """Run an execute_command for real, like the engine's terminal: ``sh -c`` in the workspace, stdout
    and stderr together. Timers due meanwhile (usage, status) fire on time through ``clock``. A command
    past ``timeout`` seconds is killed with everything it started, and its output so far is shown."""
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a kill reaches whatever it started
    )

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    reader = asyncio.ensure_future(proc.communicate())
    bounded = asyncio.ensure_future(asyncio.wait_for(asyncio.shield(reader), timeout))
    try:
        out, _ = await clock.wait(bounded)
    except TimeoutError:
        kill_group()
        out, _ = await reader
    finally:
        if proc.returncode is None:
            kill_group()
            bounded.cancel()
            await proc.wait()
    return out.decode("utf-8", errors="replace")
