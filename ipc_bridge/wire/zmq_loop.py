"""Plain (non-asyncio) ZeroMQ sockets driven from an asyncio loop: the bridge's and the client's hot paths.

A ``zmq.asyncio`` recv costs about three times a ``NOBLOCK`` drain, and a ``zmq.asyncio`` send on a
socket with a pending recv does a ``getsockopt(EVENTS)`` after every message. Here a socket gets a
:class:`Reader`: a loop reader on its FD that drains it with ``NOBLOCK`` and hands every message to a
callback, at most :data:`DRAIN_LIMIT` per loop turn (a flood must not starve other tasks). ZeroMQ's FD
is edge-triggered and *any* operation on the socket (a send, a subscribe) can consume the edge, so the
owner calls :meth:`Reader.kick` after such operations: one more drain on the next loop turn.

The flags are plain ints: pyzmq's flag enums cost about 1 us per ``|`` (``send_multipart`` and
``recv_multipart`` do one per frame), a large share of a 6-frame message. Frames are sent and received
with the methods of pyzmq's compiled base class (:data:`raw_send`, :data:`raw_recv`), which skip the
Python layer's argument handling: half the cost per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import zmq
import zmq.backend

from ipc_bridge.log_limits import RateLimitedLog

log = logging.getLogger(__name__)

DRAIN_LIMIT = 128
"""Messages handled per loop turn and socket."""

MORE = int(zmq.SNDMORE | zmq.DONTWAIT)
LAST = int(zmq.DONTWAIT)
NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)

raw_send = zmq.backend.Socket.send
"""``raw_send(sock, frame, flags)``: ``sock.send`` without pyzmq's Python wrapper (no routing_id/group)."""
raw_recv = zmq.backend.Socket.recv
raw_get = zmq.backend.Socket.get


