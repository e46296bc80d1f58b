"""The bridge's and the client's hot paths: in-place frame splitting, whole socket reads pushed to the
bridge synchronously, read backpressure, batched publishing, the replay buffer's shape, lazily typed
events, and the per-message shortcuts (cached command frames, fork check, FD pokes)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
import zmq.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ipc_bridge.client.event_stream import parse_event
from ipc_bridge.client.types import Event
from ipc_bridge.roo.extension import PAUSE_BYTES, ExtensionConnection, ExtensionError, connect
from ipc_bridge.roo.framing import (
    FIRST_READ_SIZE,
    READ_SIZE,
    FrameBuffer,
    FrameDecoder,
    decode_frame,
    encode_frame,
)
from ipc_bridge.roo.protocol import CancelTask, GetModes, ResumeTask
from ipc_bridge.server.replay_buffer import ReplayBuffer
from ipc_bridge.server.slots import validate_command
from ipc_bridge.wire.messages import TaskEventContent, task_event_content
from ipc_bridge.wire.session import DELIM, Session, WireError
from ipc_bridge.wire.zmq_loop import Reader, plain_socket, send_frames
from tests.faults.bad_input_harness import (
    ACK,
    FakeHost,
    HostConn,
    assert_contiguous,
    frame,
    inproc_bridge,
    named,
)
from tests.streams import Collector

pytestmark = pytest.mark.timeout(30)

KEY = "ab" * 32


def event(name: str, *payload: object) -> dict[str, object]:
    return {"type": "TaskEvent", "origin": "server", "data": {"eventName": name, "payload": list(payload)}}


def ack(client_id: str) -> bytes:
    return encode_frame({**ACK, "data": {**ACK["data"], "clientId": client_id}})


@contextlib.asynccontextmanager
async def host(path: Path, script: Any) -> AsyncIterator[list[HostConn]]:
    async with FakeHost(path, script) as fake:
        yield fake.connections


# ------------------------------------------------------------------------------------ FrameBuffer


def read_into(buffer: FrameBuffer, data: bytes, sizes: list[int]) -> list[bytes]:
    """What an ``asyncio.BufferedProtocol`` does: reads of any size into ``get_buffer()``."""
    frames: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        free = buffer.get_buffer()
        n = min(len(free), len(data) - pos, sizes[i % len(sizes)] if sizes else len(data))
        free[:n] = data[pos : pos + n]
        free.release()
        frames += [bytes(view) for view in buffer.buffer_updated(n)]
        pos += n
        i += 1
        assert buffer.pending <= buffer.max_frame_size  # never holds more of a frame than the limit
    return frames


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\x0c", b"")), min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=500), max_size=10),
    st.sampled_from([8, 64, 4096]),
    st.sampled_from([1, 7, 100, 65536]),
    st.booleans(),
)
def test_frame_buffer_splits_like_the_frame_decoder(
    frames: list[bytes], sizes: list[int], max_frame: int, read_size: int, tail: bool
) -> None:
    stream = b"".join(f + b"\x0c" for f in frames) + (b"partial" if tail else b"")
    buffer = FrameBuffer(max_frame, read_size=read_size)
    decoder = FrameDecoder(max_frame)
    assert read_into(buffer, stream, sizes) == decoder.feed(stream)
    assert (buffer.stats.oversized, buffer.stats.largest_dropped) == (
        decoder.stats.oversized,
        decoder.stats.largest_dropped,
    )
    assert buffer.pending == decoder.pending
    assert buffer.stats.peak_pending <= max_frame


def test_frame_buffer_grows_for_a_big_frame_and_gives_the_memory_back() -> None:
    buffer = FrameBuffer(10 * 1024 * 1024, read_size=4096)
    big = encode_frame({"x": "y" * 1_000_000})
    frames = read_into(buffer, big + encode_frame({"n": 1}), [4096])
    assert [len(f) for f in frames] == [len(big) - 1, len(encode_frame({"n": 1})) - 1]
    assert buffer.pending == 0
    assert len(buffer.get_buffer()) == 4096  # back to one read's worth once the big frame is gone


def test_frame_buffer_feed_matches_the_decoder_api() -> None:
    stream = encode_frame({"a": "ü\f→"}) + encode_frame({"b": 2})
    for cut in range(len(stream) + 1):
        buffer = FrameBuffer(read_size=5)
        frames = buffer.feed(stream[:cut]) + buffer.feed(stream[cut:])
        assert [decode_frame(f) for f in frames] == [{"a": "ü\f→"}, {"b": 2}]


# ------------------------------------------------------------------------- push mode (the bridge)


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.lost: list[str] = []
        self.changed = asyncio.Event()

    def on_messages(self, batch: list[Any]) -> None:
        self.batches.append(batch)
        self.changed.set()

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)
        self.changed.set()

    @property
    def messages(self) -> list[Any]:
        return [m for batch in self.batches for m in batch]

    async def wait(self, predicate: Any, timeout: float = 10) -> None:
        async def until() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)


async def test_deliver_pushes_whole_reads_in_order(sockdir: Path) -> None:
    """Frames that came with the Ack go first; a read with many frames is one batch; a frame split
    across reads comes whole; bad frames are counted and skipped; the end is reported once."""
    release = asyncio.Event()
    many = b"".join(encode_frame(event("message", i)) for i in range(300))
    split = encode_frame(event("taskIdle", "split"))

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack("cccccccccccc") + encode_frame(event("taskCreated", "first")))
        await release.wait()
        await conn.send(many + b"{not json\x0c")
        for part in (split[:5], split[5:20], split[20:]):
            await conn.send(part)
        conn.writer.close()

    async with host(sockdir / "h.sock", script):
        conn = await connect(str(sockdir / "h.sock"), timeout=5)
        sink = Sink()
        try:
            conn.deliver(sink.on_messages, sink.on_lost)
            # Already delivered, before deliver() returned: it came in the Ack's read.
            assert [event["eventName"] for event, _ in sink.messages] == ["taskCreated"]
            release.set()
            await sink.wait(lambda: sink.lost)
        finally:
            await conn.close()
    names = [(event["eventName"], event["payload"][0]) for event, _ in sink.messages]
    assert names == [("taskCreated", "first"), *(("message", i) for i in range(300)), ("taskIdle", "split")]
    # Each event comes with its bytes as the host wrote them (Roo's layout): the bridge forwards those.
    assert all(orjson.loads(raw) == event for event, raw in sink.messages)
    assert sink.messages[-1][1] == orjson.dumps(event("taskIdle", "split")["data"])
    assert max(len(b) for b in sink.batches) > 1  # reads, not frames
    assert len(sink.lost) == 1 and "closed" in sink.lost[0]
    assert conn.stats.bad_frames == 1 and conn.stats.frames_in == 303  # Ack + 302 events
    assert not conn.connected


async def test_a_failing_handler_drops_the_connection(sockdir: Path) -> None:
    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack("dddddddddddd"))
        await conn.send(encode_frame(event("taskCreated", "t")))
        await conn.closed.wait()

    def explode(batch: list[Any]) -> None:
        raise RuntimeError("bug")

    async with host(sockdir / "h.sock", script) as conns:
        conn = await connect(str(sockdir / "h.sock"), timeout=5)
        sink = Sink()
        try:
            conn.deliver(explode, sink.on_lost)
            await sink.wait(lambda: sink.lost)
            assert sink.lost == ["reader failed: RuntimeError('bug')"]
            await asyncio.wait_for(conns[0].closed.wait(), 5)  # the host sees the connection go
        finally:
            await conn.close()


async def test_close_ends_the_callbacks(sockdir: Path) -> None:
    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack("eeeeeeeeeeee"))
        await conn.closed.wait()

    async with host(sockdir / "h.sock", script):
        conn = await connect(str(sockdir / "h.sock"), timeout=5)
        sink = Sink()
        conn.deliver(sink.on_messages, sink.on_lost)
        with pytest.raises(ExtensionError, match="deliver"):  # one reader only
            await conn.recv_data()
        await conn.close()
        assert sink.lost == [] and not conn.connected  # our own close is no loss to report


# ------------------------------------------------------------------------ pull mode backpressure


async def test_reading_pauses_while_nobody_reads(sockdir: Path) -> None:
    count = 20_000
    payload = "x" * 200
    written = asyncio.Event()

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack("ffffffffffff"))
        conn.writer.write(b"".join(encode_frame(event("message", i, payload)) for i in range(count)))
        written.set()
        await conn.writer.drain()  # completes only once the client reads again
        await conn.closed.wait()

    async with host(sockdir / "h.sock", script) as conns:
        conn = await connect(str(sockdir / "h.sock"), timeout=5)
        try:
            await asyncio.wait_for(written.wait(), 5)
            deadline = asyncio.get_running_loop().time() + 10
            while not conn.reading_paused:  # no event to await: poll the condition, with a deadline
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            # Paused with a bounded backlog, while the host still holds data it could not send.
            assert PAUSE_BYTES < conn.unread_bytes <= PAUSE_BYTES + READ_SIZE
            assert conns[0].writer.transport.get_write_buffer_size() > 0
            got = [(await conn.recv_data())["data"]["payload"][0] for _ in range(count)]
            assert got == list(range(count))
            assert not conn.reading_paused
        finally:
            await conn.close()


# ----------------------------------------------------------------------- commands and reconnects


async def test_name_only_commands_carry_the_client_id_of_the_current_connection(sockdir: Path) -> None:
    ids = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack(next(ids)))
        await conn.closed.wait()

    async with FakeHost(sockdir / "h.sock", script) as fake:
        conn = ExtensionConnection(str(sockdir / "h.sock"))
        try:
            await conn.open(timeout=5)
            await conn.send_command(GetModes())
            await conn.send_command(validate_command({"commandName": "GetModes"}))
            await conn.send_command(ResumeTask(data="t1"))
            await conn.open(timeout=5)  # a new connection, a new Ack
            await conn.send_command(GetModes())
            await conn.send_command(CancelTask())
            await conn.close()
            for c in fake.connections:
                await asyncio.wait_for(c.closed.wait(), 5)
        finally:
            await conn.close()
    sent = [[(c["clientId"], c["data"]) for c in host_conn.commands] for host_conn in fake.connections]
    assert sent == [
        [
            ("aaaaaaaaaaaa", {"commandName": "GetModes"}),
            ("aaaaaaaaaaaa", {"commandName": "GetModes"}),
            ("aaaaaaaaaaaa", {"commandName": "ResumeTask", "data": "t1"}),
        ],
        [("bbbbbbbbbbbb", {"commandName": "GetModes"}), ("bbbbbbbbbbbb", {"commandName": "CancelTask"})],
    ]


def test_validate_command_reuses_name_only_commands_and_validates_the_rest() -> None:
    first = validate_command({"commandName": "GetModels"})
    assert validate_command({"commandName": "GetModels"}) is first
    resume = validate_command({"commandName": "ResumeTask", "data": "t9"})
    assert isinstance(resume, ResumeTask) and resume.data == "t9"
    for bad in ({"commandName": "Bogus"}, {"commandName": "ResumeTask"}, {"commandName": 5}):
        with pytest.raises(ValidationError):
            validate_command(bad)
    with pytest.raises(ValidationError):  # a failure is not remembered as a success
        validate_command({"commandName": "Bogus"})


# ------------------------------------------------------------------------ the bridge, end to end


async def test_a_burst_in_one_read_is_published_in_order_and_buffered(sockdir: Path) -> None:
    go = asyncio.Event()
    count = 500

    async def script(conn: HostConn, index: int) -> None:
        await conn.send(ack("gggggggggggg"))
        await go.wait()
        burst = [frame("taskCreated", "t1")]
        burst += [
            frame("message", {"taskId": "t1", "message": {"ts": i, "text": str(i)}}) for i in range(count)
        ]
        await conn.send(b"".join(burst) + frame("taskIdle", "t1"))
        await conn.closed.wait()

    async with (
        FakeHost(sockdir / "h.sock", script) as fake,
        inproc_bridge(sockdir) as (_bridge, client),
    ):
        await client.attach("w1", str(fake.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(lambda e: e.msg_type == "slot_up")
            go.set()
            await stream.wait(named("taskIdle", "t1"))
            assert_contiguous(stream.events)
            texts = [
                e.raw["event"]["payload"][0]["message"]["text"]
                for e in stream.events
                if e.event_name == "message"
            ]
            assert texts == [str(i) for i in range(count)]
            reply, replayed = await client.snapshot("w1", 0)
            assert reply.complete and [e.seq for e in replayed] == [e.seq for e in stream.events]
            assert [e.raw for e in replayed] == [e.raw for e in stream.events]
            assert all(e.task_id == "t1" for e in stream.events[1:])
        finally:
            await stream.close()


def test_replay_buffer_entries_leave_the_garbage_collector() -> None:
    """A full buffer must not add to every full collection's work (see replay_buffer.py)."""
    buf = ReplayBuffer(max_events=1000, max_bytes=10**9)
    for seq in range(1, 1001):
        buf.append(seq, (b"topic", b"sig", b"h", b"p", b"c"))
    gc.collect()
    tracked = sum(gc.is_tracked(entry) for entry in buf._events)
    assert tracked == 0
    events, complete, more = buf.since(995, last_seq=1000, limit=10)
    assert [e.seq for e in events] == [996, 997, 998, 999, 1000] and complete and not more
    assert events[0].frames == (b"topic", b"sig", b"h", b"p", b"c") and events[0].size >= 11


