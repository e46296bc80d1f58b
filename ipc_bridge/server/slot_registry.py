"""The bridge's slots by name, and which detached ones it still keeps.

A detached slot is kept for a while: a late subscriber may still fill a gap from its replay buffer, and
an ``attach`` of the same name continues its seq. But a run uses a fresh slot per attempt, so kept
forever they would cost ~200 kB each: only the last ``keep`` detached slots stay, and only while their
buffers together take at most ``max_bytes`` (one flood each, 64 slots would otherwise keep 4 GiB).
"""

from __future__ import annotations

from collections import OrderedDict

from ipc_bridge.server.slots import Slot, SlotError
from ipc_bridge.wire.messages import ErrorCode


class SlotRegistry(dict[str, Slot]):
    """``name -> Slot`` for every slot the bridge holds, attached or kept after a detach."""

    def __init__(self, keep: int, max_bytes: int) -> None:
        super().__init__()
        self.keep = keep
        self.max_bytes = max_bytes
        self._detached: OrderedDict[str, None] = OrderedDict()  # oldest first

    def lookup(self, name: str) -> Slot:
        """The slot of that name; ``unknown_slot`` if the bridge holds none."""
        slot = self.get(name)
        if slot is None:
            raise SlotError(ErrorCode.UNKNOWN_SLOT, f"unknown slot {name!r}")
        return slot

    def reclaim(self, name: str) -> None:
        """The slot is being attached again: no longer among the detached ones to forget."""
        self._detached.pop(name, None)

    def retire(self, slot: Slot) -> None:
        """``slot`` was just detached: keep it, and forget the oldest detached slots beyond the bounds."""
        detached = self._detached
        detached.pop(slot.name, None)
        detached[slot.name] = None
        held = sum(s.buffer.bytes for name in detached if (s := self.get(name)) is not None)
        while len(detached) > self.keep or (len(detached) > 1 and held > self.max_bytes):
            name, _ = detached.popitem(last=False)
            old = self.get(name)
            if old is not None and old.state == "detached":
                held -= old.buffer.bytes
                del self[name]
