"""node-ipc 12.0.0 framing: ``{"type":"message","data":<IpcMessage>}`` + ``\\f`` (0x0C).

The encoder writes whole frames only (node-ipc parses nothing until its buffer ends exactly on the
delimiter, so a trailing partial frame would hold back complete ones). The decoder splits on 0x0C
*before* decoding: 0x0C never occurs inside a UTF-8 multibyte sequence and JSON escapes a literal form
feed as ``\\f``, so a raw 0x0C is always a delimiter. Unlike node-ipc it bounds memory: a frame larger
than ``max_frame_size`` is discarded up to its delimiter and reported, and the stream goes on: at no
time does the decoder hold more than ``max_frame_size`` bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from ipc_bridge.json_compat import loads
from ipc_bridge.log_limits import RateLimitedLog
from ipc_bridge.roo.shapes import ProtocolError, WireModel

log = logging.getLogger(__name__)

DELIMITER = b"\x0c"
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
READ_SIZE = 256 * 1024
"""The most one socket read of a :class:`FrameBuffer` takes."""
FIRST_READ_SIZE = 16 * 1024
"""What a :class:`FrameBuffer` reads at first; each read that fills what was offered doubles it, up to
:data:`READ_SIZE`. A connection that carries a few events (one attempt's host) never pays for zeroing
256 KiB, ~7 % of the bridge's CPU per attempt when each attempt attaches a new connection."""
NODE_IPC_EVENT = "message"
"""Roo emits and listens on the node-ipc event type ``"message"`` only."""


def encode_frame(ipc_message: WireModel | dict[str, Any] | None) -> bytes:
    """One whole frame: compact JSON, key order ``type`` then ``data``, no NaN (orjson refuses it)."""
    data: Any = ipc_message.wire() if isinstance(ipc_message, WireModel) else ipc_message
    # node-ipc's EventParser rewrites falsy data (null, "") to {}; do the same so both peers agree.
    if data is None or data == "":
        data = {}
    return orjson.dumps({"type": NODE_IPC_EVENT, "data": data}) + DELIMITER


TASK_EVENT_HEAD = b'{"type":"message","data":{"type":"TaskEvent","origin":"server","data":'
"""How Roo's IpcServer (and every host we know) writes a TaskEvent frame, up to the event itself."""
TASK_EVENT_TAIL = b"}}"
_HEAD_LEN = len(TASK_EVENT_HEAD)


def split_task_event(frame: bytes | memoryview) -> tuple[Any, bytes] | None:
    """``(event, its bytes)`` of a TaskEvent frame written as Roo writes it (:data:`TASK_EVENT_HEAD`,
    the event, :data:`TASK_EVENT_TAIL`), else None (decode it with :func:`decode_frame`).

    Only the event is parsed, and its bytes are what the host wrote: the bridge forwards them instead
    of encoding the parsed value again. When they parse as one JSON value, the frame is exactly
    ``{"type":"message","data":{"type":"TaskEvent","origin":"server","data":<event>}}``: no key after
    the event, no duplicate key, so the bytes and the returned value agree. The value is parsed with
    orjson, for routing: an integer beyond 64 bits in it may read as a rounded float (the bytes keep it
    exact); what orjson refuses goes through :func:`~ipc_bridge.json_compat.loads`."""
    if frame[:_HEAD_LEN] != TASK_EVENT_HEAD or frame[-2:] != TASK_EVENT_TAIL:
        return None
    raw = bytes(frame[_HEAD_LEN:-2])
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError:
        pass
    try:
        return loads(raw, raw=True), raw  # valid JSON orjson balks at (1e400, a lone surrogate...)
    except ValueError:
        return None  # not one JSON value: the whole frame decides (bad, or another layout)


def decode_frame(frame: bytes | memoryview) -> Any:
    """The ``data`` of one frame (without its delimiter). Raises :class:`ProtocolError` on bad input."""
    try:
        envelope = loads(frame, raw=True)  # valid JSON passes on unchanged, even where orjson balks
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON in frame: {exc}") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
        raise ProtocolError("frame without a string 'type'")
    if envelope["type"] != NODE_IPC_EVENT:
        raise ProtocolError(f"node-ipc event type {envelope['type']!r} is not {NODE_IPC_EVENT!r}")
    return envelope.get("data")


@dataclass
class DecoderStats:
    frames: int = 0
    oversized: int = 0
    largest_dropped: int = 0
    peak_pending: int = 0
    """The most bytes ever held for an incomplete frame: never more than ``max_frame_size``."""


class FrameDecoder:
    """Incremental splitter: feed it chunks of any size, get whole frames back in order."""

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        log_limit: RateLimitedLog | None = None,
        label: str = "node-ipc",
    ) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self.stats = DecoderStats()
        self.label = label
        """Names the stream in log lines."""
        self._log = log_limit or RateLimitedLog(log)
        self._buf = bytearray()
        self._discarding = 0  # >0: inside an oversized frame, counting its bytes until its delimiter

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Frames completed by ``chunk``, delimiters stripped. Oversized frames are dropped, logged and
        counted in :attr:`stats`; the frames around them are unaffected."""
        frames: list[bytes] = []
        start = 0
        n = len(chunk)
        while start < n:
            end = chunk.find(DELIMITER, start)
            if end < 0:
                self._hold(chunk, start, n)
                break
            if self._discarding:
                self._finish_discard(self._discarding + end - start)
            elif len(self._buf) + end - start > self.max_frame_size:
                self._finish_discard(len(self._buf) + end - start)
            elif self._buf:
                self._buf += chunk[start:end]
                self.stats.peak_pending = max(self.stats.peak_pending, len(self._buf))
                frames.append(bytes(self._buf))
                self._buf.clear()
            elif end > start:
                frames.append(chunk[start:end])
            start = end + 1
        self.stats.frames += len(frames)
        return frames

    def _hold(self, chunk: bytes, start: int, end: int) -> None:
        size = end - start
        if self._discarding:
            self._discarding += size
        elif len(self._buf) + size > self.max_frame_size:
            # Too big already: stop buffering, remember only how much we skipped.
            self._discarding = len(self._buf) + size
            self._buf.clear()
        else:
            self._buf += chunk[start:end]
            self.stats.peak_pending = max(self.stats.peak_pending, len(self._buf))

    def _finish_discard(self, size: int) -> None:
        self._buf.clear()
        self._discarding = 0
        self.stats.oversized += 1
        self.stats.largest_dropped = max(self.stats.largest_dropped, size)
        self._log.log(
            logging.ERROR,
            "%s: frame of %d bytes exceeds max_frame_size %d: dropped (raise the limit if such frames "
            "are expected)",
            self.label,
            size,
            self.max_frame_size,
        )


class FrameBuffer(FrameDecoder):
    """The splitter for an ``asyncio.BufferedProtocol``: the socket reads straight into one reusable
    buffer, and complete frames come back as views into it, so nothing is allocated per read and
    nothing is copied per frame.

    A plain ``Protocol`` gets a new ``bytes`` of up to 256 KiB per read: that size goes through
    ``mmap``/``mremap``/``munmap`` (three system calls and page faults per read; per command round trip
    that is ~10 % of the bridge's time), and every frame is then copied out of it. Here the views of
    :meth:`buffer_updated` stay valid until the next :meth:`get_buffer`: decode (or copy) them first.
    Limits and statistics are those of :class:`FrameDecoder`; :meth:`feed` works too (it copies)."""

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        *,
        read_size: int = READ_SIZE,
        log_limit: RateLimitedLog | None = None,
        label: str = "node-ipc",
    ) -> None:
        super().__init__(max_frame_size, log_limit=log_limit, label=label)
        self.read_size = max(1, read_size)
        self._want = min(self.read_size, FIRST_READ_SIZE)  # free space offered to the next read
        self._offered = 0
        self._rbuf = bytearray(self._want)
        self._start = 0  # first byte of the incomplete frame
        self._end = 0  # end of the bytes received
        self._scan = 0  # no delimiter in [_start, _scan)

    @property
    def pending(self) -> int:
        return self._end - self._start

    def get_buffer(self) -> memoryview:
        """Where the next read goes: the free space after the incomplete frame, at least 16 KiB, or
        more after reads that filled it, up to ``read_size`` (the buffer grows while a frame within the
        limit needs it)."""
        start, end = self._start, self._end
        buf = self._rbuf
        if start:
            # The incomplete frame moves to the front (copying at most max_frame_size bytes).
            if end > start:
                buf[: end - start] = buf[start:end]
            self._end, self._scan, self._start = end - start, self._scan - start, 0
        need = self._end + self._want
        if need > len(buf):
            # At most max_frame_size bytes of an incomplete frame are ever held, so this stays bounded.
            grown = bytearray(max(need, min(2 * len(buf), self.max_frame_size + self._want)))
            grown[: self._end] = buf[: self._end]
            self._rbuf = buf = grown
        elif not self._end and len(buf) > 4 * self.read_size:
            self._rbuf = buf = bytearray(self._want)  # a big frame has gone: give the memory back
        self._offered = len(buf) - self._end
        return memoryview(buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> list[memoryview]:
        """The frames completed by the ``nbytes`` just read into :meth:`get_buffer`, delimiters
        stripped, as views valid until the next :meth:`get_buffer` call."""
        if nbytes >= self._offered and self._want < self.read_size:
            self._want = min(self.read_size, 2 * self._want)  # more may wait: read more next time
        buf = self._rbuf
        end = self._end + nbytes
        self._end = end
        frames: list[memoryview] = []
        start = self._start
        find = buf.find
        pos = find(DELIMITER, self._scan, end)
        if pos >= 0:
            view = memoryview(buf)
            limit = self.max_frame_size
            while pos >= 0:
                if self._discarding:
                    self._finish_discard(self._discarding + pos - start)
                elif pos - start > limit:
                    self._finish_discard(pos - start)
                elif pos > start:
                    frames.append(view[start:pos])
                start = pos + 1
                pos = find(DELIMITER, start, end)
            self.stats.frames += len(frames)
        if self._discarding:
            # Inside an oversized frame: keep only the count of its bytes.
            self._discarding += end - start
            start = end
        elif end - start > self.max_frame_size:
            self._discarding = end - start
            start = end
        self._start, self._scan = start, end
        if start == end:
            self._start = self._end = self._scan = 0
        elif end - start > self.stats.peak_pending:
            self.stats.peak_pending = end - start
        return frames

    def feed(self, chunk: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos = 0
        while pos < len(chunk):
            free = self.get_buffer()
            n = min(len(free), len(chunk) - pos)
            free[:n] = chunk[pos : pos + n]
            free.release()
            frames.extend(bytes(frame) for frame in self.buffer_updated(n))
            pos += n
        return frames
