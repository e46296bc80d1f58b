#!/usr/bin/env python
"""CPU per event of an attempt's reads (``orchestrator.run.slot_events.SlotEvents.get``) on a stream fed
one event per loop turn, the producer's share included (the same on both sides of a comparison).

    .venv/bin/python benchmarks/slot_events_get.py [--events 20000] [--samples 5] [--json]

To compare two trees, copy this script into both and run them at the same time: its own tree comes
first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipc_bridge.client.types import Event
from orchestrator.run.slot_events import SlotEvents


def _event(seq: int) -> Event:
    content = {
        "slot": "w0-1",
        "seq": seq,
        "task_id": None,
        "event": {"eventName": "taskIdle", "payload": ["t"]},
    }
    return Event.received(
        "task_event", {"session": "s", "msg_type": "task_event"}, {}, content, b"slot.w0-1."
    )


async def _stream(queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
    while True:
        yield await queue.get()


async def _sample(count: int) -> float:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    events = SlotEvents(_stream(queue), asyncio.Event(), lambda: "restarted")
    batch = [_event(n) for n in range(count)]

    async def produce() -> None:
        for event in batch:
            queue.put_nowait(event)
            await asyncio.sleep(0)

    producer = asyncio.ensure_future(produce())
    start = time.process_time()
    got = 0
    while got < count:
        if await events.get(1.0) is not None:
            got += 1
    took = time.process_time() - start
    await producer
    await events.aclose()
    return took / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples = [asyncio.run(_sample(args.events)) for _ in range(args.samples)]
    result = {
        "us_per_event_median": round(statistics.median(samples), 2),
        "us_per_event_min": round(min(samples), 2),
    }
    print(orjson.dumps(result).decode() if args.json else f"{result['us_per_event_median']} us per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
