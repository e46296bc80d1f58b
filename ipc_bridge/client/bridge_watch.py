"""The worker's side of the application heartbeats (:mod:`ipc_bridge.wire.liveness`): when the client last
heard the bridge, and the :class:`~ipc_bridge.client.types.BridgeLost` it raises once the bridge was silent
for ``liveness`` hugz intervals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from ipc_bridge.client.types import BridgeLost
from ipc_bridge.wire.liveness import DEFAULT_INTERVAL, DEFAULT_LIVENESS

T = TypeVar("T")


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