# ------------------------------------------------------------------------------- client events


def received(content: dict[str, Any], msg_type: str = "task_event") -> Event | None:
    """The event the client's stream makes of a signed message with ``content``."""
    session = Session(KEY)
    frames = [b"slot.w1.", DELIM, *session.serialize_event(msg_type, {"msg_id": "m1"}, content)]
    _, header, parent, parsed = Session(KEY).deserialize_parts(frames)
    return parse_event(header["msg_type"], header, parent, parsed, frames[0])


def test_task_events_get_their_model_only_when_asked() -> None:
    raw = task_event_content("w1", 7, "t1", {"eventName": "taskCreated", "payload": ["t1"]})
    ev = received(raw)
    assert isinstance(ev, Event)
    assert ev._content is None  # nothing typed yet
    assert (ev.slot, ev.seq, ev.task_id, ev.event_name, ev.parent_msg_id) == (
        "w1",
        7,
        "t1",
        "taskCreated",
        "m1",
    )
    assert ev.task_event().wire()["eventName"] == "taskCreated"
    content = ev.content
    assert isinstance(content, TaskEventContent) and content.model_dump() == raw
    assert ev.content is content  # built once


def test_odd_task_events_go_through_the_model_at_once() -> None:
    coerced = received({"slot": "w1", "seq": "8", "task_id": None, "event": {}})
    assert coerced is not None and coerced.seq == 8  # as pydantic reads it, as before
    assert received({"slot": "w1", "seq": "x", "task_id": None, "event": {}}) is None
    hugz = received({"slot": "w1", "seq": 3}, "hugz")
    assert hugz is not None and hugz.seq is None and hugz.raw["seq"] == 3
    with pytest.raises(TypeError):
        hugz.task_event()


