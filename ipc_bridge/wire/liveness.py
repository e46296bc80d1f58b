"""Application heartbeats in both directions (zmq-design rule 5b, the Paranoid Pirate pattern).

ZMTP heartbeats notice a dead or frozen connection, not a stuck event loop, so on top of them:

* a worker sends a ``heartbeat`` request whenever it sent nothing else for an interval (any request
  counts), and the bridge expires a worker session it has not heard from for ``liveness`` of that
  worker's intervals, detaching the slots the worker attached (:class:`PeerRegistry`);
* the bridge publishes ``hugz`` on ``bridge.`` every interval, and a worker that heard nothing at all
  (no reply, no event) for ``liveness`` hugz intervals declares the bridge lost (:class:`BridgeWatch`).

Both sides forgive the time during which they themselves did not run (:class:`Ticker`): a process that
was stopped or blocked heard nothing because it did not listen, not because its peer was silent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from ipc_bridge.client.types import BridgeLost

DEFAULT_INTERVAL = 1.0
"""Seconds between worker heartbeats, and between the bridge's hugz."""
DEFAULT_LIVENESS = 3
"""Intervals of silence after which a peer counts as gone."""
MIN_TICK = 0.02

T = TypeVar("T")


def positive_float(value: Any) -> float | None:
    """``value`` if it is a positive number (an optional protocol field), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


class Ticker:
    """Periodic wake-ups that also report how long the process overslept (it was stopped or its loop
    was blocked): that time must not count as the peer's silence."""

    def __init__(self) -> None:
        self._last: float | None = None

    async def sleep(self, tick: float) -> tuple[float, float]:
        """Sleep ``tick``; return ``(now, stall)``, stall being 0 unless the wake-up came a whole tick late."""
        loop = asyncio.get_running_loop()
        if self._last is None:
            self._last = loop.time()
        await asyncio.sleep(tick)
        now = loop.time()
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


# ----------------------------------------------------------------------------------- worker side


class BridgeWatch:
    """When the worker last heard the bridge, and whether it counts as lost. Create inside the loop."""

    def __init__(self, hugz_interval: float = DEFAULT_INTERVAL, liveness: int = DEFAULT_LIVENESS) -> None:
        loop = asyncio.get_running_loop()
        self.hugz_interval = hugz_interval
        self.liveness = liveness
        self.last_heard = loop.time()
        self._lost: asyncio.Future[BridgeLost] = loop.create_future()

    @property
    def window(self) -> float:
        return self.liveness * self.hugz_interval

    @property
    def lost(self) -> BridgeLost | None:
        return self._lost.result() if self._lost.done() else None

    def heard(self, now: float) -> bool:
        """Anything valid arrived. True when this ends a loss (the bridge is back)."""
        self.last_heard = max(self.last_heard, now)
        if not self._lost.done():
            return False
        self._lost = asyncio.get_running_loop().create_future()
        return True

    def credit(self, stall: float, now: float) -> None:
        self.last_heard = min(now, self.last_heard + stall)

    def check(self, now: float, session: str | None) -> BridgeLost | None:
        """The new :class:`BridgeLost` when the silence just exceeded the window, else None."""
        silent = now - self.last_heard
        if self._lost.done() or silent <= self.window:
            return None
        lost = BridgeLost(silent, self.window, session)
        self._lost.set_result(lost)
        return lost

    async def guard(self, aw: Awaitable[T], timeout: float | None) -> T:
        """``await aw``, but raise :class:`BridgeLost` as soon as (or if already) the bridge is lost,
        and :class:`asyncio.TimeoutError` after ``timeout``. ``aw`` is cancelled unless it finished."""
        lost = self._lost
        if lost.done():
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: close it so that no "never awaited" warning fires
            elif asyncio.isfuture(aw):
                aw.cancel()
            raise lost.result()
        task = asyncio.ensure_future(aw)
        either: set[asyncio.Future[Any]] = {task, lost}
        try:
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_consume)
        if task.done() and not task.cancelled():
            return task.result()
        if lost.done():
            raise lost.result()
        raise asyncio.TimeoutError


def _consume(task: asyncio.Future[Any]) -> None:
    # A task cancelled on our behalf may still have ended with an error; it is of no interest then.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
