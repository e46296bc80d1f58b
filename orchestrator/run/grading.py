"""Grading: run a check (or setup) command in the attempt's workspace, in its own process group.

A check is any command; exit status 0 means passed. It runs in a new session, so that at its timeout
(or when the caller is cancelled) the whole group goes: SIGTERM, a grace period, then SIGKILL,
grandchildren included (a test runner's workers, a server it started). Processes the command leaves
behind after a normal exit are killed too: the workspace is about to be thrown away, and a straggler
holding the output pipe would otherwise keep the check from returning.

Its environment is a minimal base plus the suite's ``env:`` (:func:`orchestrator.processes.child_env.command_env`):
the agent's code runs here, and the suite's API keys are none of its business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.processes.child_env import command_env
from orchestrator.results.records import CheckResult

log = logging.getLogger(__name__)

DEFAULT_TAIL_BYTES = 16 * 1024
DEFAULT_KILL_GRACE = 2.0
_DRAIN_TIMEOUT = 1.0
_READ_CHUNK = 64 * 1024


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Signals the leader's exit as it happens: ``Process.wait()`` also waits for the output pipe to
    close, which a background process the command started can hold open for ever."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _spawn(
    command: str | Sequence[str], cwd: str, env: dict[str, str]
) -> tuple[asyncio.SubprocessTransport, _Protocol]:
    loop = asyncio.get_running_loop()
    # The same process either way: no stdin, output and errors interleaved in one pipe, and a session of
    # its own (its whole group is killed on a timeout).
    options: dict[str, Any] = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.STDOUT,
        "cwd": cwd,
        "env": env,
        "start_new_session": True,
    }
    if isinstance(command, str):
        return await loop.subprocess_shell(lambda: _Protocol(loop), command, **options)
    return await loop.subprocess_exec(lambda: _Protocol(loop), *command, **options)


def _killpg(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id was reused by someone else's process: not ours to kill
        return False
    return True


def _tail_text(buffer: bytearray, dropped: int, limit: int) -> str:
    data = bytes(buffer[-limit:])
    dropped += len(buffer) - len(data)
    text = data.decode("utf-8", errors="replace")
    return f"[... {dropped} bytes omitted]\n{text}" if dropped else text


async def run_command(
    command: str | Sequence[str],
    cwd: str | Path,
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> CheckResult:
    """Run ``command`` (a shell string for ``/bin/sh -c``, or an argv list) in ``cwd``.

    ``env`` is added to the minimal base of :func:`~orchestrator.processes.child_env.command_env`. Never raises for
    the command's own failures (not found, non-zero exit, timeout): they are in the result. Cancelling
    the caller kills the group."""
    full_env = command_env(env)
    started = time.monotonic()
    try:
        transport, protocol = await _spawn(command, str(cwd), full_env)
    except OSError as exc:
        return CheckResult(
            passed=False,
            exit_code=None,
            duration=time.monotonic() - started,
            timed_out=False,
            output_tail=f"cannot start {command!r}: {exc}",
        )

    pgid = transport.get_pid()  # a session leader's group id is its pid
    buffer = bytearray()
    dropped = 0

    async def read() -> None:
        nonlocal dropped
        assert protocol.stdout is not None
        while True:
            chunk = await protocol.stdout.read(_READ_CHUNK)
            if not chunk:
                return
            buffer.extend(chunk)
            if len(buffer) > 2 * tail_bytes:
                cut = len(buffer) - tail_bytes
                dropped += cut
                del buffer[:cut]

    reader = asyncio.ensure_future(read())
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            log.info("command timed out after %.1f s, terminating its process group: %r", timeout, command)
            _killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.exited), kill_grace)
        # stragglers: children that ignore SIGTERM, or that outlived a leader which exited normally
        _killpg(pgid, signal.SIGKILL)
        await asyncio.shield(protocol.exited)
        try:
            await asyncio.wait_for(asyncio.shield(reader), _DRAIN_TIMEOUT)
        except asyncio.TimeoutError:
            # a process that left the group (setsid) still holds the pipe; its output is not ours
            log.warning("output pipe of %r still open after the process group was killed", command)
    finally:
        if transport.get_returncode() is None or not reader.done():
            _killpg(pgid, signal.SIGKILL)
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        transport.close()
    exit_code = transport.get_returncode()
    return CheckResult(
        passed=not timed_out and exit_code == 0,
        exit_code=exit_code,
        duration=time.monotonic() - started,
        timed_out=timed_out,
        output_tail=_tail_text(buffer, dropped, tail_bytes),
    )
