#!/usr/bin/env python
"""The client's receive path alone, in process: thread CPU per event from signed frames to the consumer.

    .venv/bin/python benchmarks/client_receive.py [--events 50000] [--batch 64] [--repeat 3] [--json]

The bridge's ``task_event`` messages (``encode_task_event`` around a ~400-byte partial ``message``, signed
as the bridge signs a batch) are handed to ``EventStreams`` as its SUB reader would, ``--batch`` per
drain, and read from ``BridgeClient.events``' generator by a consumer that checks every seq and reads
each event's text (as ``bridge_throughput.py`` does). No sockets, no other process: what is left is the
client's own work per event (verify, parse, build, dispatch, order), which ``bridge_throughput.py`` can
only see mixed with the machine's load. Beside it, the floor's share of that work (HMAC, orjson of
header and content, the seq: ``_subscriber_floor.py`` without its socket).

To compare two versions of the client, run it with ``PYTHONPATH`` set to each tree in turn."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import os
import secrets
import sys
import time
from typing import Any

import orjson
import zmq

from ipc_bridge.client.bridge_watch import BridgeWatch
from ipc_bridge.client.event_stream import EventStreams
from ipc_bridge.wire.messages import encode_task_event
from ipc_bridge.wire.session import DELIM, Session, slot_topic, task_topic

SLOT = "bench"
TASK = "0194a0b2-aaaa-bbbb-cccc-ddddeeeeffff"


def signed_events(key: str, session: str, count: int) -> list[list[bytes]]:
    """``count`` task events of the slot as the bridge publishes them: ``[topic, DELIM, sig, h, p, c]``."""
    bridge = Session(key, session=session)
    parent = {"msg_id": "req", "session": "c" * 32, "msg_type": "task_command", "version": "1.2", "date": ""}
    topic = task_topic(SLOT, TASK)
    out: list[list[bytes]] = []
    for start in range(0, count, 100):
        batch = []
        for i in range(start, min(count, start + 100)):
            text = f"{i}".ljust(300, "x")
            message = {"ts": 1795525226804, "type": "say", "say": "text", "text": text, "partial": True}
            event = {
                "eventName": "message",
                "payload": [{"taskId": TASK, "action": "updated", "message": message}],
            }
            batch.append((parent, encode_task_event(SLOT, i + 1, TASK, orjson.dumps(event))))
        out += [[topic, DELIM, *parts] for parts in bridge.serialize_batch("task_event", batch)]
    return out


class Owner:
    """What ``EventStreams`` uses of its client; no gap is expected, so no snapshot either."""

    def __init__(self, key: str, bridge_session: str) -> None:
        self.session = Session(key)
        self.bridge_session: str | None = bridge_session
        self.timeout = 5.0
        self.retries = 0
        self.watch = BridgeWatch()

    async def snapshot(self, slot: str, since_seq: int | None = 0, limit: int = 10_000) -> Any:
        raise AssertionError("a gap in a stream without gaps")


async def client_run(frames: list[list[bytes]], key: str, bridge_session: str, batch: int) -> float:
    """Thread CPU seconds for every event through the client's receive path."""
    bridge = Session(key, session=bridge_session)
    welcome = [
        slot_topic(SLOT),
        DELIM,
        *bridge.serialize_event("welcome", None, {"subscription": "slot.bench.", "seq": 0}),
    ]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    streams = EventStreams(Owner(key, bridge_session), sub, lambda header: None)
    streams.reader.start(asyncio.get_running_loop())
    count = len(frames)

    async def consume() -> None:
        expected = 1
        async for event in streams.events(SLOT, since_seq=0):
            if event.seq != expected:
                raise AssertionError(f"seq {event.seq}, expected {expected}")
            if event.event_name == "message" and not event.raw["event"]["payload"][0]["message"]["text"]:
                raise AssertionError("no text")
            if expected == count:
                return
            expected += 1

    consumer = asyncio.ensure_future(consume())
    while not streams._welcomes:  # noqa: ASYNC110 - lets the consumer's subscription start
        await asyncio.sleep(0)
    streams._on_frames(welcome)
    gc.collect()
    gc.freeze()
    start = time.thread_time()
    handle = streams._on_frames
    for first in range(0, count, batch):
        for message in frames[first : first + batch]:
            handle(message)
        streams._after_drain()
        await asyncio.sleep(0)  # the consumer's turn, as after a drain of the SUB
    await consumer
    cpu = time.thread_time() - start
    gc.unfreeze()
    streams.closed = True
    streams.reader.stop()
    sub.close(linger=0)
    ctx.term()
    return cpu


def floor_run(frames: list[list[bytes]], key: str) -> float:
    """Thread CPU seconds for the floor's work on the same frames (``_subscriber_floor.py``)."""
    auth = hmac.new(key.encode(), digestmod="sha256")
    last = 0
    start = time.thread_time()
    for _, _, signature, h, p, c in frames:
        mac = auth.copy()
        mac.update(h)
        mac.update(p)
        mac.update(c)
        if not hmac.compare_digest(mac.hexdigest().encode(), signature):
            raise AssertionError("bad signature")
        header, content = orjson.loads(h), orjson.loads(c)
        if header["msg_type"] != "task_event" or content["seq"] != last + 1:
            raise AssertionError("out of order")
        last = content["seq"]
    return time.thread_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=64, help="messages per drain of the SUB")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the least CPU is reported")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args(argv)
    key, bridge_session = secrets.token_hex(32), secrets.token_hex(16)
    frames = signed_events(key, bridge_session, ns.events)
    client = min(asyncio.run(client_run(frames, key, bridge_session, ns.batch)) for _ in range(ns.repeat))
    floor = min(floor_run(frames, key) for _ in range(ns.repeat))
    result = {
        "events": ns.events,
        "batch": ns.batch,
        "client_us_per_event": client / ns.events * 1e6,
        "floor_us_per_event": floor / ns.events * 1e6,
        "loadavg": list(os.getloadavg()),
        "client_module": sys.modules[EventStreams.__module__].__file__,
    }
    if ns.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(
            f"client {result['client_us_per_event']:.1f} us/event, floor {result['floor_us_per_event']:.1f} "
            f"(batch {ns.batch}, {ns.events} events, load {result['loadavg'][0]:.1f}; {result['client_module']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
