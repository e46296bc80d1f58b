"""Log lines that a peer can cause again and again, rate-limited: :class:`RateLimitedLog`, and
:func:`sample` to quote bad input in them.

Bad input can come in floods (a broken host, a confused or hostile worker), and so can other lines a
peer causes (a host that reconnects in a loop, a worker that does not read its replies): counters tell
how much (``SlotInfo`` and ``heartbeat_reply.rejected``, see docs/wire-format.md), the log tells what it
looked like. Every layer logs such lines (the node-ipc codec, the ZeroMQ loop, the bridge), so this
module imports nothing of the package.
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections.abc import Callable
from typing import Any

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
