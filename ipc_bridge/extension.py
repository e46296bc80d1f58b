"""An asyncio connection to one extension host's node-ipc socket (the client side, like Roo's IpcClient).

The extension only listens after it activates, seconds after its window opens, so :func:`connect`
retries ENOENT/ECONNREFUSED every 500 ms (node-ipc's own retry) up to a deadline. The server speaks
first with an Ack; its clientId goes into every command (without it the extension drops the command
silently). Frames that are not valid IpcMessages are logged, counted and skipped, never fatal; the log
lines are rate-limited (a broken host can send nothing else), the counts in :class:`ConnectionStats` are
exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .bad_input import RateLimitedLog, sample
from .framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, decode_frame, encode_frame
from .protocol import (
    Ack,
    AckMessage,
    IpcMessage,
    ProtocolError,
    TaskEvent,
    TaskEventMessage,
    command_message,
    parse_ipc_message,
)

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.5
READ_CHUNK = 256 * 1024
_RETRYABLE = (errno.ENOENT, errno.ECONNREFUSED)


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


async def _open_with_retry(
    path: str, deadline: float, retry_interval: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    while True:
        try:
            return await asyncio.open_unix_connection(path, limit=READ_CHUNK)
        except OSError as exc:
            if exc.errno not in _RETRYABLE:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectTimeout(f"no extension listening on {path} ({exc.strerror})") from exc
            await asyncio.sleep(min(retry_interval, remaining))


class ExtensionConnection:
    """One node-ipc client connection. Use :func:`connect` to make one."""

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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = self._new_decoder()
        self._pending: deque[bytes] = deque()
        self._eof = False

    # ------------------------------------------------------------------------------------ lifecycle

    async def open(self, timeout: float = 30.0, retry_interval: float = RETRY_INTERVAL) -> Ack:
        """Connect (retrying while the socket is absent or refusing) and wait for the Ack."""
        deadline = time.monotonic() + timeout
        await self.close()
        self._reader, self._writer = await _open_with_retry(self.path, deadline, retry_interval)
        self._decoder = self._new_decoder()
        self._pending.clear()
        self._eof = False
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

    def _new_decoder(self) -> FrameDecoder:
        return FrameDecoder(self.max_frame_size, log_limit=self._log, label=self.label)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @property
    def decoder(self) -> FrameDecoder:
        """The current connection's frame decoder (its ``stats`` show how much it ever buffered)."""
        return self._decoder

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._eof and not self._writer.is_closing()

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
        await self.send_frame(encode_frame(command_message(self.client_id, command)))

    async def send_frame(self, frame: bytes) -> None:
        """Write one whole, already encoded frame."""
        if self._writer is None or self._writer.is_closing():
            raise Disconnected(f"not connected to {self.path}")
        self._writer.write(frame)
        self.stats.frames_out += 1
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise Disconnected(f"{self.path}: {exc}") from exc

    # ------------------------------------------------------------------------------------- receive

    async def recv_data(self) -> Any:
        """The ``data`` of the next frame (the IpcMessage as a plain JSON value), undecoded beyond JSON.

        This is the bridge's hot path: no pydantic. Bad frames are skipped and counted."""
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
        while not self._pending:
            if self._reader is None or self._eof:
                raise Disconnected(f"{self.path}: connection closed")
            try:
                chunk = await self._reader.read(READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                chunk = b""
                log.info("%s: read failed: %s", self.path, exc)
            if not chunk:
                self._eof = True
                raise Disconnected(f"{self.path}: connection closed by the extension host")
            decoder = self._decoder
            oversized = decoder.stats.oversized
            self._pending.extend(decoder.feed(chunk))
            self.stats.oversized_frames += decoder.stats.oversized - oversized
        return self._pending.popleft()

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
