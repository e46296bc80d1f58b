"""Run the node-ipc peers (interop/roo_server.js, interop/roo_client.js) and other processes under test.

Every process is started through :class:`Processes`, which the ``procs`` fixture closes at the end of
the test whatever happened: a process still running gets SIGTERM, then SIGKILL, and is reaped.
Readiness is always a line the peer prints (``{"listening": ...}``), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tests.conftest import INTEROP

NODE_TIMEOUT = 20.0
LINE_LIMIT = 64 * 1024 * 1024  # the client echoes whole frames; a frame can be megabytes

JsonLine = dict[str, Any]


class PeerExited(Exception):
    """The process closed its stdout before printing the expected line."""


class Proc:
    """One child process whose stdout is a stream of JSON lines (unless it goes to a file)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, stderr_path: Path) -> None:
        self.proc = proc
        self.name = name
        self.stderr_path = stderr_path
        self.lines: list[JsonLine] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def next_line(self, timeout: float = NODE_TIMEOUT) -> JsonLine:
        assert self.proc.stdout is not None, f"{self.name}: stdout is not a pipe"
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise PeerExited(f"{self.name} closed stdout (exit {self.proc.returncode}): {self.stderr()}")
        line: JsonLine = orjson.loads(raw)
        self.lines.append(line)
        return line

    async def wait_for(
        self, predicate: Callable[[JsonLine], bool], timeout: float = NODE_TIMEOUT
    ) -> JsonLine:
        """The first line (from now on) for which ``predicate`` holds; every line read is kept in
        :attr:`lines`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"{self.name}: no matching line; stderr: {self.stderr()}")
            try:
                line = await self.next_line(remaining)
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError(
                    f"{self.name}: no matching line; stderr: {self.stderr()}"
                ) from None
            if predicate(line):
                return line

    async def summary(self, timeout: float = NODE_TIMEOUT) -> JsonLine:
        return await self.wait_for(lambda line: line.get("summary") is True, timeout)

    async def wait(self, timeout: float = NODE_TIMEOUT) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self, grace: float = 5.0) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL after ``grace``) and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.proc.stdout is not None:
            # Read to EOF so the pipe transport closes here, not in a finaliser warning.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.stdout.read(), grace)


def _sink(path: Path) -> BinaryIO:
    # The child inherits the descriptor; ours closes as soon as the child has started.
    return open(path, "wb")


class Processes:
    """Starts processes for one test and owns their cleanup."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    async def start(self, name: str, argv: Sequence[str], *, stdout_file: Path | None = None) -> Proc:
        stderr_path = self.log_dir / f"{name}-{len(self.started)}.stderr"
        with _sink(stderr_path) as err:
            if stdout_file is None:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                    limit=LINE_LIMIT,
                )
            else:
                with _sink(stdout_file) as out:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err
                    )
        peer = Proc(proc, name, stderr_path)
        self.started.append(peer)
        return peer

    async def node(self, script: str, *args: str) -> Proc:
        return await self.start(script.removesuffix(".js"), ["node", str(INTEROP / script), *args])

    async def roo_server(self, socket_path: Path, *args: str) -> tuple[Proc, JsonLine]:
        """Start interop/roo_server.js and wait until it listens; returns the peer and its
        ``{"listening": path, "pid": pid}`` line."""
        peer = await self.node("roo_server.js", "--socket", str(socket_path), *args)
        ready = await peer.wait_for(lambda line: "listening" in line)
        assert ready["listening"] == str(socket_path)
        return peer, ready

    async def close(self) -> None:
        for peer in reversed(self.started):
            await peer.close()


def script_arg(steps: Sequence[dict[str, Any]]) -> str:
    """A roo_client.js ``--script`` argument."""
    return orjson.dumps(list(steps)).decode()
