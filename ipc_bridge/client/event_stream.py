"""The client's subscriptions and ordered per-slot event streams (the Clone pattern, wire-format §6).

:meth:`EventStreams.events` subscribes, waits for the bridge's welcome on that topic (no sleeps), takes a
snapshot (unless its own welcome says the slot has published nothing it has not seen: every later event
follows the welcome), drops live events it already covered, then yields events in seq order. A seq gap (or a
``hugz`` showing a newer seq) is filled from the bridge's replay buffer; when the buffer no longer
reaches back, :class:`EventGap` is raised: never a silent skip. Errors that end every stream (restart,
bridge lost, client closed) are pushed into each stream's queue by the client.

The SUB is a plain socket read by a :class:`~.zmq_loop.Reader`; a (un)subscribe can consume its FD's
edge, so each one kicks the reader, and so does the client's liveness tick, as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol, cast

import zmq
from pydantic import ValidationError

from ipc_bridge.client.bridge_watch import BridgeWatch
from ipc_bridge.client.types import (
    BridgeError,
    BridgeRestarted,
    BridgeTimeout,
    Event,
    EventGap,
    UnknownSlot,
    task_event_shape_ok,
)
from ipc_bridge.wire.messages import EVENTS, Content, SnapshotReply, WelcomeContent
from ipc_bridge.wire.session import Header, Message, Session, WireError, slot_topic, split_snapshot_buffers
from ipc_bridge.wire.zmq_loop import Reader

log = logging.getLogger(__name__)

SNAPSHOT_PAGE = 10_000
"""Events asked for per ``snapshot`` request when filling a stream (the bridge also caps a reply's bytes)."""

_Item = Event | BridgeError
"""What a stream's inbox holds: events, or the error that ends the stream."""


class _Inbox:
    """An unbounded FIFO with one consumer: ``asyncio.Queue`` without its bookkeeping (task_done,
    maxsize, getter lists), which cost about a microsecond per event on both sides."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[_Item] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: _Item) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is in (returns at once if something is)."""
        if self.items:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


def parse_event(
    msg_type: str, header: dict[str, Any], parent: dict[str, Any], content: dict[str, Any], topic: bytes
) -> Event | None:
    """The event of a message as parsed (``Session.deserialize_parts``): its content validated with
    its model (``wire.EVENTS``; unknown types keep a generic content); None if malformed. A
    ``task_event`` of the bridge's shape skips the model until its ``content`` is asked for."""
    if msg_type == "task_event" and task_event_shape_ok(content):
        return Event.received(msg_type, header, parent, content, topic)
    model = EVENTS.get(msg_type, Content)
    try:
        validated = model.model_validate(content)
    except ValidationError as exc:
        log.warning("dropped %s event: %s", msg_type, exc)
        return None
    return Event(msg_type, Header.from_dict(header), parent, validated, topic)


def snapshot_events(session: Session, reply: Message) -> list[Event]:
    """The events carried as buffers by a ``snapshot`` reply, signatures verified."""
    events = []
    for frames in split_snapshot_buffers(reply.buffers):
        # Seen live already, perhaps: verify the signature but not against the replay history.
        _, header, parent, content = session.deserialize_parts(frames, check_replay=False)
        event = parse_event(header["msg_type"], header, parent, content, frames[0])
        if event is not None:
            events.append(event)
    return events


class StreamOwner(Protocol):
    """What :class:`EventStreams` uses of the client that owns it (a
    :class:`~ipc_bridge.client.bridge_client.BridgeClient`): named here so that the streams need not import
    the client, which imports them."""

    session: Session
    bridge_session: str | None
    timeout: float
    retries: int
    watch: BridgeWatch

    async def snapshot(
        self, slot: str, since_seq: int | None = 0, limit: int = 10_000
    ) -> tuple[SnapshotReply, list[Event]]: ...


class EventStreams:
    """Owned by one :class:`~ipc_bridge.client.bridge_client.BridgeClient`; uses its SUB socket and its requests."""

    def __init__(self, client: StreamOwner, sub: zmq.Socket[bytes], heard: Callable[[Header], None]) -> None:
        self._client = client
        self._sub = sub
        self._heard = heard
        self.reader = Reader(sub, self._on_frames)
        self.reader.on_drained = self._after_drain
        self._last_header: dict[str, Any] | None = None  # the last one heard, as parsed
        self._welcomes: dict[bytes, asyncio.Future[WelcomeContent]] = {}
        self._sub_counts: dict[bytes, int] = {}  # setsockopt(SUBSCRIBE) calls per topic
        self._users: dict[bytes, int] = {}  # streams (or subscribe() calls) using each topic
        self._listeners: dict[str, list[_Inbox]] = {}
        self.closed = False

    # -------------------------------------------------------------------------------------- reading

    def _on_frames(self, frames: list[bytes]) -> None:
        """One message from the SUB: verified and parsed, then to the streams of its slot (or to the
        welcome it settles). No :class:`Message` and no :class:`Header` per event: the event keeps the
        parsed header and builds its Header when asked (~5 us per event less)."""
        client = self._client
        try:
            delim, header, parent, content = client.session.deserialize_parts(frames)
        except WireError as exc:
            log.warning("dropped event: %s", exc)
            return
        if header["session"] != client.bridge_session:
            # A restart: the old session's streams end before this is dispatched.
            self._heard(Header.from_dict(header))
        self._last_header = header
        msg_type = header["msg_type"]
        topic = frames[0] if delim else b""
        if msg_type == "task_event" and task_event_shape_ok(content):  # the flood: straight through
            event = Event.received(msg_type, header, parent, content, topic)
            for inbox in self._listeners.get(content["slot"], ()):
                inbox.put(event)
            return
        parsed = parse_event(msg_type, header, parent, content, topic)
        if parsed is not None:
            self.dispatch(parsed)

    def _after_drain(self) -> None:
        # Hearing the bridge once per drain is enough for its liveness watch (~1 us per event less).
        header, self._last_header = self._last_header, None
        if header is not None:
            self._heard(Header.from_dict(header))

    # ------------------------------------------------------------------------------- subscriptions

    async def subscribe(self, topic: bytes, timeout: float | None) -> WelcomeContent | None:
        """Subscribe to ``topic`` and return once the bridge has welcomed us (BridgeLost if it is lost).
        Returns the welcome when it answered this call's own subscription (the topic had no other
        user): only then does everything published after it reach the caller."""
        client = self._client
        timeout = client.timeout if timeout is None else timeout
        self._users[topic] = self._users.get(topic, 0) + 1
        welcome = self._welcomes.get(topic)
        fresh = welcome is None
        if welcome is None:
            welcome = self._welcomes[topic] = asyncio.get_running_loop().create_future()
        try:
            for _ in range(client.retries + 1):
                if welcome.done():
                    return welcome.result() if fresh else None
                # XPUB_VERBOSE makes the bridge see (and welcome) every repeat of a subscription.
                self._sub.subscribe(topic)
                self.reader.kick()
                self._sub_counts[topic] = self._sub_counts.get(topic, 0) + 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await client.watch.guard(asyncio.shield(welcome), timeout)
            if not welcome.done():
                raise BridgeTimeout(f"no welcome for {topic.decode()} after {client.retries + 1} tries")
            return welcome.result() if fresh else None
        except BaseException:
            self.unsubscribe(topic)
            raise

    def unsubscribe(self, topic: bytes) -> None:
        self._users[topic] = self._users.get(topic, 1) - 1
        if self._users[topic] > 0:
            return
        del self._users[topic]
        self._welcomes.pop(topic, None)
        if not self.closed:
            for _ in range(self._sub_counts.pop(topic, 0)):
                self._sub.unsubscribe(topic)
            self.reader.kick()

    # ------------------------------------------------------------------------------------ dispatch

    def dispatch(self, event: Event) -> None:
        """An event from the SUB: settles a welcome, or goes to the streams of its slot."""
        if event.msg_type == "welcome" and isinstance(event.content, WelcomeContent):
            welcome = self._welcomes.get(event.content.subscription.encode())
            if welcome is not None and not welcome.done():
                welcome.set_result(event.content)
            return
        for inbox in self._listeners.get(event.slot or "", ()):
            inbox.put(event)

    def fail(self, error: BridgeError) -> None:
        """End every open stream with ``error``."""
        for inboxes in self._listeners.values():
            for inbox in inboxes:
                inbox.put(error)

    # -------------------------------------------------------------------------------------- streams

    async def events(self, slot: str, since_seq: int | None = None) -> AsyncGenerator[Event, None]:
        """See :meth:`ipc_bridge.client.bridge_client.BridgeClient.events`."""
        client = self._client
        inbox = _Inbox()
        items = inbox.items
        self._listeners.setdefault(slot, []).append(inbox)
        topic = slot_topic(slot)
        subscribed = False
        try:
            welcome = await self.subscribe(topic, None)
            subscribed = True
            welcomed = welcome.seq if welcome is not None else None  # every later event follows it
            if since_seq is None:
                if welcomed is not None:
                    last = welcomed
                else:
                    try:
                        last = (await client.snapshot(slot, None))[0].last_seq
                    except UnknownSlot:
                        last = 0  # not attached yet: its first event will be seq 1
            elif welcomed is not None and welcomed <= since_seq:
                last = since_seq  # nothing published that this stream has not seen or will not get
            else:
                last = since_seq
                with contextlib.suppress(UnknownSlot):  # not attached yet: nothing to replay
                    async for event in self._replay(slot, last):
                        last = cast(int, event.seq)
                        yield event
            while True:
                if not items:
                    await inbox.wait()
                item = items.popleft()
                if isinstance(item, BridgeError):
                    raise item
                seq = getattr(item.content, "seq", None) if item.msg_type == "hugz" else item.seq
                if not isinstance(seq, int) or seq <= last:
                    continue
                if item.msg_type == "hugz" or seq > last + 1:
                    log.info("slot %s: gap after seq %d (saw %d), filling from the bridge", slot, last, seq)
                    # Only what is missing: up to this event (or the hugz's seq, the last published
                    # before it). Later events are on their way live; fetching them too would parse
                    # them twice and drop the live copies (and fall further behind in a flood).
                    until = seq if item.msg_type == "hugz" else seq - 1
                    async for event in self._replay(slot, last, until):
                        last = cast(int, event.seq)
                        yield event
                    if seq <= last or item.msg_type == "hugz":
                        continue
                    if seq > last + 1:
                        raise EventGap(slot, last + 1, seq)
                last = seq
                yield item
        finally:
            self._listeners[slot].remove(inbox)
            if not self._listeners[slot]:
                del self._listeners[slot]
            if subscribed:
                self.unsubscribe(topic)

    async def _replay(self, slot: str, since: int, until: int | None = None) -> AsyncIterator[Event]:
        """The slot's events after ``since`` from the bridge's replay buffer, up to ``until`` (None:
        all it holds), in pages."""
        client = self._client
        while until is None or since < until:
            limit = SNAPSHOT_PAGE if until is None else min(SNAPSHOT_PAGE, until - since)
            reply, events = await client.snapshot(slot, since, limit)
            if not reply.complete:
                raise EventGap(slot, since + 1, reply.first_seq)
            for event in events:
                if event.session != client.bridge_session:
                    raise BridgeRestarted(client.bridge_session, event.session)
                if event.seq != since + 1:
                    raise EventGap(slot, since + 1, event.seq or 0)
                since += 1
                yield event
            if not reply.more or not events:
                return

    async def first(self, slot: str, predicate: Callable[[Event], bool], since_seq: int | None) -> Event:
        """The first event of ``slot`` after ``since_seq`` that matches ``predicate``."""
        async with contextlib.aclosing(self.events(slot, since_seq)) as stream:
            async for event in stream:
                if predicate(event):
                    return event
        raise BridgeError("event stream ended")  # pragma: no cover - events() never ends by itself
