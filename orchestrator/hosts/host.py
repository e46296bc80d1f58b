"""What an extension host is to an attempt, whatever its kind, and where one attempt's host is placed.

Launched hosts (vscode, command, and simulator with ``process_per_host``) get a fresh process per attempt
(:mod:`orchestrator.hosts.process`); simulated hosts otherwise live in a worker's simulator farm
(:mod:`orchestrator.hosts.farm`); attached hosts (socket) are already running, the orchestrator only leases
them. Which provider does what for a target: :mod:`orchestrator.hosts.provider`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from orchestrator.suite.plan import AttemptKey

SUN_PATH_MAX = 104  # macOS limit; Linux allows 107
STOP_GRACE = 5.0


class HostError(Exception):
    """A host could not be launched."""


class HostExited(HostError):
    """A host ended by itself before it listened on its socket; the message says how."""


class Host(ABC):
    """One extension host in use by one attempt."""

    socket_path: str
    workspace: Path
    log_path: Path | None = None
    """Its own output (stdout and stderr), when it has a log of its own."""
    killed: list[str] = []  # never mutated: a stop assigns a list of its own
    """What its stop had to end besides the host's own process (``code (pid 123)``): processes it left
    behind, detached ones included (see :mod:`orchestrator.hosts.marks`)."""

    async def hand_off(self) -> bool:
        """Called when the host's process ended before it listened: whether that was a launcher handing
        the host over to processes it started (they are the host from now on)."""
        return False

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The process serving the host (a farm's for a farmed host)."""

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @property
    @abstractmethod
    def ended_by_itself(self) -> str | None:
        """How the host ended before it was stopped (``exited with code 1``, ``killed by SIGSEGV``);
        None while it runs, or when the orchestrator ended it."""

    @abstractmethod
    async def wait(self, timeout: float | None) -> bool:
        """Until the host ends by itself (after CloseTask, or a crash); False if it still runs after
        ``timeout`` (None: no limit)."""

    @abstractmethod
    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """End the host (idempotent); its exit status, 0 for a clean end."""

    @abstractmethod
    async def kill(self) -> None:
        """End a host that no longer answers at once, without asking it first (idempotent)."""


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a host's whole process group (it leads one: launched in a session of its own)."""
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


@dataclass(frozen=True)
class HostPlace:
    """Where one attempt's host goes and what it is given (plain data: a provider decides the rest)."""

    slot: str
    """The attempt's slot (``w<worker>-<n>``): names its socket, log and private directories."""
    workspace: Path
    runtime_dir: Path
    """The run's private runtime directory: sockets and private TMPDIRs, short enough for sun_path."""
    work_dir: Path
    """Where a host's own files go while the run lasts (its log, a VS Code user-data-dir)."""
    key: AttemptKey
    number: int
    """The try number (1 for the first): with ``key``, what a simulated host's seed derives from."""
    leased: str | None = None
    """The socket a socket target's job leased (the scheduler hands them out)."""

    @property
    def socket_path(self) -> str:
        """The socket a launched host listens on."""
        return socket_path_for(self.runtime_dir, self.slot)

    @property
    def log_path(self) -> Path:
        """A launched host's stdout and stderr, while it runs."""
        return self.work_dir / f"{self.slot}.host.log"

    @property
    def tmpdir(self) -> Path:
        """A launched host's private TMPDIR (created at launch, removed with the host)."""
        return self.runtime_dir / f"{self.slot}.tmp"
