"""Helpers for the benchmark scripts: child processes that talk JSON lines, their cleanup, statistics.

Every child is registered with a :class:`Children` the moment it starts, and ``Children.close`` stops
whatever is still running (SIGTERM, then SIGKILL) and reaps it; ``Children.kill_now`` is the synchronous
last resort for an interpreter that is going down. Readiness is always a line a child prints, never a
sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import zmq
import zmq.asyncio

from ipc_bridge.lifeline import preexec_die_with_parent
from ipc_bridge.server.launcher import BridgeProcess

ROOT = Path(__file__).resolve().parent.parent
INTEROP = ROOT / "interop"
LINE_LIMIT = 16 * 1024 * 1024
NODE_WAIT = 20.0
"""Seconds a node peer may take to start listening or to print its summary."""

JsonLine = dict[str, Any]


class ChildFailed(RuntimeError):
    """A child exited, or stayed silent, before printing the line we waited for."""


class Child:
    """A child process whose stdout is JSON lines; stderr goes to a file kept for error messages."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.stderr_path = stderr_path
        self.lines: list[JsonLine] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    async def wait_for(self, predicate: Callable[[JsonLine], bool], timeout: float) -> JsonLine:
        """The first stdout line from now on that satisfies ``predicate`` (all lines are kept)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except asyncio.TimeoutError:
                raise ChildFailed(
                    f"{self.name}: no expected line in {timeout:g} s: {self.stderr_tail()}"
                ) from None
            if not raw:
                await self.proc.wait()
                raise ChildFailed(f"{self.name} exited ({self.proc.returncode}): {self.stderr_tail()}")
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                # roo_server.js exits right after its summary, and node drops what a pipe has not
                # taken yet: a summary over 64 KiB can arrive cut. Keep the text for salvage_counts.
                line = {"unparsed": raw.decode(errors="replace")}
            if not isinstance(line, dict):
                continue
            self.lines.append(line)
            if predicate(line):
                return line

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, SIGKILL after ``grace``, reap, drain stdout (so no transport outlives the loop)."""
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except asyncio.TimeoutError:
            self.signal(signal.SIGKILL)
            await self.proc.wait()
        if self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                rest = await asyncio.wait_for(self.proc.stdout.read(), grace)
                for raw in rest.splitlines():
                    with contextlib.suppress(orjson.JSONDecodeError):
                        line = orjson.loads(raw)
                        if isinstance(line, dict):
                            self.lines.append(line)


def _sink(path: Path) -> BinaryIO:
    # The child inherits the descriptor; ours closes as soon as the child has started.
    return open(path, "wb")


class Children:
    """Owns every process a benchmark starts."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.bridges: list[BridgeProcess] = []

    async def start(self, name: str, argv: Sequence[str]) -> Child:
        stderr_path = self.log_dir / f"{name}-{len(self.children)}.stderr"
        with _sink(stderr_path) as err:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=LINE_LIMIT,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop the children in order.
                # SIGTERM if we die outright, so that no peer outlives the benchmark.
                start_new_session=True,
                preexec_fn=preexec_die_with_parent(signal.SIGTERM),
            )
        child = Child(name, proc, stderr_path)
        self.children.append(child)
        return child

    async def node(self, script: str, *args: str, name: str | None = None) -> Child:
        return await self.start(name or script, ["node", str(INTEROP / script), *args])

    def add_bridge(self, bridge: BridgeProcess) -> BridgeProcess:
        self.bridges.append(bridge)
        return bridge

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for bridge in self.bridges:
            if bridge.alive():
                await loop.run_in_executor(None, bridge.stop)
        for child in self.children:
            await child.stop()

    def kill_now(self) -> None:
        """Synchronous: SIGKILL anything still running (the event loop may be gone)."""
        for bridge in self.bridges:
            with contextlib.suppress(Exception):
                bridge.kill()
        for child in self.children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(child.pid, 0)


@contextlib.contextmanager
def private_tempdir(prefix: str = "rbench-") -> Iterator[Path]:
    """A 0700 directory with a short path (node-ipc and ZeroMQ socket paths must stay < 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def percentiles(samples_us: Sequence[float]) -> dict[str, float]:
    """Nearest-rank statistics in microseconds, computed the same way as interop/bench_rtt.js."""
    ordered = sorted(samples_us)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))]

    return {
        "n": n,
        "p50_us": at(0.5),
        "p90_us": at(0.9),
        "p99_us": at(0.99),
        "mean_us": sum(ordered) / n,
        "min_us": ordered[0],
        "max_us": ordered[-1],
    }


