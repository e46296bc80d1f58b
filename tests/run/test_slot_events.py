"""SlotEvents' reads with deadlines, on a virtual clock: a deadline leaves the pending read alive, a
bridge restart ends the stream at once, a cancelled read loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from ipc_bridge.client.types import BridgeError, Event
from orchestrator.run.slot_events import SlotEvents
from tests.run.virtual_clock import run_virtual


def _event(seq: int) -> Event:
    content = {
        "slot": "w0-1",
        "seq": seq,
        "task_id": None,
        "event": {"eventName": "taskIdle", "payload": ["t"]},
    }
    header = {"session": "s", "msg_type": "task_event"}
    return Event.received("task_event", header, {}, content, b"slot.w0-1.")


async def _stream(queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
    while True:
        yield await queue.get()


def test_a_deadline_leaves_the_read_pending_and_the_next_event_comes_through() -> None:
    async def main() -> list[tuple[float, int | None]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        events = SlotEvents(_stream(queue), asyncio.Event(), lambda: "restarted")
        start = loop.time()
        seen: list[tuple[float, int | None]] = []
        first = await events.get(5.0)  # nothing yet: the deadline
        seen.append((loop.time() - start, None if first is None else first.seq))
        loop.call_later(2.0, queue.put_nowait, _event(1))
        got = await events.get(5.0)  # the read the deadline left pending gets it
        seen.append((loop.time() - start, None if got is None else got.seq))
        queue.put_nowait(_event(2))
        queue.put_nowait(_event(3))
        ready = await events.ready()
        seen.extend((loop.time() - start, e.seq) for e in ready)
        await events.aclose()
        return seen

    assert run_virtual(main()) == [(5.0, None), (7.0, 1), (7.0, 2), (7.0, 3)]


def test_a_restart_ends_the_stream_at_once_and_a_cancelled_read_loses_nothing() -> None:
    async def main() -> tuple[int | None, float, str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        restart = asyncio.Event()
        events = SlotEvents(_stream(queue), restart, lambda: "the bridge restarted")
        reader = asyncio.ensure_future(events.get(60.0))
        await asyncio.sleep(1.0)
        reader.cancel()  # as a Ctrl-C does: the stream's pending read survives it
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        queue.put_nowait(_event(1))
        kept = await events.get(60.0)
        start = loop.time()
        loop.call_later(3.0, restart.set)
        with pytest.raises(BridgeError) as ended:
            await events.get(60.0)
        took = loop.time() - start
        await events.aclose()
        return (None if kept is None else kept.seq), took, str(ended.value)

    assert run_virtual(main()) == (1, 3.0, "the bridge restarted")
