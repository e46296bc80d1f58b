"""A worker's simulator farm: the one process that serves every simulated host of the worker (a new
Python process per attempt would cost more CPU than the attempt itself), and the hosts it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.lifeline import preexec_die_with_parent, set_process_name
from ipc_bridge.simulator.farm import FarmClient, FarmError
from orchestrator.hosts.host import STOP_GRACE, Host, HostError, signal_group
from orchestrator.processes.child_env import service_env

log = logging.getLogger(__name__)

FORKED_FARM_NAME = "orc-sim-farm"
"""The process name (``/proc/PID/comm``, what ``ps`` and ``top`` show) of a farm :meth:`SimulatorFarm.prefork`
started: its command line is its worker's."""


class FarmHost(Host):
    """A simulated host served by a :class:`SimulatorFarm`; it ends without taking the farm along."""

    def __init__(
        self, socket_path: str, workspace: Path, farm: SimulatorFarm, ended: asyncio.Future[bool]
    ) -> None:
        self.socket_path = socket_path
        self.workspace = workspace
        self.farm = farm
        self._ended = ended
        self._stopped = False

    def __repr__(self) -> str:
        return f"FarmHost({self.socket_path!r}, farm pid {self.pid}, alive={self.alive})"

    @property
    def pid(self) -> int | None:
        return self.farm.pid

    @property
    def alive(self) -> bool:
        return not self._ended.done()

    @property
    def ended_by_itself(self) -> str | None:
        if self._stopped or not self._ended.done():
            return None
        return "crashed in its simulator farm" if self._ended.result() else "exited"

    async def wait(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Close the host in its farm, and kill it there if that takes longer than ``grace``."""
        if not self._stopped:
            self._stopped = True
            if self.alive:
                try:
                    await self.farm.request("close", grace, socket=self.socket_path)
                except (FarmError, asyncio.TimeoutError):
                    log.warning(
                        "farmed host on %s did not close within %.1fs: killing", self.socket_path, grace
                    )
                    with contextlib.suppress(FarmError, asyncio.TimeoutError):
                        await self.farm.request("kill", grace, socket=self.socket_path)
                await self.wait(grace)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        if not self._ended.done():
            return None
        return 1 if self._ended.result() else 0

    async def kill(self) -> None:
        if not self._stopped:
            self._stopped = True
            if self.alive:
                with contextlib.suppress(FarmError, asyncio.TimeoutError):
                    await self.farm.request("kill", STOP_GRACE, socket=self.socket_path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)


class SimulatorFarm:
    """A worker's simulator farm process, started on first use (and again if it died).

    Start it from the worker's main thread (the event loop's): the farm's lifeline is tied to the thread
    that forks it. It stops when :meth:`close` drops its control connection, or when the worker exits
    (the connection closes with it; a SIGKILLed worker takes it along through ``PR_SET_PDEATHSIG``).
    """

    def __init__(
        self, control_path: str, *, log_path: Path | None = None, ready_timeout: float = 30.0
    ) -> None:
        self.control_path = control_path
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.starts = 0
        self._process: asyncio.subprocess.Process | _ForkedProcess | None = None
        self._forked: tuple[int, int] | None = None
        """(pid, read end of its ready pipe) of a farm :meth:`prefork` started, not yet adopted."""
        self._ready_pipe: asyncio.BaseTransport | None = None
        self._client: FarmClient | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._client is not None and self._client.connected

    async def start(self) -> bool:
        """Start the farm ahead of its first host; False (logged) if it did not come up, which the
        first :meth:`host` then reports."""
        try:
            await self._ensure()
        except HostError as exc:
            log.warning("%s", exc)
            return False
        return True

    async def host(
        self, socket_path: str, workspace: Path, *, timeout: float = 30.0, **params: Any
    ) -> FarmHost:
        """Open a host on ``socket_path``; returns once it listens. ``params``: see ``open`` in
        :mod:`ipc_bridge.simulator.farm`."""
        client = await self._ensure()
        try:
            ended = await client.open(socket_path, workspace, timeout=timeout, **params)
        except (FarmError, asyncio.TimeoutError) as exc:
            raise HostError(f"the simulator farm could not open {socket_path}: {exc}") from exc
        return FarmHost(socket_path, workspace, self, ended)

    async def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        if self._client is None:
            raise FarmError("the farm is not running")
        return await self._client.request(op, timeout, **fields)

    async def _ensure(self) -> FarmClient:
        async with self._lock:
            if self._client is not None and self._client.connected:
                return self._client
            if self._client is not None:
                await self._client.close()  # the farm died: every host it had is gone already
            await self._reap()
            self._client = await self._start()
            return self._client

    def prefork(self) -> bool:
        """Start the farm now by forking this process, to be adopted by the first :meth:`host` or
        :meth:`start`: the child has the simulator imported already, and serves without an interpreter
        start-up and ~250 ms of imports, which a run's start-up would otherwise wait for.

        Only from a process with no other thread, no event loop and no ZMQ context yet (a worker before
        its loop starts), and only on Linux (the child is watched through a pidfd). Returns whether it
        forked; if not, the farm starts as usual when first needed."""
        if self._forked is not None or self._process is not None or not hasattr(os, "pidfd_open"):
            return False
        if threading.active_count() > 1:
            return False  # a lock held by another thread would stay held in the child
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return False  # the child could not start a loop of its own
        from ipc_bridge.simulator.cli import run_farm  # imported before the fork: the child needs it

        lifeline = preexec_die_with_parent(signal.SIGKILL)  # resolved here, not in the child
        err = os.open(self.log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its behaviour is what the tests check
            code = 1
            try:
                os.setsid()  # a terminal's Ctrl-C is for the orchestrator, as with start_new_session
                if lifeline is not None:
                    lifeline()
                set_process_name(FORKED_FARM_NAME)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(ready_w, 1)
                os.dup2(err, 2)
                code = run_farm(self.control_path)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(err)
        self._forked = (pid, ready_r)
        log.debug("simulator farm forked: pid %d on %s", pid, self.control_path)
        return True

    async def _adopt(self) -> tuple[_ForkedProcess, asyncio.StreamReader]:
        assert self._forked is not None
        (pid, ready_r), self._forked = self._forked, None
        proc = _ForkedProcess(pid)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        self._ready_pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ready_r, "rb", buffering=0)
        )
        return proc, reader

    async def _start(self) -> FarmClient:
        if self._forked is not None:
            forked, ready = await self._adopt()
            self._process = forked
            self.starts += 1
            return await self._connect(ready)
        argv = [sys.executable, "-m", "orchestrator", "simulate", "--farm", self.control_path]
        err = open(self.log_path, "ab") if self.log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=service_env(),
                start_new_session=True,  # a terminal's Ctrl-C is for the orchestrator to handle, not the hosts
                preexec_fn=preexec_die_with_parent(signal.SIGKILL),
            )
        except OSError as exc:
            raise HostError(f"cannot launch the simulator farm: {exc.strerror or exc}") from exc
        finally:
            if not isinstance(err, int):
                err.close()
        self._process = proc
        self.starts += 1
        assert proc.stdout is not None
        return await self._connect(proc.stdout)

    async def _connect(self, stdout: asyncio.StreamReader) -> FarmClient:
        """Wait for the farm's ready line, then connect to its control socket."""
        try:
            line = await asyncio.wait_for(stdout.readline(), self.ready_timeout)
            if not line or not orjson.loads(line).get("ready"):
                raise HostError(f"the simulator farm exited before it was ready (see {self.log_path})")
            return await FarmClient.connect(self.control_path)
        except (asyncio.TimeoutError, FarmError, ValueError) as exc:
            await self._reap()
            raise HostError(f"the simulator farm did not come up: {exc or 'timeout'}") from exc
        except BaseException:
            await self._reap()
            raise

    async def _reap(self, grace: float = 0.0) -> None:
        proc, self._process = self._process, None
        if self._ready_pipe is not None:
            self._ready_pipe.close()
            self._ready_pipe = None
        if proc is None:
            return
        if proc.returncode is None and grace > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Stop the farm and every host in it; idempotent."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                await client.close()  # the farm stops once its last control connection is gone
            if self._forked is not None:  # forked, never used: it goes too
                (pid, ready_r), self._forked = self._forked, None
                os.close(ready_r)
                self._process = _ForkedProcess(pid)
            await self._reap(grace)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control_path)


class _ForkedProcess:
    """What :class:`SimulatorFarm` uses of an ``asyncio.subprocess.Process``, for a child it forked
    itself: its exit is seen through a pidfd, and it is reaped here (asyncio's child watcher only
    waits for the processes asyncio started)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._fd = os.pidfd_open(pid)
        self._loop.add_reader(self._fd, self._reap)

    def _reap(self) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)