def node_available() -> bool:
    return shutil.which("node") is not None and (INTEROP / "node_modules" / "node-ipc").is_dir()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux ``/proc``); None where that is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time that named processes (``None`` = this one, all threads) spend between two points."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.start = self._sample()

    def _sample(self) -> dict[str, float | None]:
        return {
            name: time.process_time() if pid is None else cpu_seconds(pid) for name, pid in self.pids.items()
        }

    def per_unit_us(self, units: int) -> dict[str, float | None]:
        """Microseconds of CPU per unit (event or round trip) since construction."""
        end = self._sample()
        out: dict[str, float | None] = {}
        for name, before in self.start.items():
            after = end[name]
            out[name] = None if before is None or after is None else (after - before) / units * 1e6
        return out


def is_summary(line: JsonLine) -> bool:
    """A peer's summary line, whole or cut short (see :meth:`Child.wait_for`)."""
    unparsed = line.get("unparsed")
    return line.get("summary") is True or (
        isinstance(unparsed, str) and unparsed.startswith('{"summary":true')
    )


def salvage_counts(line: JsonLine, *keys: str) -> dict[str, int | None]:
    """Integer fields of a summary line; read from the text when the line arrived cut short (the
    counters come before the long lists, so they survive)."""
    out: dict[str, int | None] = {}
    text = line.get("unparsed")
    for key in keys:
        value = line.get(key)
        if isinstance(text, str):
            found = re.search(rf'"{key}":(\d+)', text)
            value = int(found.group(1)) if found else None
        out[key] = value if isinstance(value, int) else None
    return out


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class GapCounter(logging.Handler):
    """Counts the client's "gap ... filling from the bridge" notices: events the XPUB dropped (HWM)
    that the subscriber recovered from the replay buffer. Zero means every event arrived live."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.gaps = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "gap after seq" in record.getMessage():
            self.gaps += 1


async def zmq_echo_server(endpoint: str) -> None:
    """``--zmq-echo``: an asyncio ROUTER that sends every message straight back (the transport floor)."""
    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)
    print(orjson.dumps({"listening": endpoint}).decode(), flush=True)
    while True:
        await router.send_multipart(await router.recv_multipart())


def machine() -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "cpus": os.cpu_count(),
        "loadavg": loadavg(),
        "python": sys.version.split()[0],
        "node": node.strip(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
    }


async def start_roo_server(children: Children, sock: Path, *extra: str) -> Child:
    """``interop/roo_server.js`` on ``sock``, once it accepts connections."""
    server = await children.node("roo_server.js", "--socket", str(sock), *extra)
    await server.wait_for(lambda line: "listening" in line, NODE_WAIT)
    return server


async def stop_roo_server(server: Child) -> int:
    """SIGTERM makes the server print its summary and exit; returns its count of invalid frames."""
    server.signal(signal.SIGTERM)
    summary = await server.wait_for(is_summary, NODE_WAIT)
    await server.stop()
    invalid = salvage_counts(summary, "invalid")["invalid"]
    if invalid is None:
        raise RuntimeError(f"unreadable summary from roo_server.js: {str(summary)[:200]}")
    return invalid


async def count_frames(reader: asyncio.StreamReader, expected: int) -> tuple[int, float, float]:
    """Read until ``expected`` node-ipc frames (0x0C delimiters) went by, parsing nothing:
    ``(frames, time of the first chunk, time of the last)``."""
    frames, first, last = 0, 0.0, 0.0
    while frames < expected:
        chunk = await reader.read(1 << 20)
        if not chunk:
            raise RuntimeError(f"server closed after {frames} of {expected} frames")
        last = time.perf_counter()
        first = first or last
        frames += chunk.count(b"\x0c")
    return frames, first, last


class LoopStall:
    """The longest time this process's event loop went without running a ready task: a worker that
    stalls this long sends no heartbeats and answers nothing while it does."""

    TICK = 0.01

    def __init__(self) -> None:
        self.max = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.max = max(self.max, time.perf_counter() - before - self.TICK)


# ------------------------------------------------------------------------- process trees (Linux /proc)


def proc_children(pid: int) -> list[int]:
    """Direct children of a live process (every thread's ``children`` list); [] once it is gone."""
    children: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                children += [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return children
    return children


def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory_kb(pid: int, *, pss: bool = True) -> dict[str, int] | None:
    """``rss`` and ``hwm`` (peak RSS) from ``/proc/<pid>/status``, and ``pss`` (proportional set size:
    pages shared with other processes counted in proportion, so that a sum over processes is not
    inflated by the interpreter and libraries they share) from ``smaps_rollup``. None once the
    process is gone. Kernel threads and zombies have no Vm lines: 0."""
    out = {"rss": 0, "hwm": 0, "pss": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["hwm"] = int(line.split()[1])
        if pss:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        out["pss"] = int(line.split()[1])
                        break
    except (OSError, ValueError, IndexError):
        return None
    return out


def filesystem(path: Path) -> str:
    """Type and device of the mount holding ``path``: fsync costs ~0 on tmpfs, milliseconds on a disk."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    return f"{best[1]} on {best[2]}"
