"""What workers use to talk to the bridge (asyncio): commands with replies, and ordered event streams.

* Commands go out on a DEALER (``IMMEDIATE=1``: nothing queues while the bridge is away) as Lazy Pirate
  requests: wait ``timeout``, resend with the *same* msg_id up to ``retries`` times, then raise
  :class:`BridgeTimeout`. The bridge replays its first reply to a repeated msg_id, so a retried
  StartNewTask never starts a second task. Error replies become typed exceptions.
* Events come in on a SUB. :meth:`BridgeClient.events` follows the Clone pattern: subscribe, wait for the
  bridge's welcome on that topic (no sleeps), take a snapshot, drop live events it already covered, then
  yield events in seq order. A seq gap (or a ``hugz`` showing a newer seq) is filled from the bridge's
  replay buffer; when the buffer no longer reaches back, :class:`EventGap` is raised: never a silent skip.
* A message from another bridge session means the bridge restarted: streams raise
  :class:`BridgeRestarted` and ``on_restart`` callbacks run.
* Liveness (:mod:`ipc_bridge.wire.liveness`): a ``heartbeat`` goes out whenever no other request did for
  ``heartbeat_interval``, so the bridge keeps this client's slots; and when nothing at all came from the
  bridge for ``liveness`` hugz intervals (the SUB always hears the ``bridge.`` hugz), pending requests
  and open streams raise :class:`BridgeLost`, and new requests fail at once until it is heard again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, TypeVar

import zmq
import zmq.asyncio
from pydantic import BaseModel

from ipc_bridge.client.bridge_watch import BridgeWatch
from ipc_bridge.client.event_stream import EventStreams, snapshot_events
from ipc_bridge.client.task_commands import TaskCommands
from ipc_bridge.client.types import (
    ERRORS,
    BridgeError,
    BridgeLost,
    BridgeRestarted,
    BridgeTimeout,
    CommandError,
    Event,
)
from ipc_bridge.wire.connection_file import ConnectionInfo, read_connection_file
from ipc_bridge.wire.curve import client_options
from ipc_bridge.wire.liveness import (
    DEFAULT_INTERVAL,
    DEFAULT_LIVENESS,
    MIN_TICK,
    Ticker,
    positive_float,
)
from ipc_bridge.wire.messages import (
    AttachReply,
    AttachRequest,
    DetachRequest,
    ErrorReply,
    HeartbeatReply,
    HeartbeatRequest,
    Reply,
    ShutdownReply,
    ShutdownRequest,
    SlotInfo,
    SlotsReply,
    SlotsRequest,
    SnapshotReply,
    SnapshotRequest,
    parse_reply,
)
from ipc_bridge.wire.session import BRIDGE_TOPIC, Header, Message, Session, WireError, slot_topic
from ipc_bridge.wire.zmq_loop import Reader, Sender, plain_socket

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)


# ------------------------------------------------------------------------------------------ client


class BridgeClient(TaskCommands):
    """Use :meth:`connect`. One client per process is plenty; it is not shared across processes.

    ``heartbeat_interval`` (None: no heartbeats) must stay well below the bridge's patience: the bridge
    detaches the slots of a client it has not heard from for ``liveness`` (bridge side, 3) intervals.
    ``liveness`` here is how many hugz intervals of silence make the bridge lost.
    """

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        ctx: zmq.asyncio.Context | None = None,
        timeout: float = 2.5,
        retries: int = 3,
        rcvhwm: int = 100_000,
        linger_ms: int = 1000,
        heartbeat_interval: float | None = DEFAULT_INTERVAL,
        liveness: int = DEFAULT_LIVENESS,
    ) -> None:
        self.info = info
        self.timeout = timeout
        self.retries = retries
        self.heartbeat_interval = heartbeat_interval
        self.session = Session(info.key, signature_scheme=info.signature_scheme)
        self.bridge_session: str | None = info.session
        self.on_restart: list[Callable[[BridgeRestarted], None]] = []
        self.on_lost: list[Callable[[BridgeLost], None]] = []
        hugz = positive_float(info.hugz_interval) or DEFAULT_INTERVAL
        self.watch = BridgeWatch(hugz, liveness)
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._linger = linger_ms
        security = client_options(info)  # CURVE keys for a tcp bridge (checked before any socket exists)
        # Plain sockets of the one context, driven from the loop: see zmq_loop.py.
        self._dealer = plain_socket(self._ctx, zmq.DEALER)
        self._sub = plain_socket(self._ctx, zmq.SUB)
        for sock in (self._dealer, self._sub):
            for option, value in security.items():
                sock.setsockopt(option, value)
            sock.linger = linger_ms
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self._dealer.setsockopt(zmq.IMMEDIATE, 1)
        self._sub.setsockopt(zmq.RCVHWM, rcvhwm)
        # The bridge-wide hugz: something to hear every interval even with no stream open.
        self._sub.subscribe(BRIDGE_TOPIC)
        self._dealer.connect(info.command_endpoint)
        self._sub.connect(info.event_endpoint)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._streams = EventStreams(self, self._sub, self._heard)
        self._streams.reader.start(asyncio.get_running_loop())
        self._last_sent = self._last_beat = float("-inf")
        self._announced_to: str | None = None  # the bridge session that has our heartbeat interval
        self._replies = Reader(self._dealer, self._on_reply)
        self._sender = Sender(self._replies)
        self._replies.start(asyncio.get_running_loop())
        self._readers = [
            asyncio.ensure_future(self._liveness_loop()),
        ]
        self._closed = False

    @classmethod
    async def connect(
        cls, connection: ConnectionInfo | str | os.PathLike[str], **kwargs: Any
    ) -> BridgeClient:
        """A client for the bridge described by a connection file (path) or its parsed contents."""
        info = (
            connection if isinstance(connection, ConnectionInfo) else read_connection_file(Path(connection))
        )
        return cls(info, **kwargs)

    @property
    def bridge_lost(self) -> BridgeLost | None:
        """Set while the bridge counts as lost (see :class:`BridgeLost`)."""
        return self.watch.lost

    async def close(self, linger_ms: int | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._streams.closed = True
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        closed = BridgeError("client closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(closed)
        self._streams.fail(closed)
        self._sender.fail(closed)
        self._streams.reader.stop()
        self._replies.stop()
        linger = self._linger if linger_ms is None else linger_ms
        self._dealer.close(linger=linger)
        self._sub.close(linger=linger)

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------ requests

    async def request_message(
        self,
        msg_type: str,
        content: BaseModel,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Message:
        """Send a request (Lazy Pirate) and return the raw reply message; raises on error replies, and
        :class:`BridgeLost` at once while the bridge is lost or as soon as it is while waiting."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        lost = self.watch.lost
        if lost is not None:
            raise lost
        msg_id = self.session.new_msg_id()
        try:
            for attempt in range(retries + 1):
                # Same msg_id, fresh date: the bridge dedups by msg_id, replay checks see a new signature.
                frames = self.session.serialize(msg_type, content, msg_id=msg_id)
                try:
                    reply = await self._attempt(msg_id, frames, timeout)
                    break
                except asyncio.TimeoutError:
                    log.info("%s %s: no reply in %g s (attempt %d)", msg_type, msg_id, timeout, attempt + 1)
            else:
                raise BridgeTimeout(f"{msg_type}: no reply after {retries + 1} attempts of {timeout:g} s")
        finally:
            self._pending.pop(msg_id, None)
        if reply.content.get("status") == "error":  # the ok reply is validated once, by the caller
            error = ErrorReply.model_validate(reply.content)
            raise ERRORS.get(error.error, CommandError)(error.error, error.reason, msg_type)
        return reply

    async def request(
        self,
        msg_type: str,
        content: BaseModel,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Reply:
        """Send a request and return its typed reply (``wire.REPLIES``); error replies raise."""
        reply = await self.request_message(msg_type, content, timeout=timeout, retries=retries)
        parsed = parse_reply(msg_type, reply.content)
        assert isinstance(parsed, Reply)
        return parsed

    async def _typed(self, cls: type[R], msg_type: str, content: BaseModel, **kwargs: Any) -> R:
        reply = await self.request_message(msg_type, content, **kwargs)
        return cls.model_validate(reply.content)

    async def _attempt(self, msg_id: str, frames: list[bytes], timeout: float) -> Message:
        """One try: the reply to ``msg_id`` (any try's), TimeoutError, or BridgeLost (from ``_on_lost``).

        Awaits the reply's future itself, with a timer: one loop turn from reply to caller, where a
        task and ``asyncio.wait`` around it took three."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        self._pending[msg_id] = fut  # a late reply to an earlier try settles this one: same request
        if not self._sender.try_send(frames):
            # No connection yet (IMMEDIATE) or a full queue: wait for the socket, within the timeout.
            return await self.watch.guard(self._send_and_wait(frames, fut), timeout)
        self._last_sent = loop.time()
        timer = loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _send_and_wait(self, frames: list[bytes], fut: asyncio.Future[Message]) -> Message:
        await self._sender.send(frames)
        self._last_sent = asyncio.get_running_loop().time()
        return await fut

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            msg = self.session.deserialize(frames)
        except WireError as exc:
            log.warning("dropped reply: %s", exc)
            return
        self._heard(msg.header)
        if msg.msg_type == "heartbeat_reply":
            self._on_heartbeat_reply(msg)
        fut = self._pending.get(msg.parent_msg_id or "")
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif msg.msg_type != "heartbeat_reply":  # background heartbeats are never awaited
            log.debug("reply to %s not awaited (late or duplicate)", msg.parent_msg_id)

    # ----------------------------------------------------------------------------------- liveness

    def _heartbeat_content(self) -> HeartbeatRequest:
        # ``interval`` tells the bridge how long this client may be silent (liveness x interval).
        return HeartbeatRequest(interval=self.heartbeat_interval)

    def _on_heartbeat_reply(self, msg: Message) -> None:
        if msg.content.get("status") != "ok":
            return
        self._announced_to = msg.header.session
        hugz = positive_float(HeartbeatReply.model_validate(msg.content).hugz_interval)
        if hugz is not None:
            self.watch.hugz_interval = hugz

    async def _liveness_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ticker = Ticker()
        while True:
            interval = self.heartbeat_interval
            tick = max(MIN_TICK, min(interval or float("inf"), self.watch.hugz_interval) / 4)
            now, stall = await ticker.sleep(tick)
            if stall:
                log.info("client loop stalled for %.1f s: not counted as bridge silence", stall)
                self.watch.credit(stall, now)
            if interval is not None and (
                now - self._last_sent >= interval
                # Until this bridge session has seen a heartbeat, it does not know our interval.
                or (self._announced_to != self.bridge_session and now - self._last_beat >= interval)
            ):
                self._last_sent = self._last_beat = loop.time()
                await self._beat(tick)
            # A safety net: an edge of a socket's FD may have been consumed unseen.
            self._streams.reader.kick()
            self._replies.kick()
            lost = self.watch.check(loop.time(), self.bridge_session)
            if lost is not None:
                self._on_lost(lost)

    async def _beat(self, timeout: float) -> None:
        """Fire and forget: the reply counts as traffic when it comes, and nothing waits for it."""
        frames = self.session.serialize("heartbeat", self._heartbeat_content())
        # With IMMEDIATE=1 and no connection a send blocks (or queues behind a blocked request):
        # skip this beat rather than delay the watch on the bridge.
        if not self._sender.try_send(frames):
            log.debug("heartbeat not sent: no connection to the bridge")

    def _on_lost(self, lost: BridgeLost) -> None:
        log.warning("%s", lost)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(lost)
        self._streams.fail(lost)
        for callback in self.on_lost:
            try:
                callback(lost)
            except Exception:
                log.exception("on_lost callback failed")

    def _heard(self, header: Header) -> None:
        """Any verified message from the bridge: it is alive (perhaps a new session: a restart)."""
        self._check_session(header)
        if self.watch.heard(asyncio.get_running_loop().time()):
            log.warning("bridge heard again (session %s)", header.session)

    # ------------------------------------------------------------------------------------ commands

    async def heartbeat(self, timeout: float | None = None) -> HeartbeatReply:
        """An explicit heartbeat; the reply also carries the bridge's ``hugz_interval`` and ``liveness``."""
        content = self._heartbeat_content()
        return await self._typed(HeartbeatReply, "heartbeat", content, timeout=timeout)

    async def attach(self, slot: str, socket_path: str, connect_timeout: float = 30.0) -> SlotInfo:
        req = AttachRequest(slot=slot, socket_path=socket_path, connect_timeout=connect_timeout)
        reply = await self._typed(AttachReply, "attach", req, timeout=connect_timeout + self.timeout)
        return reply.slot

    async def detach(self, slot: str) -> None:
        await self.request("detach", DetachRequest(slot=slot))

    async def slots(self) -> list[SlotInfo]:
        return (await self._typed(SlotsReply, "slots", SlotsRequest())).slots

    async def shutdown(self) -> ShutdownReply:
        return await self._typed(ShutdownReply, "shutdown", ShutdownRequest())

    # -------------------------------------------------------------------------------------- events

    async def snapshot(
        self, slot: str, since_seq: int | None = 0, limit: int = 10_000
    ) -> tuple[SnapshotReply, list[Event]]:
        """Buffered events of ``slot`` after ``since_seq`` (one page of at most ``limit``)."""
        msg = await self.request_message(
            "snapshot", SnapshotRequest(slot=slot, since_seq=since_seq, limit=limit)
        )
        return SnapshotReply.model_validate(msg.content), snapshot_events(self.session, msg)

    async def subscribe(self, slot: str, timeout: float | None = None) -> None:
        """Subscribe to every event of ``slot`` and return once the bridge has welcomed us."""
        await self._streams.subscribe(slot_topic(slot), timeout)  # the welcome matters to streams only

    async def unsubscribe(self, slot: str) -> None:
        self._streams.unsubscribe(slot_topic(slot))

    def events(self, slot: str, since_seq: int | None = None) -> AsyncGenerator[Event, None]:
        """Every sequenced event of ``slot`` with seq > ``since_seq`` (None: from now on), in order,
        without gaps. Raises :class:`EventGap`, :class:`BridgeRestarted` or :class:`BridgeLost` rather
        than skip events or wait forever."""
        return self._streams.events(slot, since_seq)

    async def wait_for(
        self,
        slot: str,
        predicate: Callable[[Event], bool],
        timeout: float,
        *,
        since_seq: int | None = None,
    ) -> Event:
        """The first event of ``slot`` (after ``since_seq``) matching ``predicate``; TimeoutError else."""
        return await asyncio.wait_for(self._streams.first(slot, predicate, since_seq), timeout)

    def _check_session(self, header: Header) -> None:
        if header.session == self.bridge_session:
            return
        restarted = BridgeRestarted(self.bridge_session, header.session)
        log.warning("%s", restarted)
        self.bridge_session = header.session
        self._streams.fail(restarted)
        for callback in self.on_restart:
            try:
                callback(restarted)
            except Exception:
                log.exception("on_restart callback failed")


def _expire(fut: asyncio.Future[Message]) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())
