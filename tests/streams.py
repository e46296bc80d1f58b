"""Following a slot's event stream in the background, for tests that wait on what arrived."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import Event


class Collector:
    """Runs ``client.events(slot, since_seq)`` in the background; tests await conditions on it."""

    def __init__(self, client: BridgeClient, slot: str, since_seq: int | None = 0) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.ensure_future(self._run(client, slot, since_seq))

    async def _run(self, client: BridgeClient, slot: str, since_seq: int | None) -> None:
        try:
            async for event in client.events(slot, since_seq):
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except Exception as exc:
            async with self._changed:
                self.error = exc
                self._changed.notify_all()

    async def wait(self, predicate: Callable[[Event], bool], timeout: float = 10) -> Event:
        def found() -> Event | None:
            # Events that came before the error still count: a stream ends with BridgeLost once the
            # bridge it followed has stopped.
            event = next((e for e in self.events if predicate(e)), None)
            if event is None and self.error is not None:
                raise self.error
            return event

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        event = found()
        assert event is not None
        return event

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
