"""What the bridge keeps for subscribers is bounded in bytes.

The XPUB's queue per subscriber is bounded in messages, not bytes: a subscriber that stops reading
would hold the next ``xpub_hwm`` events whatever their size (1,000 events of 1 MiB, a GiB). The bridge
keeps what it publishes live within ``xpub_window_bytes`` per ``xpub_hwm`` messages; what goes over is
fetched by snapshot, announced at once by a hugz, so live subscribers still get every event in order.
Detached slots' replay buffers, kept for late subscribers, share one budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from ipc_bridge.server.publisher import SendWindow
from tests.faults.bad_input_harness import (
    ACK,
    FakeHost,
    HostConn,
    assert_contiguous,
    encode_frame,
    frame,
    inproc_bridge,
    named,
)
from tests.streams import Collector

pytestmark = pytest.mark.timeout(60)

EVENTS = 60
EVENT_BYTES = 20_000
WINDOW = 200_000


async def test_a_stalled_subscriber_holds_at_most_the_window(sockdir: Path) -> None:
    go = asyncio.Event()

    async def host(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        await go.wait()
        for i in range(EVENTS):
            await conn.send(frame("message", {"taskId": "t", "n": i, "text": "x" * EVENT_BYTES}))
        await conn.send(frame("taskIdle", "t"))

    async with (
        FakeHost(sockdir / "h.sock", host) as fake,
        inproc_bridge(sockdir, xpub_window_bytes=WINDOW) as (bridge, client),
    ):
        assert bridge.ctx is not None and bridge.info is not None
        stalled = bridge.ctx.socket(zmq.SUB)
        stalled.linger = 0
        try:
            stalled.connect(bridge.info.event_endpoint)
            stalled.subscribe(b"slot.w1.task.")  # task events only: what the window is about
            await client.attach("w1", str(fake.path), connect_timeout=5)
            live = Collector(client, "w1")
            try:
                await live.wait(lambda e: e.msg_type == "slot_up")
                await client.subscribe("w1")  # the stalled SUB's subscription has been welcomed too
                go.set()
                await live.wait(named("taskIdle"), timeout=30)
            finally:
                await live.close()
            # The live subscriber got every event, in order, whether sent live or fetched.
            assert_contiguous(live.events)
            assert sum(e.event_name == "message" for e in live.events) == EVENTS
            # The stalled one was sent no more than the window holds (it read nothing until now).
            held = 0
            while await stalled.poll(200):
                held += sum(len(f) for f in await stalled.recv_multipart())
            assert 0 < held <= WINDOW, held
            assert held < EVENTS * EVENT_BYTES // 2  # without the window: every event, > 1.2 MB
        finally:
            stalled.close(linger=0)


def test_the_window_counts_the_last_messages_sent() -> None:
    window = SendWindow(count=3, max_bytes=100)
    assert window.admit(60) and window.admit(30)
    assert not window.admit(20)  # 110 > 100: held back, not counted
    assert window.admit(5, force=True)  # control messages always go
    assert window.admit(1) and window.admit(1)  # the 60 and the 30 slide out
    assert window.admit(90) and window.withheld == 1


async def test_detached_slots_keep_their_buffers_within_a_budget(sockdir: Path) -> None:
    """A run detaches a slot per attempt and keeps the last 64 for late subscribers: after a flood on
    each, their buffers would add up (64 x 64 MiB). Older ones are forgotten beyond ``detached_bytes``."""

    async def chatty(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        for i in range(40):
            await conn.send(frame("message", {"taskId": "t", "n": i, "text": "x" * 5_000}))
        await conn.send(frame("taskIdle", f"done-{index}"))

    async with (
        FakeHost(sockdir / "h.sock", chatty) as fake,
        inproc_bridge(sockdir, detached_bytes=300_000) as (
            bridge,
            client,
        ),
    ):
        for index, name in enumerate(("w1", "w2", "w3")):
            stream = Collector(client, name)
            await client.attach(name, str(fake.path), connect_timeout=5)
            try:
                await stream.wait(named("taskIdle", f"done-{index}"))
            finally:
                await stream.close()
            assert bridge.slots[name].buffer.bytes > 200_000
            await client.detach(name)
        # w3 and w2 would take > 400 kB: only the newest detached slot is kept (and one at the least).
        assert [name for name in ("w1", "w2", "w3") if name in bridge.slots] == ["w3"]
