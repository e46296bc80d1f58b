"""Keeps a run's bridge alive: a bridge that dies is started again on the same endpoints and key.

Workers need no new address: their DEALER and SUB sockets reconnect to the same ipc paths by
themselves, and because the key is the same they can verify the new bridge's messages and see its new
session id. That is how they learn of the restart (``BridgeRestarted``): every attempt that was following
a task on the old bridge ends as ``infra_error`` ("lost the event stream") and is retried, never counted
as passed or failed on events that were lost with the old bridge's buffers.

A bridge that keeps dying is a bug, not bad luck: more than ``max_restarts`` deaths within ``window``
seconds stop the run (:class:`BridgeFailed`).
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path

from ipc_bridge.server.launcher import BridgeProcess, BridgeStartError, start_bridge_process
from orchestrator.processes.child_env import service_env

log = logging.getLogger(__name__)


class BridgeFailed(RuntimeError):
    """The bridge died too often, or could not be started again."""


class BridgeSupervisor:
    def __init__(
        self,
        runtime_dir: Path,
        log_path: Path,
        *,
        max_restarts: int = 10,
        window: float = 60.0,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        """``secrets``: what the bridge's log must never show (the suite's secret values)."""
        self.runtime_dir = runtime_dir
        self.secrets = secrets
        self.log_path = log_path
        self.max_restarts = max_restarts
        self.window = window
        self.restarts = 0
        self._deaths: collections.deque[float] = collections.deque()
        self._bridge: BridgeProcess | None = None

    @property
    def bridge(self) -> BridgeProcess:
        if self._bridge is None:
            raise RuntimeError("the bridge was not started")
        return self._bridge

    def bridge_pid(self) -> int | None:
        """The running bridge's pid (None before it started)."""
        return self._bridge.pid if self._bridge is not None else None

    @property
    def connection_file(self) -> Path:
        return self.bridge.connection_file

    def start(self) -> BridgeProcess:
        key = self._bridge.key if self._bridge is not None else None
        # The bridge's log goes next to the results (not over the progress bar), redacted by the
        # bridge itself: a StartNewTask it relays, or a host's bad message it quotes, may hold a secret.
        with open(self.log_path, "ab") as bridge_log:
            self._bridge = start_bridge_process(
                self.runtime_dir, key=key, stderr=bridge_log, env=service_env(), secrets=self.secrets
            )
        return self._bridge

    def check(self) -> bool:
        """Restart the bridge if it died; True when it did. Raises :class:`BridgeFailed`."""
        old = self._bridge
        if old is None or old.alive():
            return False
        why = f"exit code {old.process.returncode}"
        old.kill()  # reap it and remove its socket and connection files before a successor binds
        while True:
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > self.window:
                self._deaths.popleft()
            if len(self._deaths) > self.max_restarts:
                raise BridgeFailed(
                    f"the bridge died {len(self._deaths)} times within {self.window:.0f}s (last: {why}); "
                    "see bridge.log in the run directory"
                )
            log.error("the bridge died (%s); restarting it with the same key", why)
            try:
                self.start()
            except (BridgeStartError, OSError) as exc:
                # A successor that dies while it starts (OOM killer, a signal) is one more death, not
                # the end of the run: the limit above decides that.
                why = f"its restart failed: {exc}"
                continue
            self.restarts += 1
            return True

    def stop(self, *, kill: bool = False) -> None:
        if self._bridge is None:
            return
        if kill:
            self._bridge.kill()
        else:
            self._bridge.stop()
