"""Bad input from an extension host (issue #4): the bridge logs, counts (``SlotInfo``) and goes on, and
memory stays bounded. The host is a raw socket server the test scripts byte by byte; the bridge runs in
this process, so its decoder and replay buffer can be inspected directly."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc_bridge.client.types import ConnectFailed
from ipc_bridge.log_limits import RateLimitedLog
from ipc_bridge.roo.framing import FrameDecoder, encode_frame
from ipc_bridge.server.slots import SlotConfig
from ipc_bridge.wire.messages import SlotInfo, TaskEventContent
from tests.faults.bad_input_harness import (
    ACK,
    CLIENT_ID,
    FakeHost,
    HostConn,
    assert_contiguous,
    frame,
    frame_of_size,
    inproc_bridge,
    named,
)
from tests.streams import Collector

pytestmark = pytest.mark.timeout(30)

MAX_FRAME = 4096


def slot_config(**overrides: float) -> SlotConfig:
    values: dict[str, float] = {
        "max_frame_size": MAX_FRAME,
        "reconnect_interval": 0.05,
        "ack_timeout": 0.3,
    }
    values.update(overrides)
    return SlotConfig(**values)  # type: ignore[arg-type]


def warnings_from_bridge(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("ipc_bridge") and r.levelno >= logging.WARNING
    ]


async def slot_info(client_slots: list[SlotInfo], name: str = "w1") -> SlotInfo:
    return next(s for s in client_slots if s.slot == name)


BAD_FRAMES = [
    b"{bad json",
    b'{"data":{"type":"TaskEvent"}}',  # no node-ipc type: would crash node-ipc itself
    b'{"type":5,"data":{}}',
    b'{"type":"other","data":{}}',
    b'{"type":"message","data":{"type":"TaskEvent","data":{"eventName":"taskIdle","payload":[NaN]}}}',
    b'{"type":"message","data":{"type":"TaskEvent","data":{"eventName":"taskIdle","payload":[Infinity]}}}',
    b'{"type":"message","data":{"type":"TaskEvent","data":{"eventName":"taskIdle","payload":[-Infinity]}}}',
    b'{"type":"message","data":"\xff\xfe"}',  # not UTF-8
    b"[1,2]",
]
# Valid JSON that orjson alone refuses (1e400, a lone surrogate, deep nesting) is no bad frame: it passes
# through, and only deeper nesting than any host writes is refused (tests/faults/test_host_json.py).
BAD_MESSAGES = [
    "just a string",
    [],
    5,
    {},  # what node-ipc makes of a null message
    {"type": "Bogus", "data": {}},
    {"type": 7},
    {"type": "TaskEvent", "origin": "server", "data": "x"},
    {"type": "TaskEvent", "origin": "server", "data": {"payload": ["t1"]}},
    {"type": "TaskEvent", "origin": "server", "data": {"eventName": 5, "payload": ["t1"]}},
    ACK,  # a second Ack
    {"type": "TaskCommand", "origin": "client", "clientId": CLIENT_ID, "data": {"commandName": "CancelTask"}},
]


async def test_bad_frames_and_messages_are_logged_counted_and_skipped(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    go = asyncio.Event()

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        await go.wait()
        stream = b"".join(bad + b"\x0c" for bad in BAD_FRAMES)
        stream += b"".join(encode_frame(bad) for bad in BAD_MESSAGES)  # type: ignore[arg-type]
        stream += frame("zooThing", "t1") + frame("zooThing", "t1")  # a fork's event names: forwarded
        stream += encode_frame({"type": "TaskEvent", "origin": "server", "data": {"eventName": "otherThing"}})
        # A known name whose payload is no array: forwarded, counted.
        stream += frame("taskIdle").replace(b'"payload":[]', b'"payload":"t1"')
        stream += encode_frame(
            {"type": "TaskEvent", "origin": "server", "data": {"eventName": "taskCompleted", "payload": {}}}
        )
        stream += frame("evalPass").replace(b',"payload":[]', b"")  # payload-less by definition: fine
        stream += frame("taskCreated", "t9")
        await conn.send(stream)

    async with (
        FakeHost(sockdir / "h.sock", script) as host,
        inproc_bridge(sockdir, slot_config()) as (_, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(lambda e: e.msg_type == "slot_up")
            caplog.clear()
            go.set()
            await stream.wait(named("taskCreated", "t9"))
            names = [e.event_name or e.msg_type for e in stream.events]
            assert names == [
                "slot_up",
                "zooThing",
                "zooThing",
                "otherThing",
                "taskIdle",
                "taskCompleted",
                "evalPass",
                "taskCreated",
            ]
            assert_contiguous(stream.events)
            info = await slot_info(await client.slots())
            assert info.state == "up"
            assert (info.bad_frames, info.oversized_frames) == (len(BAD_FRAMES), 0)
            assert info.bad_messages == len(BAD_MESSAGES)
            assert (info.unknown_events, info.malformed_events) == (3, 2)
            assert len(host.connections) == 1  # nothing made the bridge reconnect
            lines = warnings_from_bridge(caplog)
            # One line per dropped frame or message and per malformed event; one per unknown event *name*.
            assert len(lines) == len(BAD_FRAMES) + len(BAD_MESSAGES) + 2 + 2
            assert sum("zooThing" in line for line in lines) == 1
            assert all("w1" in line for line in lines)
            assert (await client.heartbeat()).status == "ok"
        finally:
            await stream.close()


async def test_a_stream_split_at_every_byte_arrives_intact(sockdir: Path) -> None:
    text = "ünïcødé \f form feed → and a delimiter-looking \\f"
    frames = [frame("message", {"taskId": "t1", "action": "created", "message": {"text": text}})]
    frames += [b"{torn bad json\x0c", frame("taskIdle", "t1")]
    data = b"".join(frames)
    go = asyncio.Event()

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        await go.wait()
        for i in range(len(data)):
            await conn.send(data[i : i + 1])

    async with (
        FakeHost(sockdir / "h.sock", script) as host,
        inproc_bridge(sockdir, slot_config()) as (bridge, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(lambda e: e.msg_type == "slot_up")
            go.set()
            await stream.wait(named("taskIdle", "t1"))
            message = next(e for e in stream.events if e.event_name == "message")
            assert isinstance(message.content, TaskEventContent)
            assert message.content.event["payload"][0]["message"]["text"] == text
            assert message.task_id == "t1"
            assert [e.seq for e in stream.events] == [1, 2, 3]
            info = await slot_info(await client.slots())
            assert (info.bad_frames, info.bad_messages) == (1, 0)
            conn = bridge.slots["w1"].conn
            assert conn is not None and conn.decoder.stats.peak_pending <= len(frames[0])
        finally:
            await stream.close()


async def test_oversized_frames_are_dropped_and_memory_stays_bounded(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    go = asyncio.Event()
    caplog.set_level(logging.INFO, logger="ipc_bridge")

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        await go.wait()
        await conn.send(frame_of_size(MAX_FRAME))  # exactly at the limit: kept
        await conn.send(frame_of_size(MAX_FRAME + 1))
        big = frame_of_size(200 * 1024)
        for i in range(0, len(big), 1000):
            await conn.send(big[i : i + 1000])
        endless = b"x" * (64 * 1024)
        for _ in range(16):  # 1 MiB without a delimiter, then one
            await conn.send(endless)
        await conn.send(b"\x0c" + frame("taskIdle", "after"))

    async with (
        FakeHost(sockdir / "h.sock", script) as host,
        inproc_bridge(sockdir, slot_config()) as (bridge, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(lambda e: e.msg_type == "slot_up")
            caplog.clear()
            go.set()
            await stream.wait(named("taskIdle", "after"))
            assert [e.event_name or e.msg_type for e in stream.events] == ["slot_up", "message", "taskIdle"]
            info = await slot_info(await client.slots())
            assert (info.oversized_frames, info.bad_frames, info.state) == (3, 0, "up")
            assert len(host.connections) == 1  # dropped frame by frame, the connection stays
            conn = bridge.slots["w1"].conn
            assert conn is not None
            assert conn.decoder.stats.peak_pending <= MAX_FRAME  # never buffered past the limit
            assert conn.decoder.stats.largest_dropped >= 1024 * 1024
            lines = warnings_from_bridge(caplog)
            assert len(lines) == 3 and all("max_frame_size" in line and "w1" in line for line in lines)
        finally:
            await stream.close()


async def test_a_host_that_never_acks(sockdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """attach fails with the reason; a slot attached at start-up keeps trying, counts, and comes up."""
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    release = asyncio.Event()

    async def mute(conn: HostConn, index: int) -> None:
        await conn.closed.wait()

    async def late(conn: HostConn, index: int) -> None:
        if index < 2:
            await conn.closed.wait()  # no Ack: the bridge gives up on this connection
            return
        await conn.send(frame("taskIdle", "early"))  # before the Ack: dropped
        await release.wait()
        await conn.send(encode_frame(ACK))

    async with (
        FakeHost(sockdir / "mute.sock", mute) as mute_host,
        FakeHost(sockdir / "late.sock", late) as late_host,
        inproc_bridge(sockdir, slot_config(), attach={"w2": str(sockdir / "late.sock")}) as (_, client),
    ):
        with pytest.raises(ConnectFailed, match="no Ack"):
            await client.attach("w1", str(mute_host.path), connect_timeout=0.5)
        await asyncio.wait_for(mute_host.connections[0].closed.wait(), 5)  # the bridge hung up
        assert [s.slot for s in await client.slots()] == ["w2"]

        stream = Collector(client, "w2")
        try:
            for _ in range(3):  # the third connection is waiting for its Ack
                await asyncio.wait_for(late_host.accepted.get(), 10)
            info = await slot_info(await client.slots(), "w2")
            assert info.state == "down" and info.ack_timeouts == 2
            assert info.last_error is not None and "no Ack" in info.last_error
            release.set()
            await stream.wait(lambda e: e.msg_type == "slot_up")
            info = await slot_info(await client.slots(), "w2")
            assert (info.state, info.ack_timeouts, info.bad_messages) == ("up", 2, 1)
            assert info.last_error is None
        finally:
            await stream.close()
    assert sum("no Ack" in line for line in warnings_from_bridge(caplog)) >= 2


async def test_a_flooding_host_is_bounded_and_the_bridge_stays_responsive(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    go, stop = asyncio.Event(), asyncio.Event()
    sent = {"batches": 0, "good": 0, "bad": 0}
    min_batches = 20

    async def flood(conn: HostConn, index: int) -> None:
        await conn.send(encode_frame(ACK))
        await go.wait()
        n = 0
        while sent["batches"] < min_batches or not stop.is_set():
            chunk = bytearray()
            for _ in range(50):
                n += 1
                chunk += frame("taskCreated", f"flood-{n}") + b"{garbage\x0c"
            await conn.send(bytes(chunk))
            sent["batches"] += 1
            sent["good"] += 50
            sent["bad"] += 50
        await conn.send(frame("taskIdle", "marker"))

    async def answer(conn: HostConn, command: dict[str, object]) -> None:
        data = command.get("data")
        if isinstance(data, dict) and data.get("commandName") == "StartNewTask":
            await conn.send(frame("taskCreated", "t0"))

    config = slot_config(buffer_events=50, buffer_bytes=32 * 1024, max_tracked_tasks=100)
    # The subscriber must get every event live (the tiny buffer cannot fill gaps): deep XPUB queues.
    live = {"xpub_hwm": 100_000, "xpub_window_bytes": 2**40}
    async with (
        FakeHost(sockdir / "h.sock", flood, answer) as host,
        inproc_bridge(sockdir, config, **live) as (bridge, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        assert await client.start_task("w1", "adopt every task created from now on") == "t0"
        stream = Collector(client, "w1")
        slot = bridge.slots["w1"]
        try:
            await stream.wait(named("taskCreated", "t0"))
            go.set()
            for _ in range(3):  # answered while the flood goes on
                before = slot.seq
                assert (await client.heartbeat()).status == "ok"
                await client.slots()
                assert slot.seq > before
            stop.set()
            await stream.wait(named("taskIdle", "marker"), timeout=20)
            assert_contiguous(stream.events)  # nothing lost on the way
            assert sum(e.event_name == "taskCreated" for e in stream.events) == sent["good"] + 1
            info = await slot_info(await client.slots())
            assert info.bad_frames == sent["bad"] >= 1000 and info.state == "up"
            assert len(slot.buffer) <= 50 and slot.buffer.bytes <= 32 * 1024
            assert info.first_seq == info.seq - len(slot.buffer) + 1
            assert slot.tracked_tasks <= 100
            conn = slot.conn
            assert conn is not None and conn.decoder.stats.peak_pending <= MAX_FRAME
            lines = warnings_from_bridge(caplog)
            assert 10 <= len(lines) <= 60  # a sample, not one line per bad frame
            assert any("suppressed" in line for line in lines) or len(lines) < sent["bad"]
        finally:
            await stream.close()


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    sizes=st.lists(st.integers(0, 3 * MAX_FRAME), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=50),
)
def test_the_decoder_never_holds_more_than_the_limit(sizes: list[int], cuts: list[int]) -> None:
    """Frames of any size, cut anywhere: the small ones come out whole, the big ones are counted, and
    the decoder never buffers more than ``max_frame_size``."""
    frames = [b"y" * size for size in sizes]
    stream = b"".join(f + b"\x0c" for f in frames)
    decoder = FrameDecoder(MAX_FRAME)
    out: list[bytes] = []
    start, i = 0, 0
    while start < len(stream):
        end = start + cuts[i % len(cuts)]
        out += decoder.feed(stream[start:end])
        assert decoder.pending <= MAX_FRAME
        start, i = end, i + 1
    assert out == [f for f in frames if 0 < len(f) <= MAX_FRAME]
    assert decoder.stats.oversized == sum(len(f) > MAX_FRAME for f in frames)
    assert decoder.stats.peak_pending <= MAX_FRAME and decoder.pending == 0


def test_rate_limited_log_keeps_a_sample_and_says_how_much_it_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("ipc_bridge.test"), burst=3, period=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="ipc_bridge.test")
    logged = [limiter.warning("bad %d", i) for i in range(10)]
    assert logged == [True] * 3 + [False] * 7 and limiter.suppressed == 7
    now[0] = 10.0
    assert limiter.warning("bad again")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["bad 0", "bad 1", "bad 2", "bad again [7 similar line(s) suppressed before this one]"]


def test_slot_info_counters_are_optional_on_the_wire() -> None:
    """A 1.1 bridge's SlotInfo (no counters) still parses, with zeros."""
    info = SlotInfo.model_validate({"slot": "w1", "state": "up", "socket_path": "/x"})
    assert (info.bad_frames, info.oversized_frames, info.bad_messages) == (0, 0, 0)
    assert (info.unknown_events, info.malformed_events, info.ack_timeouts) == (0, 0, 0)
