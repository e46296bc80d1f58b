"""The client's subscriptions and ordered per-slot event streams (the Clone pattern, wire-format §6).

:meth:`EventStreams.events` subscribes, waits for the bridge's welcome on that topic (no sleeps), takes a
snapshot, drops live events it already covered, then yields events in seq order. A seq gap (or a
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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, cast

import zmq
from pydantic import ValidationError

from .client_types import BridgeError, BridgeRestarted, BridgeTimeout, Event, EventGap, UnknownSlot
from .wire import (
    EVENTS,
    Content,
    Header,
    Message,
    Session,
    WelcomeContent,
    WireError,
    slot_topic,
    split_snapshot_buffers,
)
from .zmq_loop import Reader

if TYPE_CHECKING:
    from .client import BridgeClient

log = logging.getLogger(__name__)

_Item = Event | BridgeError
"""What a stream's queue holds: events, or the error that ends the stream."""


def parse_event(msg: Message) -> Event | None:
    """The typed event (``wire.EVENTS``; unknown types keep a generic content); None if malformed."""
    model = EVENTS.get(msg.msg_type, Content)
    try:
        content = model.model_validate(msg.content)
    except ValidationError as exc:
        log.warning("dropped %s event: %s", msg.msg_type, exc)
        return None
    return Event(msg.msg_type, msg.header, msg.parent, content, msg.topic)


def snapshot_events(session: Session, reply: Message) -> list[Event]:
    """The events carried as buffers by a ``snapshot`` reply, signatures verified."""
    events = []
    for frames in split_snapshot_buffers(reply.buffers):
        # Seen live already, perhaps: verify the signature but not against the replay history.
        event = parse_event(session.deserialize(frames, check_replay=False))
        if event is not None:
            events.append(event)
    return events


class EventStreams:
    """Owned by one :class:`~ipc_bridge.client.BridgeClient`; uses its SUB socket and its requests."""

    def __init__(self, client: BridgeClient, sub: zmq.Socket[bytes], heard: Callable[[Header], None]) -> None:
        self._client = client
        self._sub = sub
        self._heard = heard
        self.reader = Reader(sub, self._on_frames)
        self._welcomes: dict[bytes, asyncio.Future[None]] = {}
        self._sub_counts: dict[bytes, int] = {}  # setsockopt(SUBSCRIBE) calls per topic
        self._users: dict[bytes, int] = {}  # streams (or subscribe() calls) using each topic
        self._listeners: dict[str, list[asyncio.Queue[_Item]]] = {}
        self.closed = False

    # -------------------------------------------------------------------------------------- reading

    def _on_frames(self, frames: list[bytes]) -> None:
        try:
            msg = self._client.session.deserialize(frames)
        except WireError as exc:
            log.warning("dropped event: %s", exc)
            return
        self._heard(msg.header)
        event = parse_event(msg)
        if event is not None:
            self.dispatch(event)

    # ------------------------------------------------------------------------------- subscriptions

    async def subscribe(self, topic: bytes, timeout: float | None) -> None:
        """Subscribe to ``topic`` and return once the bridge has welcomed us (BridgeLost if it is lost)."""
        client = self._client
        timeout = client.timeout if timeout is None else timeout
        self._users[topic] = self._users.get(topic, 0) + 1
        welcome = self._welcomes.get(topic)
        if welcome is None:
            welcome = self._welcomes[topic] = asyncio.get_running_loop().create_future()
        try:
            for _ in range(client.retries + 1):
                if welcome.done():
                    return
                # XPUB_VERBOSE makes the bridge see (and welcome) every repeat of a subscription.
                self._sub.subscribe(topic)
                self.reader.kick()
                self._sub_counts[topic] = self._sub_counts.get(topic, 0) + 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await client.watch.guard(asyncio.shield(welcome), timeout)
            if not welcome.done():
                raise BridgeTimeout(f"no welcome for {topic.decode()} after {client.retries + 1} tries")
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
        if isinstance(event.content, WelcomeContent):
            welcome = self._welcomes.get(event.content.subscription.encode())
            if welcome is not None and not welcome.done():
                welcome.set_result(None)
            return
        for queue in self._listeners.get(event.slot or "", ()):
            queue.put_nowait(event)

    def fail(self, error: BridgeError) -> None:
        """End every open stream with ``error``."""
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(error)

    # -------------------------------------------------------------------------------------- streams

    async def events(self, slot: str, since_seq: int | None = None) -> AsyncGenerator[Event, None]:
        """See :meth:`ipc_bridge.client.BridgeClient.events`."""
        client = self._client
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._listeners.setdefault(slot, []).append(queue)
        topic = slot_topic(slot)
        subscribed = False
        try:
            await self.subscribe(topic, None)
            subscribed = True
            if since_seq is None:
                try:
                    last = (await client.snapshot(slot, None))[0].last_seq
                except UnknownSlot:
                    last = 0  # not attached yet: its first event will be seq 1
            else:
                last = since_seq
                with contextlib.suppress(UnknownSlot):  # not attached yet: nothing to replay
                    async for event in self._replay(slot, last):
                        last = cast(int, event.seq)
                        yield event
            while True:
                item = await queue.get()
                if isinstance(item, BridgeError):
                    raise item
                seq = getattr(item.content, "seq", None) if item.msg_type == "hugz" else item.seq
                if not isinstance(seq, int) or seq <= last:
                    continue
                if item.msg_type == "hugz" or seq > last + 1:
                    log.info("slot %s: gap after seq %d (saw %d), filling from the bridge", slot, last, seq)
                    async for event in self._replay(slot, last):
                        last = cast(int, event.seq)
                        yield event
                    if seq <= last or item.msg_type == "hugz":
                        continue
                    if seq > last + 1:
                        raise EventGap(slot, last + 1, seq)
                last = seq
                yield item
        finally:
            self._listeners[slot].remove(queue)
            if not self._listeners[slot]:
                del self._listeners[slot]
            if subscribed:
                self.unsubscribe(topic)

    async def _replay(self, slot: str, since: int) -> AsyncIterator[Event]:
        client = self._client
        while True:
            reply, events = await client.snapshot(slot, since)
            if not reply.complete:
                raise EventGap(slot, since + 1, reply.first_seq)
            for event in events:
                if event.header.session != client.bridge_session:
                    raise BridgeRestarted(client.bridge_session, event.header.session)
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
