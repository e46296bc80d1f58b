"""The counters of rejected ROUTER messages: every rejection is counted exactly, only a sample is logged
(through a :class:`~ipc_bridge.log_limits.RateLimitedLog`); the counters are ``SlotInfo``'s and
``heartbeat_reply.rejected`` (docs/wire-format.md).
"""

from __future__ import annotations

import logging

from ipc_bridge.log_limits import LOG_BURST, LOG_PERIOD, SAMPLE_CHARS, RateLimitedLog, sample
from ipc_bridge.wire.messages import Content, ErrorCode, ErrorReply
from ipc_bridge.wire.session import Message, ReplayError, SignatureError, WireError

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