# ---------------------------------------------------------------------------------- wire, zmq


def test_a_forked_child_cannot_use_the_parents_session() -> None:
    session = Session(KEY)
    session.serialize("heartbeat", {})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            session.serialize("heartbeat", {})
        except WireError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    session.serialize("heartbeat", {})  # the parent's own is unaffected


async def test_poke_drains_only_when_a_message_waits(sockdir: Path) -> None:
    ctx = zmq.asyncio.Context()
    endpoint = f"ipc://{sockdir}/poke.ipc"
    pull, push = plain_socket(ctx, zmq.PULL), plain_socket(ctx, zmq.PUSH)
    got: list[list[bytes]] = []
    arrived = asyncio.Event()

    def on_message(frames: list[bytes]) -> None:
        got.append(frames)
        arrived.set()

    reader = Reader(pull, on_message)
    try:
        pull.bind(endpoint)
        push.connect(endpoint)
        reader.start(asyncio.get_running_loop())
        await asyncio.sleep(0)  # the start's own drain
        reader.poke()
        assert not reader._pending  # nothing to read: no extra loop turn
        frames = [b"a", b"", b"c" * 10_000, random.randbytes(64)]
        send_frames(push, frames)
        assert pull.poll(5000)  # here now; this also consumed the FD's edge
        reader.poke()
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [frames]  # multipart, in one piece, empty frames kept
    finally:
        reader.stop()
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()


