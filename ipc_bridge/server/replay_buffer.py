"""The bridge's per-slot replay buffer (the Clone pattern's snapshot source, wire-format §6).

Bounded by what its events really cost in memory, not by their length on the wire. An event is five
frames, and the frames ``orjson.dumps`` returns keep the ~4 KiB buffer it wrote them into (a 200-byte
header held 4 KiB): kept as they come, a tiny event cost ~12 KiB and a buffer "of 16 MiB" took 435 MiB.
So each event is stored as one exact-size ``bytes`` (its frames' lengths, then the frames), and counted
at its allocation size plus the entry, the seq and the deque slot that hold it (:func:`entry_cost`).

Entries are plain tuples of immutable values (exact tuples: the collector never untracks a subclass
such as a NamedTuple), so the garbage collector stops tracking them after their first collection. A full
buffer then adds nothing to the work of every full collection, where an object with a list of frames
per event made those collections about a tenth of the bridge's CPU in an event flood.
"""

from __future__ import annotations

import struct
import sys
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

_FIVE = struct.Struct("<B4I")
"""How an event's five frames (topic, signature, header, parent, content) are told apart: their count
less one, then the lengths of all but the last, at the start of the stored bytes."""
_ENTRY = sys.getsizeof((2**40, b"")) + sys.getsizeof(2**40) + 8
"""The ``(seq, blob)`` tuple, the seq's int and the deque's slot for it."""
_BYTES_HEADER = sys.getsizeof(b"")


class BufferedEvent(NamedTuple):
    seq: int
    frames: tuple[bytes, ...]
    """topic, signature, header, parent, content"""
    size: int
    """What the event costs in the buffer (bytes of memory, see :func:`entry_cost`)."""


def _allocated(nbytes: int) -> int:
    """Bytes an allocation of ``nbytes`` takes: malloc's 8-byte header and 16-byte granularity (pymalloc,
    for the small ones, rounds to 16 without the header: this errs on the safe side)."""
    return (nbytes + 8 + 15) & ~15


def entry_cost(blob_len: int) -> int:
    """Memory one buffered event of ``blob_len`` stored bytes takes, all objects included."""
    return _allocated(_BYTES_HEADER + blob_len) + _ENTRY


def pack(frames: Sequence[bytes]) -> bytes:
    """One exact-size ``bytes``: how many frames less one, the lengths of all but the last, the frames."""
    n = len(frames)
    if n == 5:  # every event of the bridge
        head = _FIVE.pack(4, len(frames[0]), len(frames[1]), len(frames[2]), len(frames[3]))
    else:
        head = struct.pack(f"<B{n - 1}I", n - 1, *map(len, frames[:-1]))
    return b"".join((head, *frames))


def unpack(blob: bytes) -> tuple[bytes, ...]:
    count = blob[0]
    frames = []
    pos = 1 + 4 * count
    for length in struct.unpack_from(f"<{count}I", blob, 1):
        frames.append(blob[pos : pos + length])
        pos += length
    frames.append(blob[pos:])
    return tuple(frames)


class ReplayBuffer:
    """The last events of a slot, bounded by count and by memory, for ``snapshot``. Seqs are contiguous.

    ``bytes`` is the memory the events take (:func:`entry_cost`); the newest event is always kept, even
    when it alone is over ``max_bytes``."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max(1, max_events)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._events: deque[tuple[int, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int:
        return self._events[0][0] if self._events else 0

    def append(self, seq: int, frames: Sequence[bytes]) -> None:
        events = self._events
        if events and seq != events[-1][0] + 1:
            raise ValueError(f"seq {seq} does not follow {events[-1][0]}")
        blob = pack(frames)
        events.append((seq, blob))
        self.bytes += entry_cost(len(blob))
        if len(events) > self.max_events or self.bytes > self.max_bytes:
            while len(events) > 1 and (len(events) > self.max_events or self.bytes > self.max_bytes):
                self.bytes -= entry_cost(len(events.popleft()[1]))

    def since(
        self, since_seq: int, last_seq: int, limit: int, max_bytes: int | None = None
    ) -> tuple[list[BufferedEvent], bool, bool]:
        """``(events with seq > since_seq, complete, more)``; complete is False when evicted events
        lie between ``since_seq`` and the oldest one still held. At most ``limit`` events, and no more
        than ``max_bytes`` of them (but at least one): ``more`` says the answer was cut short."""
        if since_seq >= last_seq:
            return [], True, False
        if not self._events or self.first_seq > since_seq + 1:
            complete = False
            start = 0
        else:
            complete = True
            start = since_seq + 1 - self.first_seq
        events: list[BufferedEvent] = []
        total = 0
        for seq, blob in islice(self._events, start, start + limit):
            size = entry_cost(len(blob))
            if events and max_bytes is not None and total + size > max_bytes:
                break
            total += size
            events.append(BufferedEvent(seq, unpack(blob), size))
        more = (events[-1].seq if events else since_seq) < last_seq
        return events, complete, more
