"""The client's receive path (``EventStreams``) on real signed frames, driven message by message: what a
stream yields across gap fills when a whole drain arrives at once, what a gap fill asks the bridge for,
and that events built from the parsed parts (header and model on demand) hold what the eager parse gave
(``Session.deserialize`` + the content model) for every recorded host event.

The bridge's side is :class:`LogBridge`: the owner the streams use (the ``StreamOwner`` protocol that
``BridgeClient`` implements), with a replay log of signed frames and real ``snapshot`` replies
(serialised, signed, parsed back). The SUB socket is real but unconnected: messages are handed to the
reader's callback as a drain would."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import zmq

from ipc_bridge.client.bridge_watch import BridgeWatch
from ipc_bridge.client.event_stream import EventStreams
from ipc_bridge.client.types import Event, EventGap
from ipc_bridge.roo.events import parse_task_event
from ipc_bridge.wire.messages import HugzContent, SnapshotReply, TaskEventContent, encode_task_event
from ipc_bridge.wire.session import DELIM, Header, Session, slot_topic, task_topic
from tests.conftest import load_recording, recording_names

pytestmark = pytest.mark.timeout(60)

KEY = "k" * 64
SLOT = "w1"
TASK = "0194a0b2-aaaa-bbbb-cccc-ddddeeeeffff"
PARENT = {"msg_id": "req-1", "session": "c" * 32, "msg_type": "task_command", "version": "1.2", "date": ""}


class LogBridge:
    """The bridge as the streams see it: signs what it publishes, keeps it for ``snapshot``."""

    def __init__(self) -> None:
        self.wire = Session(KEY)
        self.session = Session(KEY)  # the client's
        self.bridge_session: str | None = self.wire.session
        self.timeout = 5.0
        self.retries = 0
        self.watch = BridgeWatch()
        self.log: dict[int, list[bytes]] = {}  # seq -> [topic, DELIM, sig, header, parent, content]
        self.first_kept = 1
        self.snapshots: list[tuple[int | None, int]] = []  # (since_seq, limit) of each request

    def task_event(self, seq: int, event: bytes, task_id: str | None = TASK) -> list[bytes]:
        topic = task_topic(SLOT, task_id) if task_id else slot_topic(SLOT)
        content = encode_task_event(SLOT, seq, task_id, event)
        frames = [topic, DELIM, *self.wire.serialize_event("task_event", PARENT, content)]
        self.log[seq] = frames
        return frames

    def message(self, seq: int) -> list[bytes]:
        text = f"part {seq}"
        event = {"eventName": "message", "payload": [{"taskId": TASK, "message": {"text": text}}]}
        return self.task_event(seq, orjson.dumps(event))

    def hugz(self, seq: int) -> list[bytes]:
        content = HugzContent(slot=SLOT, seq=seq, state="up")
        return [slot_topic(SLOT), DELIM, *self.wire.serialize_event("hugz", None, content.model_dump())]

    def welcome(self, seq: int | None) -> list[bytes]:
        content = {"subscription": slot_topic(SLOT).decode(), "seq": seq}
        return [slot_topic(SLOT), DELIM, *self.wire.serialize_event("welcome", None, content)]

    @property
    def last_seq(self) -> int:
        return max(self.log, default=0)

    async def snapshot(
        self, slot: str, since_seq: int | None = 0, limit: int = 10_000
    ) -> tuple[SnapshotReply, list[Event]]:
        """A real ``snapshot_reply``: signed, its events as buffers, parsed back as the client does."""
        from ipc_bridge.client.event_stream import snapshot_events

        self.snapshots.append((since_seq, limit))
        since = since_seq or 0
        seqs = [s for s in sorted(self.log) if s > since and s >= self.first_kept]
        page = seqs[:limit] if since_seq is not None else []
        content = {
            "status": "ok",
            "slot": slot,
            "since_seq": since_seq,
            "first_seq": self.first_kept,
            "last_seq": self.last_seq,
            "count": len(page),
            "complete": since + 1 >= self.first_kept,
            "more": bool(page) and page[-1] < self.last_seq,
        }
        buffers = [f for s in page for f in (self.log[s][0], *self.log[s][2:])]
        reply = self.session.deserialize(self.wire.serialize("snapshot_reply", content, buffers=buffers))
        return SnapshotReply.model_validate(reply.content), snapshot_events(self.session, reply)


@pytest.fixture
async def streams() -> AsyncIterator[tuple[LogBridge, EventStreams]]:
    bridge = LogBridge()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    heard: list[Header] = []
    streams = EventStreams(bridge, sub, heard.append)
    streams.reader.start(asyncio.get_running_loop())
    try:
        yield bridge, streams
    finally:
        streams.closed = True
        streams.reader.stop()
        sub.close(linger=0)
        ctx.term()


class Reading:
    """``streams.events(SLOT, since_seq)`` read in the background into ``events``."""

    def __init__(self, streams: EventStreams, since_seq: int | None) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._gen = streams.events(SLOT, since_seq)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for event in self._gen:
                self.events.append(event)
        except Exception as exc:
            self.error = exc

    async def until(self, count: int) -> list[Event]:
        """Once ``count`` events (or an error) are in: the stream's state, never a sleep."""
        for _ in range(10_000):
            if len(self.events) >= count or self.error is not None:
                break
            await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        assert len(self.events) >= count, f"{len(self.events)} events, wanted {count}"
        return self.events

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._gen.aclose()


