"""The bridge's per-slot replay buffer (the Clone pattern's snapshot source, wire-format §6).

Entries are plain tuples of immutable values (exact tuples: the collector never untracks a subclass
such as a NamedTuple), so the garbage collector stops tracking them after their first collection. A full
buffer (100,000 events) then adds nothing to the work of every full collection, where an object with a
list of frames per event made those collections about a tenth of the bridge's CPU in an event flood.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple


class BufferedEvent(NamedTuple):
    seq: int
    frames: tuple[bytes, ...]
    """topic, signature, header, parent, content"""
    size: int


class ReplayBuffer:
    """The last events of a slot, bounded by count and bytes, for ``snapshot``. Seqs are contiguous."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max(1, max_events)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._events: deque[tuple[int, tuple[bytes, ...], int]] = deque()  # BufferedEvent's fields

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int:
        return self._events[0][0] if self._events else 0

    def append(self, seq: int, frames: Sequence[bytes]) -> None:
        events = self._events
        if events and seq != events[-1][0] + 1:
            raise ValueError(f"seq {seq} does not follow {events[-1][0]}")
        size = sum(map(len, frames))
        events.append((seq, tuple(frames), size))
        self.bytes += size
        if len(events) > self.max_events or self.bytes > self.max_bytes:
            while len(events) > 1 and (len(events) > self.max_events or self.bytes > self.max_bytes):
                self.bytes -= events.popleft()[2]

    def since(self, since_seq: int, last_seq: int, limit: int) -> tuple[list[BufferedEvent], bool, bool]:
        """``(events with seq > since_seq, complete, more)``; complete is False when evicted events
        lie between ``since_seq`` and the oldest one still held."""
        if since_seq >= last_seq:
            return [], True, False
        if not self._events or self.first_seq > since_seq + 1:
            complete = False
            start = 0
        else:
            complete = True
            start = since_seq + 1 - self.first_seq
        events = [BufferedEvent(*entry) for entry in islice(self._events, start, start + limit)]
        more = (events[-1].seq if events else since_seq) < last_seq
        return events, complete, more
