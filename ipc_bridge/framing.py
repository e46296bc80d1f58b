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

from .bad_input import RateLimitedLog
from .protocol import ProtocolError, WireModel

log = logging.getLogger(__name__)

DELIMITER = b"\x0c"
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
NODE_IPC_EVENT = "message"
"""Roo emits and listens on the node-ipc event type ``"message"`` only."""


def encode_frame(ipc_message: WireModel | dict[str, Any] | None) -> bytes:
    """One whole frame: compact JSON, key order ``type`` then ``data``, no NaN (orjson refuses it)."""
    data: Any = ipc_message.wire() if isinstance(ipc_message, WireModel) else ipc_message
    # node-ipc's EventParser rewrites falsy data (null, "") to {}; do the same so both peers agree.
    if data is None or data == "":
        data = {}
    return orjson.dumps({"type": NODE_IPC_EVENT, "data": data}) + DELIMITER


def decode_frame(frame: bytes) -> Any:
    """The ``data`` of one frame (without its delimiter). Raises :class:`ProtocolError` on bad input."""
    try:
        envelope = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
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
