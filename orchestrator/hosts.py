"""Extension hosts: where an attempt's Roo Code runs.

Launched hosts (simulator, vscode, command) get a fresh process per attempt, on its own socket in a
private directory, with ``ROO_CODE_IPC_SOCKET_PATH`` in its environment, and in its own process group
so that stopping it also stops whatever it spawned (VS Code's helpers, a CLI's children). Attached hosts
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipc_bridge.lifeline import preexec_die_with_parent

log = logging.getLogger(__name__)

SOCKET_ENV = "ROO_CODE_IPC_SOCKET_PATH"
SUN_PATH_MAX = 104  # macOS limit; Linux allows 107
STOP_GRACE = 5.0


class HostError(Exception):
    """A host could not be launched."""


@dataclass
class Host:
    """One extension host in use by one attempt."""

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


def socket_path_for(runtime_dir: Path, name: str) -> str:
    """A socket path in the private runtime dir, short enough for every platform's sun_path."""
    path = str(runtime_dir / f"{name}.sock")
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
) -> Host:
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
    return Host(socket_path=socket_path, workspace=workspace, process=proc, log_path=log_path)


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