@contextlib.asynccontextmanager
async def reading(streams: EventStreams, bridge: LogBridge, welcomed_at: int) -> AsyncIterator[Reading]:
    """A stream from ``welcomed_at``, welcomed (its own subscription) at that seq."""
    stream = Reading(streams, since_seq=welcomed_at)
    try:
        for _ in range(10_000):  # until its subscription waits for the welcome
            if streams._welcomes:
                break
            await asyncio.sleep(0)
        streams._on_frames(bridge.welcome(welcomed_at))
        yield stream
    finally:
        await stream.close()


def drain(streams: EventStreams, messages: list[list[bytes]]) -> None:
    """Messages arriving in one drain of the SUB, as the reader hands them over."""
    for frames in messages:
        streams._on_frames(frames)
    streams._after_drain()


# ------------------------------------------------------------------------------------------- gaps


async def test_one_drain_across_two_gaps_keeps_order_and_fetches_only_the_missing_events(
    streams: tuple[LogBridge, EventStreams], caplog: pytest.LogCaptureFixture
) -> None:
    bridge, s = streams
    caplog.set_level(logging.INFO, logger="ipc_bridge.client.event_stream")
    published = {seq: bridge.message(seq) for seq in range(1, 13)}
    live = [published[seq] for seq in (1, 2, 6, 7, 8)]  # 3-5 lost
    live.append(bridge.hugz(10))  # 9 and 10 lost: the hugz says the slot is at 10
    live += [published[11], published[12]]
    async with reading(s, bridge, welcomed_at=0) as stream:
        drain(s, live)
        events = await stream.until(12)
        assert [e.seq for e in events] == list(range(1, 13))
        # Each fill asked for what was missing and no more: later events were on their way live.
        assert bridge.snapshots == [(2, 3), (8, 2)]
        assert sum("gap after seq" in r.getMessage() for r in caplog.records) == 2
        # Live events are yielded as received, the fills as replayed: the same values either way.
        texts = [e.raw["event"]["payload"][0]["message"]["text"] for e in events]
        assert texts == [f"part {seq}" for seq in range(1, 13)]


async def test_a_stream_behind_the_replay_buffer_raises_event_gap(
    streams: tuple[LogBridge, EventStreams],
) -> None:
    bridge, s = streams
    published = {seq: bridge.message(seq) for seq in range(1, 8)}
    bridge.first_kept = 5  # 2-4 evicted
    async with reading(s, bridge, welcomed_at=0) as stream:
        drain(s, [published[1], published[6]])
        with pytest.raises(EventGap) as err:
            await stream.until(3)
        assert (err.value.expected, err.value.available) == (2, 5)
        assert [e.seq for e in stream.events] == [1]


