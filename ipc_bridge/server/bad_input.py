"""Accounting for bad input: rate-limited log lines, and the counters of rejected ROUTER messages.

Bad input can come in floods (a broken host, a confused or hostile worker), so every rejection is counted
exactly but only a sample is logged. So is every other line that a peer can cause again and again (a
host that reconnects in a loop, a worker that does not read its replies): each goes through a
:class:`RateLimitedLog`: the counters (``SlotInfo`` and ``heartbeat_reply.rejected``, see
docs/wire-format.md) tell how much, the log tells what it looked like.
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections.abc import Callable
from typing import Any

from ipc_bridge.wire.messages import Content, ErrorCode, ErrorReply
from ipc_bridge.wire.session import Message, ReplayError, SignatureError, WireError

LOG_BURST = 50
"""Lines a :class:`RateLimitedLog` lets through per :data:`LOG_PERIOD`."""
LOG_PERIOD = 60.0
SAMPLE_CHARS = 200
"""Bad input is quoted in log lines up to this many characters."""


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = SAMPLE_CHARS
_repr.maxlevel = 3


def sample(value: Any) -> str:
    """A short ``repr`` of bad input for a log line, made without building the repr of all of it (a
    bad frame can be 64 MiB)."""
    if isinstance(value, (bytes, bytearray, str)):
        head = repr(value[:SAMPLE_CHARS])
        return head if len(value) <= SAMPLE_CHARS else f"{head}... ({len(value)} in all)"
    return _repr.repr(value)


class RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds; the next line let through after a quiet spell says
    how many were suppressed (the counters, not the log, hold the exact numbers)."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = LOG_BURST,
        period: float = LOG_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.suppressed = 0
        """Lines suppressed so far, in total."""
        self._clock = clock
        self._window_start = float("-inf")
        self._lines = 0
        self._unreported = 0

    def log(self, level: int, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless the window's budget is spent; True when it was logged."""
        now = self._clock()
        if now - self._window_start >= self.period:
            self._window_start, self._lines = now, 0
        if self._lines >= self.burst:
            self.suppressed += 1
            self._unreported += 1
            return False
        self._lines += 1
        if self._unreported:
            msg = f"{msg} [%d similar line(s) suppressed before this one]"
            args = (*args, self._unreported)
            self._unreported = 0
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, msg, *args)

    def exception(self, msg: str, *args: Any) -> bool:
        """``logger.exception``: from an ``except`` block, with the traceback."""
        return self.log(logging.ERROR, msg, *args, exc_info=True)


# Error replies that mean "the request itself was bad"; other codes (unknown_slot, slot_down, timeout...)
# answer well-formed requests about a state of things and are not counted.
_BAD_REQUEST_CODES = frozenset(
    code.value
    for code in (
        ErrorCode.UNKNOWN_MSG_TYPE,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.INVALID_COMMAND,
        ErrorCode.UNSUPPORTED_VERSION,
    )
)
DROP_REASONS = ("malformed", "bad_signature", "replayed", "oversized")
"""Messages dropped unanswered (docs/wire-format.md section 2)."""
REJECT_REASONS = (*DROP_REASONS, *sorted(_BAD_REQUEST_CODES))


class RouterRejects:
    """Counts (by reason) and logs the ROUTER messages the bridge drops or answers with a request error."""

    def __init__(self, logger: logging.Logger, burst: int = LOG_BURST, period: float = LOG_PERIOD) -> None:
        self.counts = dict.fromkeys(REJECT_REASONS, 0)
        self._log = RateLimitedLog(logger, burst, period)

    def dropped(self, exc: WireError, frames: list[bytes]) -> None:
        """A message that did not verify or parse: dropped without a reply."""
        if isinstance(exc, ReplayError):
            reason = "replayed"
        elif isinstance(exc, SignatureError):
            reason = "bad_signature"
        else:
            reason = "malformed"
        self.counts[reason] += 1
        self._log.warning(
            "dropped command (%s): %s; %d frame(s), %d bytes", reason, exc, len(frames), sum(map(len, frames))
        )

    def oversized(self, frames: int, size: int, max_frames: int, max_bytes: int) -> None:
        """A message over the whole-message bounds: dropped unread, without a reply."""
        self.counts["oversized"] += 1
        self._log.warning(
            "dropped command (oversized): %d frame(s), %d bytes (at most %d frames, %d bytes)",
            frames,
            size,
            max_frames,
            max_bytes,
        )

    def answered(self, msg: Message, reply: Content) -> None:
        """Count and log ``reply`` if it is an error reply blaming the request."""
        if isinstance(reply, ErrorReply) and reply.error in _BAD_REQUEST_CODES:
            self.counts[reply.error] += 1
            self._log.warning(
                "rejected %s %s from session %s: %s: %s",
                sample(msg.msg_type),
                msg.header.msg_id[:100],
                msg.header.session[:100],
                reply.error,
                reply.reason[:SAMPLE_CHARS],
            )

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
