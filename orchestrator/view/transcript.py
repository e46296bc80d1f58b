"""An attempt's transcript (``events/<attempt>.jsonl``) as a conversation, paged by byte offset.

Opening a transcript reads the index its run's writer saved beside it
(:mod:`orchestrator.results.transcript_index`), or builds it when there is none or it no longer matches
the file (old runs, copies): a few regex scans of the whole file. A message is shown in its
last state only (a line that a later line of the same task and ``ts`` updates is skipped), and
lifecycle events that say nothing to a reader are left out. A page starts at a byte offset and reads
forward until it has its items, so a 100 MB transcript opens without reading more than one page, and the
server holds the index and one page, never the file.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.transcript_index import KEY, TranscriptIndex, build_index, load_index, message_key
from orchestrator.view.conversation import render

_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')
HIDDEN = frozenset(
    {
        b"taskCreated",
        b"taskFocused",
        b"taskUnfocused",
        b"taskActive",
        b"taskInteractive",
        b"taskIdle",
        b"taskAskResponded",
        b"taskTokenUsageUpdated",
        b"queuedMessagesUpdated",
    }
)
"""Events the conversation leaves out (token usage is drawn as a chart instead)."""
_PAGE_BYTES = 16 << 20
"""A page stops after reading this much (a long run of hidden lines), and says where to go on."""


class TranscriptCache:
    """The indexes of the last few transcripts opened, rebuilt when a file changes."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._items: OrderedDict[Path, TranscriptIndex] = OrderedDict()

    def get(self, path: Path) -> TranscriptIndex:
        st = path.stat()
        cached = self._items.get(path)
        if cached is not None and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            self._items.move_to_end(path)
            return cached
        index = load_index(path, st.st_size, st.st_mtime_ns) or build_index(path)
        self._items[path] = index
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return index


def _shown(index: TranscriptIndex, line: bytes, offset: int) -> tuple[bool, bytes | None]:
    """Whether a line is part of the conversation, and its message key (if it is a message)."""
    name = _NAME.search(line)
    if name is not None and name.group(1) in HIDDEN:
        return False, None
    key = KEY.search(line)
    if key is None:
        return True, None
    k = message_key(key.group(1), key.group(3))
    last = index.last.get(k)
    return last is None or last == offset + key.start(), k


def page(index: TranscriptIndex, offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` conversation items from byte ``offset`` on (a line start; anything else moves to
    the next line), and the offset to go on from (None at the end)."""
    items: list[dict[str, Any]] = []
    with index.path.open("rb") as fh:
        if offset > 0:
            fh.seek(offset - 1)
            if fh.read(1) != b"\n":
                fh.readline()  # not a line start: begin at the next line
        position = fh.tell()
        start = position
        while len(items) < limit and position - start < _PAGE_BYTES:
            line = fh.readline()
            if not line.endswith(b"\n"):
                return items, None
            here, position = position, position + len(line)
            shown, key = _shown(index, line, here)
            if not shown:
                continue
            try:
                item = render(orjson.loads(line))
            except orjson.JSONDecodeError:
                item = {"kind": "unreadable", "title": "unreadable line", "text": "", "t": None}
            if key is not None and key in index.prompts and item["kind"] == "assistant":
                item["kind"] = "prompt"
            item["at"] = here
            item["depth"] = index.depth(item.get("task"))
            items.append(item)
        return items, (position if position < index.size else None)
