"""Extension hosts: where an attempt's Roo Code runs.

Launched hosts (vscode, command, and simulator with ``process_per_host``) get a fresh process per attempt,
on its own socket in a private directory, with ``ROO_CODE_IPC_SOCKET_PATH`` in its environment, and in its
own process group so that stopping it also stops whatever it spawned (VS Code's helpers, a CLI's
children). Simulated hosts otherwise live in a :class:`SimulatorFarm` (one process per worker, started on
first use): a new Python process per attempt would cost more CPU than the attempt itself. Attached hosts
(socket) are already running; the orchestrator only leases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.lifeline import preexec_die_with_parent
from ipc_bridge.simulator.farm import FarmClient, FarmError

log = logging.getLogger(__name__)

SOCKET_ENV = "ROO_CODE_IPC_SOCKET_PATH"
SUN_PATH_MAX = 104  # macOS limit; Linux allows 107
STOP_GRACE = 5.0


class HostError(Exception):
    """A host could not be launched."""


class Host(ABC):
    """One extension host in use by one attempt."""

    socket_path: str
    workspace: Path

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The process serving the host (a farm's for a farmed host)."""

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    async def wait(self, timeout: float) -> bool:
        """Until the host ends by itself (after CloseTask, or a crash); False if it still runs."""

    @abstractmethod
    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """End the host (idempotent); its exit status, 0 for a clean end."""


@dataclass
class ProcessHost(Host):
    """A host in a process of its own."""

    socket_path: str
    workspace: Path
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait(self, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """End the host: SIGTERM its process group, SIGKILL after ``grace``. Idempotent.

        Needed even after CloseTask, because some hosts (the Roo CLI) ignore it (protocol 7.6)."""
        proc = self.process
        if proc is None or self._stopped:
            return proc.returncode if proc else None
        self._stopped = True
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("host pid %d ignored SIGTERM for %.1fs: killing", proc.pid, grace)
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:
            # The leader is gone; its group may not be (VS Code helpers).
            _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        return proc.returncode


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def socket_path_for(runtime_dir: str | Path, name: str) -> str:
    """A socket path in the private runtime dir, short enough for every platform's sun_path."""
    path = os.path.join(runtime_dir, f"{name}.sock")
    if len(path.encode()) >= SUN_PATH_MAX:
        raise HostError(
            f"socket path {path!r} is longer than {SUN_PATH_MAX - 1} bytes; use a shorter runtime dir"
        )
    return path


def fill_placeholders(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``{socket}``, ``{workspace}``, ``{slot}`` in a user's command line; other braces are left alone."""
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


async def launch(
    argv: Sequence[str],
    *,
    socket_path: str,
    workspace: Path,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> ProcessHost:
    """Start one host process in its own session with the socket path in its environment."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)  # a stale socket would make us attach to nothing
    full_env = {**os.environ, **(env or {}), SOCKET_ENV: socket_path}
    out = open(log_path, "ab") if log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(workspace),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            # A host outlives nothing of ours: not its worker, even one that was SIGKILLed.
            preexec_fn=preexec_die_with_parent(signal.SIGKILL),
        )
    except OSError as exc:
        raise HostError(f"cannot launch {argv[0]!r}: {exc.strerror or exc}") from exc
    finally:
        if not isinstance(out, int):
            out.close()
    log.debug("host pid %d on %s: %s", proc.pid, socket_path, " ".join(argv))
    return ProcessHost(socket_path=socket_path, workspace=workspace, process=proc, log_path=log_path)


def simulator_argv(
    *,
    engine: str | None = None,
    time_scale: float | None = None,
    status_delay: float | None = None,
    seed: int | None = None,
) -> list[str]:
    """The command line of a simulated host (the socket comes from the environment)."""
    argv = [sys.executable, "-m", "orchestrator", "simulate"]
    if engine:
        argv += ["--engine", engine]
    if time_scale is not None:
        argv += ["--time-scale", repr(time_scale)]
    if status_delay is not None:
        argv += ["--status-delay", repr(status_delay)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv


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

    async def wait(self, timeout: float) -> bool:
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
        self._process: asyncio.subprocess.Process | None = None
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

    async def _start(self) -> FarmClient:
        argv = [sys.executable, "-m", "orchestrator", "simulate", "--farm", self.control_path]
        err = open(self.log_path, "ab") if self.log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
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
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ready_timeout)
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
        if proc is None:
            return
        if proc.returncode is None and grace > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Stop the farm and every host in it; idempotent."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                await client.close()  # the farm stops once its last control connection is gone
            await self._reap(grace)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control_path)


def vscode_argv(code: str, workspace: Path, user_data_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """``code -n WORKSPACE`` as Roo's own runner launches it (protocol 4), one user-data-dir per host."""
    exe = shutil.which(code) or code
    return [
        exe,
        "--wait",
        "--disable-workspace-trust",
        "--disable-gpu",
        "--no-sandbox",
        "--password-store=basic",
        f"--user-data-dir={user_data_dir}",
        *extra,
        "-n",
        str(workspace),
    ]


def xvfb_wrap(argv: list[str], mode: str) -> list[str]:
    """Wrap in ``xvfb-run -a`` when there is no display (``auto``), always (``on``) or never (``off``)."""
    want = mode == "on" or (mode == "auto" and not os.environ.get("DISPLAY"))
    if not want:
        return argv
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise HostError("no DISPLAY and xvfb-run is not installed (apt-get install xvfb), or set xvfb: off")
    return [xvfb, "-a", *argv]
