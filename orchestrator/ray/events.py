"""The live event stream of a Ray run: every node's bridge events, forwarded to one hub on the driver.

A local run has one bridge, and a subscriber connects to it. A Ray run has one bridge per node, on that
node (the node-ipc sockets never cross machines), so each node actor tees the events its attempts
consume (:class:`ForwardingClient`: the exact, gap-free, seq-ordered stream of
:meth:`BridgeClient.events`) into batches, and a :class:`Forwarder` sends the batches one at a time to
the run's :class:`EventHub`, an actor pinned to the driver's node. Sending one batch at a time keeps each
node's order; per-slot ``seq`` numbers stay the bridge's own, and slot names are unique in a run.

The hub also writes the run's live transcripts, which the nodes send it (:mod:`orchestrator.ray.live`):
it runs on the driver's machine, where the results directory is.

One subscriber reads the hub, from the driver process (:meth:`RayPool.events`) or any other process
connected to the cluster (:meth:`EventFeed.attach` with the run id). The hub keeps up to ``capacity``
unread events and counts what it had to drop, so a run with nobody listening costs bounded memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import Event
from orchestrator.ray.live import write_live

log = logging.getLogger(__name__)

NAMESPACE = "orchestrate"
HUB_CAPACITY = 200_000
BATCH_MAX = 2_000


def hub_name(run_id: str) -> str:
    """The hub's actor name (in namespace :data:`NAMESPACE`)."""
    return f"events-{run_id}"


def event_record(node: str, event: Event) -> dict[str, Any]:
    """One forwarded event: where it happened, its bridge seq, and its content as sent on the wire."""
    return {
        "node": node,
        "slot": event.slot,
        "seq": event.seq,
        "msg_type": event.msg_type,
        "task_id": event.task_id,
        "content": event.content.model_dump(mode="json"),
    }


class EventHub:
    """The driver-side buffer (a Ray async actor: see :func:`orchestrator.ray.pool.RayPool`)."""

    def __init__(self, capacity: int = HUB_CAPACITY, live_dir: str = "") -> None:
        self._live = Path(live_dir) if live_dir else None
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._capacity = capacity
        self._dropped = 0
        self._received = 0
        self._arrived = asyncio.Event()
        self._emptied = asyncio.Event()
        self._subscribed = False

    async def put(self, batch: list[dict[str, Any]]) -> None:
        self._events.extend(batch)
        self._received += len(batch)
        excess = len(self._events) - self._capacity
        if excess > 0:
            # Oldest first: a late subscriber wants the current state of the run more than its start.
            for _ in range(excess):
                self._events.popleft()
            self._dropped += excess
        self._arrived.set()

    async def get(self, max_items: int, timeout: float) -> tuple[list[dict[str, Any]], int]:
        """Up to ``max_items`` events (waiting up to ``timeout`` for the first), and how many were
        dropped so far for lack of a reader."""
        if not self._events:
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        self._subscribed = True
        out = [self._events.popleft() for _ in range(min(max_items, len(self._events)))]
        if not self._events:
            self._emptied.set()
        return out, self._dropped

    async def drain(self, timeout: float) -> bool:
        """Wait until a subscriber (if there is one) has read everything; False on timeout."""
        if not self._subscribed or not self._events:
            return True
        self._emptied.clear()
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def write_live(self, batch: list[tuple[str, bytes]]) -> None:
        """Append the nodes' live transcript chunks to their files (none when the run has no directory)."""
        if self._live is not None:
            write_live(self._live, batch)

    async def stats(self) -> dict[str, int]:
        return {"received": self._received, "buffered": len(self._events), "dropped": self._dropped}


class EventFeed:
    """The one subscriber of a run's events (Ray must be initialized and connected to the run's cluster)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self.dropped = 0

    @classmethod
    def attach(cls, run_id: str) -> EventFeed:
        """The feed of run ``run_id``, which must be running (raises ``ValueError`` otherwise)."""
        import ray

        return cls(ray.get_actor(hub_name(run_id), namespace=NAMESPACE))

    def get(self, timeout: float = 1.0, max_items: int = 10_000) -> list[dict[str, Any]]:
        """The next events, oldest first: waits up to ``timeout`` for the first one; [] if none came."""
        import ray

        events, self.dropped = ray.get(self._hub.get.remote(max_items, timeout), timeout=timeout + 30)
        return list(events)

    def stats(self) -> dict[str, int]:
        import ray

        return dict(ray.get(self._hub.stats.remote(), timeout=30))


class ForwardingClient(BridgeClient):
    """A bridge client whose event streams also go to ``sink``: what the attempt runner reads is exactly
    what the driver's subscriber gets (same order, same seq numbers, no gaps)."""

    sink: Callable[[Event], None] | None = None

    def events(self, slot: str, since_seq: int | None = None) -> AsyncGenerator[Event, None]:
        return self._tee(super().events(slot, since_seq))

    async def _tee(self, stream: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if self.sink is not None:
                    self.sink(event)
                yield event


class Forwarder:
    """Batches a node's events and sends them to the hub, one batch in flight at a time (order kept)."""

    def __init__(self, hub: Any, node: str) -> None:
        self._hub = hub
        self._node = node
        self._buffer: list[dict[str, Any]] = []
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.ensure_future(self._send_loop())

    def __call__(self, event: Event) -> None:
        self._buffer.append(event_record(self._node, event))
        self._ready.set()

    async def _send_loop(self) -> None:
        while not (self._closing and not self._buffer):
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch, self._buffer = self._buffer[:BATCH_MAX], self._buffer[BATCH_MAX:]
                try:
                    await self._hub.put.remote(batch)
                except Exception as exc:
                    # The driver is gone or going: the events have nobody to go to.
                    log.warning("cannot forward %d events to the driver: %s", len(batch), exc)

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is buffered, then stop."""
        self._closing = True
        self._ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.warning("events not forwarded within %.0fs: dropped", timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