def test_hmac_signatures_match_the_standard_library() -> None:
    import hashlib
    import hmac

    parts = [orjson.dumps({"a": 1}), b"{}", b"x" * 1000]
    expected = hmac.new(KEY.encode(), b"".join(parts), hashlib.sha256).hexdigest().encode()
    assert Session(KEY).sign(parts) == expected


def test_frame_buffer_starts_small_and_grows_while_reads_fill_it() -> None:
    """A connection that carries a few events does not zero 256 KiB; a flood is read 256 KiB at a time."""
    buffer = FrameBuffer()
    assert len(buffer.get_buffer()) == FIRST_READ_SIZE
    stream = encode_frame({"x": "y" * 1000}) * 1000
    offered, pos, frames = [], 0, 0
    for _ in range(6):
        free = buffer.get_buffer()
        offered.append(len(free))
        free[:] = stream[pos : pos + len(free)]  # each read fills what it was offered
        free.release()
        frames += len(buffer.buffer_updated(offered[-1]))
        pos += offered[-1]
    assert offered[0] == FIRST_READ_SIZE and frames == pos // len(encode_frame({"x": "y" * 1000}))
    assert all(later >= 2 * earlier for earlier, later in itertools.pairwise(offered[:5]))
    assert offered[-1] >= READ_SIZE
