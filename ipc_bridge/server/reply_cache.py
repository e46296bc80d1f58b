"""At-most-once execution of requests that a client may send more than once.

Clients retry a request that got no reply in time (Lazy Pirate) with the same ``msg_id``. A retry of a
request still running waits for the first one's reply; a retry of a finished one gets the stored reply,
for the request types whose effect must not be repeated (StartNewTask is not idempotent). Reads are not
stored: answering them afresh is correct and keeps the cache small.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReplyCache(Generic[T]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}
        self._done: OrderedDict[Hashable, T] = OrderedDict()

    async def once(self, key: Hashable, keep: bool, execute: Callable[[], Awaitable[T]]) -> T:
        """The reply to request ``key``: ``execute()``'s result, computed once per key. ``keep`` stores
        it for later retries (the ``size`` most recent kept replies are remembered)."""
        if key in self._done:
            return self._done[key]
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await execute()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: a retry that never comes must not log "never retrieved"
            raise
        finally:
            del self._inflight[key]
        fut.set_result(result)
        if keep:
            self._done[key] = result
            if len(self._done) > self.size:
                self._done.popitem(last=False)
        return result
