"""Application heartbeats in both directions (zmq-design rule 5b, the Paranoid Pirate pattern).

ZMTP heartbeats notice a dead or frozen connection, not a stuck event loop, so on top of them:

* a worker sends a ``heartbeat`` request whenever it sent nothing else for an interval (any request
  counts), and the bridge expires a worker session it has not heard from for ``liveness`` of that
  worker's intervals, detaching the slots the worker attached (:class:`PeerRegistry`);
* the bridge publishes ``hugz`` on ``bridge.`` every interval, and a worker that heard nothing at all
  (no reply, no event) for ``liveness`` hugz intervals declares the bridge lost
  (:class:`ipc_bridge.client.bridge_watch.BridgeWatch`, on the client's side with its errors).

Both sides forgive the time during which they themselves did not run (:class:`Ticker`): a process that
was stopped or blocked heard nothing because it did not listen, not because its peer was silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 1.0
"""Seconds between worker heartbeats, and between the bridge's hugz."""
DEFAULT_LIVENESS = 3
"""Intervals of silence after which a peer counts as gone."""
MIN_TICK = 0.02


def positive_float(value: Any) -> float | None:
    """``value`` if it is a positive number (an optional protocol field), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


class Ticker:
    """Periodic wake-ups that also report how long the process overslept (it was stopped or its loop
    was blocked): that time must not count as the peer's silence."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        """The loop's clock unless one is given (tests drive their own)."""
        self._last: float | None = None

    async def sleep(self, tick: float) -> tuple[float, float]:
        """Sleep ``tick``; return ``(now, stall)``, stall being 0 unless the wake-up came a whole tick late."""
        clock = self._clock or asyncio.get_running_loop().time
        if self._last is None:
            self._last = clock()
        await asyncio.sleep(tick)
        now = clock()
        late = now - self._last - tick
        self._last = now
        return now, late if late > tick else 0.0


# ----------------------------------------------------------------------------------- bridge side


@dataclass
class Peer:
    """A worker session (``header.session``) the bridge has heard from."""

    session: str
    last_seen: float
    interval: float
    """The worker's heartbeat interval, as its ``heartbeat`` requests announce it."""


class PeerRegistry:
    """When the bridge last heard each worker session. Which slots a session owns is kept on the slots."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, liveness: int = DEFAULT_LIVENESS) -> None:
        self.interval = interval
        """Assumed for sessions that have not announced their own."""
        self.liveness = liveness
        self.peers: dict[str, Peer] = {}

    def seen(self, session: str, now: float) -> Peer:
        peer = self.peers.get(session)
        if peer is None:
            peer = self.peers[session] = Peer(session, now, self.interval)
        else:
            peer.last_seen = max(peer.last_seen, now)
        return peer

    def announce(self, session: str, interval: Any, now: float) -> None:
        """A heartbeat's ``interval`` field: the sender's own period (ignored unless a positive number)."""
        value = positive_float(interval)
        if value is not None:
            self.seen(session, now).interval = value

    def __contains__(self, session: object) -> bool:
        return session in self.peers

    def timeout(self, peer: Peer) -> float:
        return self.liveness * peer.interval

    def tick(self) -> float:
        """How often to check: a quarter of the shortest interval, so expiry is at most 25 % late."""
        shortest = min((p.interval for p in self.peers.values()), default=self.interval)
        return max(MIN_TICK, min(shortest, self.interval) / 4)

    def credit(self, stall: float, now: float) -> None:
        """The bridge did not run for ``stall`` seconds: nobody could be heard meanwhile."""
        for peer in self.peers.values():
            peer.last_seen = min(now, peer.last_seen + stall)

    def expire(self, now: float) -> list[Peer]:
        """Forget and return the sessions silent for longer than their timeout."""
        gone = [p for p in self.peers.values() if now - p.last_seen > self.timeout(p)]
        for peer in gone:
            del self.peers[peer.session]
        return gone