def plain_socket(ctx: zmq.Context[Any], socket_type: int) -> zmq.Socket[bytes]:
    """A plain socket of ``ctx`` (an asyncio context too): one context per process."""
    return zmq.Context.shadow(ctx.underlying).socket(socket_type)


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[bytes]) -> None:
    """``send_multipart(frames, DONTWAIT)`` at a third of the cost. Raises ``zmq.Again`` (nothing
    sent) when the socket cannot take the message now."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        raw_send(sock, frame, MORE if i < last else LAST)


def writable(sock: zmq.Socket[bytes]) -> bool:
    return bool(cast(int, raw_get(sock, _EVENTS)) & _POLLOUT)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """A message waits (this also processes libzmq's pending commands, and so consumes the FD's edge)."""
    return bool(cast(int, raw_get(sock, _EVENTS)) & _POLLIN)


@dataclass(frozen=True)
class MessageLimit:
    """Bounds on one whole incoming message. ZeroMQ's ``MAXMSGSIZE`` bounds each frame only, so a
    message of many large frames passes it; the reader counts while it receives, and drops the rest of
    a message over either bound frame by frame, never copying it out of libzmq (which has already
    received it whole: a multipart message is delivered only once complete)."""

    max_bytes: int
    max_frames: int
    on_dropped: Callable[[int, int], None]
    """Called with ``(frames, bytes)`` of each dropped message."""


class Reader:
    """Calls ``on_message(frames)`` for every message arriving on ``sock``, from the loop."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        on_message: Callable[[list[bytes]], None],
        limit: MessageLimit | None = None,
    ) -> None:
        self.sock = sock
        self._on_message = on_message
        self._limit = limit
        self._log = RateLimitedLog(log)  # a peer decides how often these happen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self.on_drained: Callable[[], None] | None = None
        """Called after every drain: a hook for work that waits for the socket, e.g. blocked sends."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.FD, self._drain)
        self.kick()  # messages may have come in before the reader existed

    def stop(self) -> None:
        """Before closing the socket."""
        if self._loop is not None and not self.sock.closed:
            self._loop.remove_reader(self.sock.FD)
        self._loop = None

    def kick(self) -> None:
        """Drain on the next loop turn (at most one such call is pending)."""
        if not self._pending and self._loop is not None:
            self._pending = True
            self._loop.call_soon(self._drain)

    def poke(self) -> None:
        """:meth:`kick` only if a message waits: what to call after a send. Asking costs a fraction
        of the loop turn that a kick costs, and a send usually leaves nothing to read."""
        if not self._pending and self._loop is not None and not self.sock.closed and readable(self.sock):
            self.kick()

    def _drain(self) -> None:
        self._pending = False
        sock = self.sock
        if self._loop is None or sock.closed:
            return
        recv = raw_recv
        if not readable(sock):  # often so for kicks: cheaper than an exception
            self._after()
            return
        try:
            for i in range(DRAIN_LIMIT):
                # Frames, not bytes: a Frame knows whether more follow, where asking the socket
                # (``get(RCVMORE)``) costs ~1 us a frame (an enum lookup of the option in pyzmq).
                frame = recv(sock, NOBLOCK, False)  # zmq.Again when empty
                if self._limit is not None:
                    frames = self._bounded(frame)
                else:
                    frames = [frame.bytes]
                    while frame.more:
                        frame = recv(sock, NOBLOCK, False)
                        frames.append(frame.bytes)
                try:
                    if frames is not None:
                        self._on_message(frames)
                except Exception:  # one bad message must not stop the reading
                    self._log.exception("message not handled")
                # A request or a reply usually comes alone: asking is cheaper than zmq.Again (~3 us).
                # In a burst, Again ends the drain once, which is cheaper than asking every time.
                if i == 0 and not readable(sock):
                    break
            else:
                self.kick()  # the limit, not an empty socket: go on after the others had a turn
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:
            self._log.warning("receive failed: %s", exc)
        self._after()

    def _bounded(self, frame: Any) -> list[bytes] | None:
        """The message that starts with ``frame``, or None (and ``on_dropped``) when it is over the
        limit: its frames are counted and released one by one, none copied."""
        limit = self._limit
        assert limit is not None
        count, size = 1, len(frame)
        frames: list[bytes] | None = [frame.bytes] if size <= limit.max_bytes else None
        while frame.more:
            frame = raw_recv(self.sock, NOBLOCK, False)
            count += 1
            size += len(frame)
            if frames is not None:
                if size > limit.max_bytes or count > limit.max_frames:
                    frames = None  # what was copied goes now, the rest is never copied
                else:
                    frames.append(frame.bytes)
        if frames is None:
            limit.on_dropped(count, size)
        return frames

    def _after(self) -> None:
        if self.on_drained is not None:
            self.on_drained()


class Sender:
    """In-order sends on a plain socket that may refuse a message for now (``zmq.Again``: a DEALER with
    ``IMMEDIATE`` and no connection, or a full queue). Refused messages wait, and go out when the
    socket's reader next drains (the FD's edge also signals writability)."""

    def __init__(self, reader: Reader) -> None:
        self.sock = reader.sock
        self._reader = reader
        self._blocked: deque[tuple[Sequence[bytes], asyncio.Future[None]]] = deque()
        reader.on_drained = self.flush

    def try_send(self, frames: Sequence[bytes]) -> bool:
        """Send now or not at all (heartbeats: a beat that cannot go now is skipped)."""
        if self._blocked:
            return False
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            # A full drain: that also runs ``flush`` should the socket have become writable meanwhile.
            self._reader.kick()
            return False
        # The send may have consumed the FD's edge. Nothing waits for writability (no blocked
        # messages), so only a message to read matters.
        self._reader.poke()
        return True

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send, waiting while the socket refuses; cancelling the wait withdraws the message."""
        if self.try_send(frames):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (frames, fut)
        self._blocked.append(entry)
        try:
            await fut
        finally:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._blocked.remove(entry)

    def flush(self) -> None:
        blocked = self._blocked
        while blocked:
            frames, fut = blocked[0]
            if fut.done():
                blocked.popleft()
                continue
            try:
                send_frames(self.sock, frames)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)
            blocked.popleft()

    def fail(self, exc: BaseException) -> None:
        while self._blocked:
            _, fut = self._blocked.popleft()
            if not fut.done():
                fut.set_exception(exc)
