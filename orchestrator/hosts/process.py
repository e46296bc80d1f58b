"""A launched extension host: one process per attempt (vscode, command, simulator with
``process_per_host``).

Each host runs in a session of its own, so that stopping it also stops whatever it spawned (VS Code's
helpers, a CLI's children), on its own socket, named in its environment under every name a host reads
(``ROO_CODE_IPC_SOCKET_PATH``, and Kilo Code's ``KILO_IPC_SOCKET_PATH``, which it reads first). It gets:

- a stdin that stays open for its whole life: a pipe whose write end the orchestrator holds and closes
  when it stops the host. The Roo CLI in ``--stdin-prompt-stream`` mode exits ~4 s after stdin reaches
  EOF, so /dev/null would end it at once;
- a private ``TMPDIR`` (0700, inside the run's private runtime directory), removed with the host: the
  CLI's ``--ephemeral`` creates a directory there on every start that a terminated CLI leaves behind;
- a log of its stdout and stderr, in the runtime directory while it runs, then kept (redacted) in the
  results, whose tail says why a host that died did;
- its mark (:mod:`orchestrator.hosts.marks`): stopping it ends every process that carries it, those that
  left its session (VS Code's Electron, started detached by ``code``) included, and says which.

A launcher that exits 0 once it has started a detached host (``code`` without ``--wait``) hands the host
over: the host is then what its marked processes are, not the launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ipc_bridge.lifeline import preexec_die_with_parent
from orchestrator.hosts import marks as host_marks
from orchestrator.hosts import owned
from orchestrator.hosts.host import STOP_GRACE, Host, HostError, HostPlace, signal_group
from orchestrator.processes.child_env import service_env

log = logging.getLogger(__name__)

SOCKET_ENVS = ("ROO_CODE_IPC_SOCKET_PATH", "KILO_IPC_SOCKET_PATH")
"""Where Roo Code and its forks read the socket path of their IPC server."""
TMP_ENVS = ("TMPDIR", "TMP", "TEMP")


def describe_exit(code: int) -> str:
    """``exited with code 1``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class ProcessHost(Host):
    """A host in a process of its own."""

    socket_path: str
    workspace: Path
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    tmpdir: Path | None = None
    """Its private TMPDIR, removed when it is stopped."""
    stdin: int | None = None
    """The write end of its stdin, held open until it is stopped."""
    killed: list[str] = field(default_factory=list)
    """What its stop had to end besides its own process (:func:`host_marks.end_marked`)."""
    handed_off: bool = False
    """Its launcher exited 0 leaving processes of its own: they are the host now."""
    watch: owned.Watch | None = None
    """Its processes as they appear, recorded for the next run (:mod:`orchestrator.hosts.owned`)."""
    _watching: asyncio.Task[None] | None = field(default=None, repr=False)
    _gone: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when its launcher has exited and a scan finds no process of it left."""
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def ended_by_itself(self) -> str | None:
        if self._stopped or self.process is None or self.process.returncode is None:
            return None
        if self.handed_off:
            return "was handed over by its launcher and ended" if self._gone.is_set() else None
        return describe_exit(self.process.returncode)

    def start_watching(self) -> None:
        """Look for its processes until it is stopped (each scan in a thread)."""
        if self.watch is not None and self.process is not None and self._watching is None:
            self._watching = asyncio.ensure_future(self._watch(self.watch, self.process))

    async def _watch(self, watch: owned.Watch, launcher: asyncio.subprocess.Process) -> None:
        exited: float | None = None
        while True:
            if exited is None and launcher.returncode is not None:
                exited = time.monotonic()  # from now on, only a pass made after its exit decides
            try:
                live = await asyncio.to_thread(partial(watch.scan, after=exited or 0.0))
            except OSError as exc:  # /proc unreadable: the marks still find what carries them
                log.warning("cannot look for the processes of host pid %d: %s", launcher.pid, exc)
                return
            if exited is not None and not set(live) - {launcher.pid}:
                self._gone.set()
                return
            await asyncio.sleep(owned.SCAN_INTERVAL)

    async def wait(self, timeout: float | None) -> bool:
        """Until the launcher has exited and, for a handed-off host, every process of it has."""
        if self.process is None:
            return True
        try:
            await asyncio.wait_for(self._ended(self.process), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _ended(self, launcher: asyncio.subprocess.Process) -> None:
        await launcher.wait()
        if self.handed_off:
            await self._gone.wait()

    async def hand_off(self) -> bool:
        """Whether the launcher, having exited 0, left processes that are the host now (and if so,
        from now on the host is them: :meth:`wait` waits for them, and their end is noticed within
        about a second)."""
        proc, watch = self.process, self.watch
        if proc is None or watch is None or proc.returncode != 0 or self._stopped:
            return False
        live = await asyncio.to_thread(partial(watch.scan, after=time.monotonic()))
        self.handed_off = bool(set(live) - {proc.pid})
        return self.handed_off

    async def _stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """End the host: SIGTERM its process group, SIGKILL after ``grace``. Idempotent.

        Needed even after CloseTask, because some hosts (the Roo CLI) ignore it (protocol 7.6)."""
        proc = self.process
        if proc is None or self._stopped:
            return proc.returncode if proc else None
        self._stopped = True
        await self._stop_watching()
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("host pid %d ignored SIGTERM for %.1fs: killing", proc.pid, grace)
                signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        else:
            # The leader is gone; its group may not be (VS Code helpers).
            signal_group(proc.pid, signal.SIGKILL)
        await self._end_marked(grace)
        await self._release()
        return proc.returncode

    async def kill(self) -> None:
        """SIGKILL the process group: a stopped (SIGSTOP) or wedged host would sit out any SIGTERM."""
        proc = self.process
        if proc is None or self._stopped:
            return
        self._stopped = True
        await self._stop_watching()
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        await self._end_marked(0.0)
        await self._release()

    async def _end_marked(self, grace: float) -> None:
        """End what the host started outside its process group (and its group's stragglers): every
        process left with its mark. A handed-off host gets the ``grace`` its launcher got."""
        assert self.process is not None
        self.killed = await asyncio.to_thread(
            host_marks.end_marked,
            host_marks.of_host(self.socket_path),
            grace=grace if self.handed_off else min(grace, 1.0),
            exclude=self.process.pid,
        )

    async def _release(self) -> None:
        """What the host held: its stdin, its socket, its TMPDIR."""
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if self.watch is not None:
            self.watch.forget()  # all it recorded has been ended
        if self.tmpdir is not None:
            await asyncio.to_thread(shutil.rmtree, self.tmpdir, ignore_errors=True)


async def launch(
    argv: Sequence[str],
    *,
    socket_path: str,
    workspace: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    tmpdir: Path | None = None,
) -> ProcessHost:
    """Start one host process in its own session with the socket path in its environment, its output
    appended to ``log_path``, and ``tmpdir`` (created here, 0700) as its TMPDIR. The suite's ``env``
    may set TMPDIR itself."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)  # a stale socket would make us attach to nothing
    private: dict[str, str] = {}
    if tmpdir is not None:
        os.mkdir(tmpdir, 0o700)
        os.chmod(tmpdir, 0o700)  # whatever the umask
        private = dict.fromkeys(TMP_ENVS, str(tmpdir))
    full_env = {
        **service_env(),
        **private,
        **(env or {}),
        **dict.fromkeys(SOCKET_ENVS, socket_path),
        host_marks.MARK_ENV: socket_path,
    }
    owned.adopt_orphans()  # before its first host: what hosts start stays below this process
    out = open(log_path, "ab") if log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
    stdin_r, stdin_w = os.pipe()  # both close-on-exec: no other child inherits the write end
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd or workspace),
            env=full_env,
            stdin=stdin_r,
            stdout=out,
            stderr=out,
            start_new_session=True,
            # A host outlives nothing of ours: not its worker, even one that was SIGKILLed.
            preexec_fn=preexec_die_with_parent(signal.SIGKILL),
        )
    except OSError as exc:
        os.close(stdin_w)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise HostError(f"cannot launch {argv[0]!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(stdin_r)
        if not isinstance(out, int):
            out.close()
    log.debug("host pid %d on %s: %s", proc.pid, socket_path, " ".join(argv))
    host = ProcessHost(
        socket_path=socket_path,
        workspace=workspace,
        process=proc,
        log_path=log_path,
        tmpdir=tmpdir,
        stdin=stdin_w,
        watch=owned.Watch(socket_path, proc.pid, host_marks.mark_of),
    )
    host.start_watching()
    return host


@dataclass(frozen=True)
class LaunchCommand:
    """How a provider launches one host: its command line, and what it adds to its environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    """Where the host starts; the attempt's workspace unless the suite says otherwise."""


async def launch_at(place: HostPlace, command: LaunchCommand) -> ProcessHost:
    """:func:`launch` ``command`` as one attempt's host: on its own socket, in its workspace, with its log
    and its private TMPDIR where ``place`` puts them."""
    return await launch(
        command.argv,
        socket_path=place.socket_path,
        workspace=place.workspace,
        env=command.env,
        cwd=command.cwd,
        log_path=place.log_path,
        tmpdir=place.tmpdir,
    )