async def test_a_large_gap_is_filled_page_by_page_up_to_the_live_event(
    streams: tuple[LogBridge, EventStreams], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ipc_bridge.client.event_stream as event_stream

    monkeypatch.setattr(event_stream, "SNAPSHOT_PAGE", 4)
    bridge, s = streams
    published = {seq: bridge.message(seq) for seq in range(1, 13)}
    async with reading(s, bridge, welcomed_at=0) as stream:
        drain(s, [published[1], published[11], published[12]])
        events = await stream.until(12)
        assert [e.seq for e in events] == list(range(1, 13))
        assert bridge.snapshots == [(1, 4), (5, 4), (9, 1)]


async def test_a_malformed_header_is_dropped_on_arrival(
    streams: tuple[LogBridge, EventStreams], caplog: pytest.LogCaptureFixture
) -> None:
    bridge, s = streams
    good = bridge.message(1)
    header = orjson.loads(good[3])
    del header["date"]
    parts = [orjson.dumps(header), good[4], bridge.message(2)[5]]
    bad = [good[0], DELIM, bridge.wire.sign(parts), *parts]  # signed: only its header is wrong
    async with reading(s, bridge, welcomed_at=0) as stream:
        drain(s, [good, bad, bridge.message(2)])
        events = await stream.until(2)
        assert [e.seq for e in events] == [1, 2]
        assert events[1].header.date  # the one that came intact
    assert any("header lacks 'date'" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ lazy


def recorded_events() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in recording_names():
        for row in load_recording(name):
            msg = row["msg"]
            if row["dir"] == "in" and msg.get("type") == "TaskEvent":
                yield name, msg["data"]


def eager(session: Session, frames: list[bytes]) -> Event:
    """The event as parsed before the receive path went lazy: a Message, then the content model."""
    msg = session.deserialize(frames, check_replay=False)
    content = TaskEventContent.model_validate(msg.content)
    return Event(msg.msg_type, msg.header, msg.parent, content, msg.topic)


def assert_same(lazy: Event, want: Event) -> None:
    assert lazy.msg_type == want.msg_type
    assert (lazy.seq, lazy.slot, lazy.task_id, lazy.event_name) == (
        want.seq,
        want.slot,
        want.task_id,
        want.event_name,
    )
    assert lazy.raw == want.raw
    assert lazy.parent == want.parent and lazy.parent_msg_id == want.parent_msg_id
    assert lazy.topic == want.topic
    assert lazy.session == want.header.session
    assert lazy.header == want.header
    assert lazy.content == want.content
    assert lazy.task_event() == want.task_event() == parse_task_event(want.raw["event"])


async def test_events_built_on_demand_equal_the_eager_parse_for_every_recording(
    streams: tuple[LogBridge, EventStreams],
) -> None:
    bridge, s = streams
    recorded = list(recorded_events())
    assert len({name for name, _ in recorded}) >= 15, "recordings missing"
    published = []
    for seq, (_, recorded_event) in enumerate(recorded, start=1):
        payload = recorded_event["payload"]
        task_id = payload[0] if recorded_event["eventName"] == "taskCreated" else TASK
        assert isinstance(task_id, str)
        published.append(bridge.task_event(seq, orjson.dumps(recorded_event), task_id))
    checker = Session(KEY)
    async with reading(s, bridge, welcomed_at=0) as stream:
        drain(s, published)
        live = await stream.until(len(published))
    for (name, _), event, frames in zip(recorded, live, published, strict=True):
        try:
            assert_same(event, eager(checker, frames))
        except AssertionError as exc:
            raise AssertionError(f"{name}, seq {event.seq}: {exc}") from None
    # The same through a snapshot reply (a gap fill, a late subscriber).
    _, replayed = await bridge.snapshot(SLOT, 0)
    assert len(replayed) == len(published)
    for replayed_event, frames in zip(replayed, published, strict=True):
        assert_same(replayed_event, eager(checker, frames))
