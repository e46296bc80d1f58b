"""An asyncio connection to one extension host's node-ipc socket (the client side, like Roo's IpcClient).

The extension only listens after it activates, seconds after its window opens, so :func:`connect`
retries ENOENT/ECONNREFUSED every 500 ms (node-ipc's own retry) up to a deadline. The server speaks
first with an Ack; its clientId goes into every command (without it the extension drops the command
silently). Frames that are not valid IpcMessages are logged, counted and skipped, never fatal; the log
lines are rate-limited (a broken host can send nothing else), the counts in :class:`ConnectionStats` are
exact.

The socket is read by an ``asyncio.BufferedProtocol`` into one reusable buffer (:class:`FrameBuffer`).
Messages are then either read one at a time (:meth:`ExtensionConnection.recv`), or, for the bridge,
handed over a whole socket read at a time in one synchronous call (:meth:`ExtensionConnection.deliver`):
no coroutine, future or loop turn per frame, and the bridge publishes a read's events together.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ipc_bridge.log_limits import RateLimitedLog, sample
from ipc_bridge.roo.events import TaskEvent
from ipc_bridge.roo.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    READ_SIZE,
    FrameBuffer,
    decode_frame,
    encode_frame,
    split_task_event,
)
from ipc_bridge.roo.protocol import (
    AckMessage,
    IpcMessage,
    TaskEventMessage,
    command_message,
    parse_ipc_message,
)
from ipc_bridge.roo.shapes import Ack, ProtocolError, WireModel

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5
PAUSE_BYTES = 2 * READ_SIZE
"""Pull mode: above this many bytes of frames received and not yet read, reading the socket pauses..."""
RESUME_BYTES = READ_SIZE
"""...until they are down to this many."""
_RETRYABLE = (errno.ENOENT, errno.ECONNREFUSED)
_NAME_ONLY = frozenset({"commandName"})

Delivered = tuple[Any, "bytes | None"]
"""One message handed to :meth:`ExtensionConnection.deliver`'s handler: ``(task_event, its_bytes)`` for
a TaskEvent frame written as Roo writes it (the event's bytes exactly as the host wrote them, see
:func:`~.framing.split_task_event`), else ``(ipc_message, None)`` (the frame's ``data``)."""


class ExtensionError(Exception):
    """Base of the errors of this module."""


class ConnectTimeout(ExtensionError):
    """No extension answered (socket + Ack) on the path before the deadline."""


class AckTimeout(ConnectTimeout):
    """Something accepted the connection but sent no Ack in time (not a Roo host, or a hung one)."""


class Disconnected(ExtensionError):
    """The extension host closed the socket."""


@dataclass
class ConnectionStats:
    """Counts of one connection, or of several when passed to each (a slot keeps one for its life)."""

    frames_in: int = 0
    frames_out: int = 0
    bad_frames: int = 0
    """Frames skipped as not JSON / not a node-ipc message (kind ``frame``) or not an IpcMessage
    (kind ``message``, :meth:`ExtensionConnection.recv` only): see ``errors_by_kind``."""
    oversized_frames: int = 0
    before_ack: int = 0
    """Messages that came before the Ack, ignored."""
    last_error: str = ""
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class _Link(asyncio.BufferedProtocol):
    """One socket connection's protocol: frames split in place (:class:`FrameBuffer`), then either queued
    for :meth:`ExtensionConnection.recv` (pull) or decoded and handed to a handler (push, see
    :meth:`ExtensionConnection.deliver`). A reconnect makes a new link, so late callbacks of an old
    socket touch nothing of the new one."""

    def __init__(self, conn: ExtensionConnection, frames: FrameBuffer) -> None:
        self.conn = conn
        self.frames = frames
        self.transport: asyncio.Transport | None = None
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.reason = ""
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_messages: Callable[[list[Delivered]], None] | None = None
        self.on_lost: Callable[[str], None] | None = None

    # ------------------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.frames.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        frames = self.frames
        oversized = frames.stats.oversized
        views = frames.buffer_updated(nbytes)
        if frames.stats.oversized != oversized:
            self.conn.stats.oversized_frames += frames.stats.oversized - oversized
        if not views:
            return
        if self.on_messages is not None and not self.pending:
            self._deliver(views)
            return
        for view in views:
            self.pending.append(bytes(view))
            self.pending_bytes += len(view)
        self._wake()
        if self.pending_bytes > PAUSE_BYTES and not self.read_paused and self.transport is not None:
            # Nobody reads: stop reading, as StreamReader does (the host then blocks on its writes).
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._end(f"{self.conn.path}: connection closed by the extension host")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.conn._log.info("%s: connection lost: %s", self.conn.label, exc)
        self._end(
            f"{self.conn.path}: connection lost: {exc}" if exc else f"{self.conn.path}: connection closed"
        )
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    # -------------------------------------------------------------------------------------- pull

    async def next_frame(self) -> bytes:
        if self.on_messages is not None:
            raise ExtensionError(f"{self.conn.label}: messages go to the handler given to deliver()")
        while not self.pending:
            if self.eof:
                raise Disconnected(self.reason)
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        frame = self.pending.popleft()
        self.pending_bytes -= len(frame)
        if self.read_paused and self.pending_bytes <= RESUME_BYTES:
            self._resume_reading()
        return frame

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume_reading(self) -> None:
        self.read_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -------------------------------------------------------------------------------------- push

    def deliver(self, on_messages: Callable[[list[Delivered]], None], on_lost: Callable[[str], None]) -> None:
        self.on_messages, self.on_lost = on_messages, on_lost
        if self.pending:  # came in with (or after) the Ack: they go first, in order
            views = [memoryview(frame) for frame in self.pending]
            self.pending.clear()
            self.pending_bytes = 0
            self._deliver(views)
        if self.read_paused:
            self._resume_reading()
        if self.eof and self.on_lost is not None:
            asyncio.get_running_loop().call_soon(self._report_lost)

    def _deliver(self, views: list[memoryview]) -> None:
        conn = self.conn
        batch: list[Delivered] = []
        for view in views:
            event = split_task_event(view)
            if event is not None:
                batch.append(event)
                continue
            try:
                batch.append((decode_frame(view), None))
            except ProtocolError as exc:
                conn._bad("frame", exc, bytes(view))
        conn.stats.frames_in += len(batch)
        handler = self.on_messages
        if not batch or handler is None:
            return
        try:
            handler(batch)
        except Exception as exc:  # a bug there must not leave the connection silently dead
            conn._log.exception("%s: handling messages failed", conn.label)
            self._end(f"reader failed: {exc!r}")
            if self.transport is not None:
                self.transport.abort()

    def _end(self, reason: str) -> None:
        if self.eof:
            return
        self.eof = True
        self.reason = reason
        self._wake()
        if self.on_lost is not None:
            self._report_lost()

    def _report_lost(self) -> None:
        on_lost, self.on_lost, self.on_messages = self.on_lost, None, None
        if on_lost is not None:
            on_lost(self.reason)

    def detach(self) -> None:
        """No more callbacks (the owner closes the connection itself)."""
        self.on_messages = self.on_lost = None


async def _open_with_retry(
    path: str, link: Callable[[], _Link], deadline: float, retry_interval: float
) -> _Link:
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, protocol = await loop.create_unix_connection(link, path)
            return protocol
        except OSError as exc:
            if exc.errno not in _RETRYABLE:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectTimeout(f"no extension listening on {path} ({exc.strerror})") from exc
            await asyncio.sleep(min(retry_interval, remaining))


class ExtensionConnection:
    """One node-ipc client connection. Use :func:`connect` to make one.

    Messages are read either one at a time (:meth:`recv`, :meth:`recv_data`, :meth:`events`: the
    connection stops reading the socket while too much waits unread) or, after :meth:`deliver`, pushed
    to a handler a whole socket read at a time, synchronously and in order: the bridge's hot path."""

    def __init__(
        self,
        path: str,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        stats: ConnectionStats | None = None,
        log_limit: RateLimitedLog | None = None,
        label: str | None = None,
    ) -> None:
        self.path = path
        self.max_frame_size = max_frame_size
        self.ack: Ack | None = None
        self.stats = stats or ConnectionStats()
        self.label = label or path
        """Names the connection in log lines."""
        self._log = log_limit or RateLimitedLog(log)
        self._decoder = self._new_decoder()
        self._link: _Link | None = None
        self._encoded: dict[type, bytes] = {}

    # ------------------------------------------------------------------------------------ lifecycle

    async def open(self, timeout: float = 30.0, retry_interval: float = RETRY_INTERVAL) -> Ack:
        """Connect (retrying while the socket is absent or refusing) and wait for the Ack."""
        deadline = time.monotonic() + timeout
        await self.close()
        self._encoded.clear()  # they carry the clientId of the Ack
        self._decoder = self._new_decoder()
        decoder = self._decoder
        self._link = await _open_with_retry(self.path, lambda: _Link(self, decoder), deadline, retry_interval)
        try:
            self.ack = await asyncio.wait_for(self._await_ack(), max(0.0, deadline - time.monotonic()))
            return self.ack
        except asyncio.TimeoutError as exc:
            await self.close()
            raise AckTimeout(f"connected to {self.path} but no Ack arrived") from exc
        except Disconnected:
            await self.close()
            raise

    async def _await_ack(self) -> Ack:
        while True:
            msg = await self.recv()
            if isinstance(msg, AckMessage):
                return msg.data
            self.stats.before_ack += 1
            self._log.warning("%s: %s before the Ack ignored", self.label, type(msg).__name__)

    def _new_decoder(self) -> FrameBuffer:
        return FrameBuffer(self.max_frame_size, log_limit=self._log, label=self.label)

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        link.detach()
        if link.transport is not None:
            link.transport.close()
            with contextlib.suppress(OSError):
                await link.closed

    @property
    def decoder(self) -> FrameBuffer:
        """The current connection's frame splitter (its ``stats`` show how much it ever buffered)."""
        return self._decoder

    @property
    def connected(self) -> bool:
        link = self._link
        return (
            link is not None
            and not link.eof
            and link.transport is not None
            and not link.transport.is_closing()
        )

    @property
    def unread_bytes(self) -> int:
        """Bytes of frames received and not yet read with :meth:`recv` and its siblings."""
        return self._link.pending_bytes if self._link is not None else 0

    @property
    def reading_paused(self) -> bool:
        """True while the socket is not read because too much waits unread (see :data:`PAUSE_BYTES`)."""
        return self._link is not None and self._link.read_paused

    @property
    def client_id(self) -> str:
        if self.ack is None:
            raise ExtensionError("no Ack yet: commands sent now would be dropped by the extension")
        return self.ack.clientId

    async def __aenter__(self) -> ExtensionConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------------------------------- send

    async def send_command(self, command: Any) -> None:
        """Send one TaskCommand (a model from :mod:`.protocol` or an equivalent dict)."""
        if (
            isinstance(command, WireModel)
            and command.model_fields_set <= _NAME_ONLY
            and not command.model_extra
        ):
            # A command that is only its name (Get*, CancelTask...): encoded once per connection.
            frame = self._encoded.get(type(command))
            if frame is None:
                frame = self._encoded[type(command)] = encode_frame(command_message(self.client_id, command))
            await self.send_frame(frame)
            return
        await self.send_frame(encode_frame(command_message(self.client_id, command)))

    async def send_frame(self, frame: bytes) -> None:
        """Write one whole, already encoded frame (waits only while the socket's buffer is full)."""
        link = self._link
        if link is None or link.eof or link.transport is None or link.transport.is_closing():
            raise Disconnected(f"not connected to {self.path}")
        link.transport.write(frame)
        self.stats.frames_out += 1
        if link.write_paused:
            waiter = asyncio.get_running_loop().create_future()
            link.drain_waiters.append(waiter)
            await waiter
            if link.eof:
                raise Disconnected(link.reason)

    # ------------------------------------------------------------------------------------- receive

    def deliver(self, on_messages: Callable[[list[Delivered]], None], on_lost: Callable[[str], None]) -> None:
        """From now on, hand every socket read's messages (:data:`Delivered`: a TaskEvent with its
        bytes, or the ``data`` of any other valid frame as :meth:`recv_data` gives it) to
        ``on_messages``, synchronously, in order; frames already
        received go first, before this returns. ``on_lost(reason)`` is called once when the host
        disconnects, or when ``on_messages`` raised (the connection is then dropped). No callback
        comes after :meth:`close`. :meth:`recv` and its siblings must not be used any more."""
        if self._link is None:
            raise Disconnected(f"not connected to {self.path}")
        self._link.deliver(on_messages, on_lost)

    async def recv_data(self) -> Any:
        """The ``data`` of the next frame (the IpcMessage as a plain JSON value), undecoded beyond JSON.

        No pydantic. Bad frames are skipped and counted."""
        while True:
            frame = await self._next_frame()
            try:
                data = decode_frame(frame)
            except ProtocolError as exc:
                self._bad("frame", exc, frame)
                continue
            self.stats.frames_in += 1
            return data

    async def recv(self) -> IpcMessage:
        """The next valid IpcMessage, typed. Raises :class:`Disconnected` at end of stream."""
        while True:
            data = await self.recv_data()
            try:
                return parse_ipc_message(data)
            except ProtocolError as exc:
                self._bad("message", exc, data)

    async def events(self) -> AsyncIterator[TaskEvent]:
        """Async iterator of TaskEvents until the host disconnects."""
        while True:
            try:
                msg = await self.recv()
            except Disconnected:
                return
            if isinstance(msg, TaskEventMessage):
                event: TaskEvent = msg.event()
                yield event

    async def _next_frame(self) -> bytes:
        if self._link is None:
            raise Disconnected(f"{self.path}: connection closed")
        return await self._link.next_frame()

    def _bad(self, kind: str, exc: Exception, frame: Any = None) -> None:
        self.stats.bad_frames += 1
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        self.stats.last_error = str(exc)
        self._log.warning("%s: dropped bad %s: %s: %s", self.label, kind, exc, sample(frame))


async def connect(
    path: str,
    *,
    timeout: float = 30.0,
    retry_interval: float = RETRY_INTERVAL,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> ExtensionConnection:
    """Connect to the extension host listening (now or soon) on ``path`` and wait for its Ack."""
    conn = ExtensionConnection(path, max_frame_size=max_frame_size)
    await conn.open(timeout=timeout, retry_interval=retry_interval)
    return conn
