"""Bad input from one extension host, as its slot counts it (the counters of ``SlotInfo``).

A host can be a fork with event names of its own, a newer engine, or simply broken. What the bridge
cannot route is dropped, what is merely odd is forwarded; either way it is counted here, over every
connection of the slot, and logged (rate-limited: a broken host may send nothing else).
"""

from __future__ import annotations

import logging
from typing import Any

from ipc_bridge.log_limits import RateLimitedLog, sample
from ipc_bridge.roo.events import KNOWN_EVENTS
from ipc_bridge.roo.extension import AckTimeout, ConnectionStats

log = logging.getLogger(__name__)

NO_PAYLOAD = frozenset(
    name for name, cls in KNOWN_EVENTS.items() if cls.model_fields["payload"].default is None
)
"""Known events whose payload is no array by definition (evalPass/evalFail carry none)."""
MAX_UNKNOWN_NAMES = 64
"""Unknown event names logged once each per slot; beyond that many, they share the rate limit."""


class HostInput:
    def __init__(self, slot: str) -> None:
        self.slot = slot
        self.stats = ConnectionStats()
        """Frame counts: shared by every :class:`~.extension.ExtensionConnection` of the slot."""
        self.log = RateLimitedLog(log)
        """Shared with the connections too, so that one budget covers the slot."""
        self.bad_messages = 0
        self.unknown_events = 0
        self.malformed_events = 0
        self.ack_timeouts = 0
        self._unknown_names: set[str] = set()

    def not_an_event(self, data: Any) -> None:
        self.bad_messages += 1
        self.log.warning("slot %s: dropped a message that is no TaskEvent: %s", self.slot, sample(data))

    def bad_event(self, exc: Exception, event: Any) -> None:
        self.bad_messages += 1
        self.log.warning("slot %s: dropped event: %s: %s", self.slot, exc, sample(event))

    def odd_event(self, name: str, event: dict[str, Any]) -> None:
        """An event the bridge forwards although it does not know its name or its payload is no array."""
        if name in KNOWN_EVENTS:
            self.malformed_events += 1
            self.log.warning(
                "slot %s: %s event whose payload is no array: %s", self.slot, name, sample(event)
            )
            return
        self.unknown_events += 1
        if name in self._unknown_names:
            return
        if len(self._unknown_names) < MAX_UNKNOWN_NAMES:
            self._unknown_names.add(name)
        self.log.warning("slot %s: unknown event name %s, forwarded as is", self.slot, sample(name))

    def ack_timeout(self, exc: AckTimeout) -> None:
        self.ack_timeouts += 1
        self.log.warning("slot %s: %s", self.slot, exc)

    def counts(self) -> dict[str, int]:
        """The counter fields of ``SlotInfo``."""
        stats = self.stats
        return {
            "bad_frames": stats.errors_by_kind.get("frame", 0),
            "oversized_frames": stats.oversized_frames,
            "bad_messages": self.bad_messages + stats.errors_by_kind.get("message", 0) + stats.before_ack,
            "unknown_events": self.unknown_events,
            "malformed_events": self.malformed_events,
            "ack_timeouts": self.ack_timeouts,
        }
