"""An attempt's transcript (``events/<attempt>.jsonl``) as a conversation, paged by byte offset.

Opening a transcript builds a small index with a few regex scans of its bytes, which run in C; Python
sees only the lines that matter to the index: a message's later states (``action: updated``), task
creations and delegations, each task's first text (its prompt), token usage. A message is shown in its
last state only (a line that a later line of the same task and ``ts`` updates is skipped), and
lifecycle events that say nothing to a reader are left out. A page starts at a byte offset and reads
forward until it has its items, so a 100 MB transcript opens without reading more than one page, and the
server holds the index and one page, never the file.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orchestrator.view.conversation import event_of, render

_CHUNK = 1 << 22
_KEY = re.compile(rb'"taskId":"([^"\n]*)","action":"([a-z]+)","message":\{"ts":(\d+)')
"""A message's task id, action and ``ts`` (the key its updates share), in the engine's key order."""
_UPDATE = re.compile(rb'"taskId":"[^"\n]*","action":"updated","message":\{"ts":\d+')
"""A message's later state; the matched text itself is the message's key (see :func:`_key`)."""
_TEXT = re.compile(
    rb'"taskId":"([^"\n]*)","action":"[a-z]+","message":\{"ts":(\d+),"type":"say","say":"text"'
)
_TASK_EVENT = b'"eventName":"task'
"""Where a task lifecycle event starts: found with ``bytes.find`` (a memchr-speed scan, several times
faster than a regex's), then matched by :data:`_EVENTS` there."""
_EVENTS = re.compile(rb'"eventName":"(taskCreated|taskSpawned|taskTokenUsageUpdated)"')
"""The few events the index reads: task creations and spawns, token usage."""
_ARGS = re.compile(rb',"payload":\["([^"\n]*)"(?:,"([^"\n]*)")?')
_PROMPT_WINDOW = 1 << 16
_DELEGATION = b'\\"tool\\":\\"newTask\\"'
"""A ``newTask`` tool ask, as its JSON text appears escaped inside a transcript line."""
_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')
_HIDDEN = frozenset(
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
_MAX_POINTS = 200
_PAGE_BYTES = 16 << 20
"""A page stops after reading this much (a long run of hidden lines), and says where to go on."""


@dataclass
class TranscriptIndex:
    path: Path
    size: int
    mtime_ns: int
    last: dict[bytes, int] = field(default_factory=dict)
    """Key (:func:`_key`) of each updated message -> file offset of its last update's key."""
    prompts: set[bytes] = field(default_factory=set)
    """The key of each task's first ``say: text`` message: its prompt."""
    parents: dict[str, str] = field(default_factory=dict)
    """Child task id -> parent task id."""
    usage: list[tuple[float, float, int]] = field(default_factory=list)
    """(seconds, total cost, total tokens) of the root task over time, at most :data:`_MAX_POINTS`."""

    def depth(self, task: str | None) -> int:
        d = 0
        while task is not None and task in self.parents and d < 32:
            task = self.parents[task]
            d += 1
        return d


def _key(task: bytes, ts: bytes) -> bytes:
    """A message's key (its task id and ``ts``), spelled as :data:`_UPDATE` matches its updates: the
    scan keeps each match's text as it is, with no Python-level slicing per line."""
    return b'"taskId":"' + task + b'","action":"updated","message":{"ts":' + ts


def _finds(data: bytes, needle: bytes, cut: int) -> Iterator[int]:
    """Every offset of ``needle`` in ``data[:cut]``."""
    at = data.find(needle, 0, cut)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1, cut)


def build_index(path: Path) -> TranscriptIndex:
    st = path.stat()
    index = TranscriptIndex(path, st.st_size, st.st_mtime_ns)
    order: list[tuple[int, str, str, str]] = []  # (offset, what, task, child): creations and delegations
    usage: list[int] = []
    with path.open("rb") as fh:
        base = 0
        rest = b""
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next chunk
            _scan(data, cut, base, index, order, usage)
            rest = data[cut:]
            base += cut
    order.sort()
    _tree(index, order)
    index.prompts = _prompts(path, [(o, task) for o, what, task, _ in order if what == "created"])
    index.usage = _usage(path, usage, index)
    return index


def _scan(
    data: bytes,
    cut: int,
    base: int,
    index: TranscriptIndex,
    order: list[tuple[int, str, str, str]],
    usage: list[int],
) -> None:
    # The one pass that sees every message line: a comprehension, one call per match (later updates of
    # a key overwrite earlier ones, as they should).
    index.last.update({m.group(): base + m.start() for m in _UPDATE.finditer(data, 0, cut)})
    for at in _finds(data, _TASK_EVENT, cut):
        m = _EVENTS.match(data, at, cut)
        if m is None:
            continue
        name = m.group(1)
        if name == b"taskTokenUsageUpdated":
            usage.append(base + m.start())
            continue
        args = _ARGS.match(data, m.end(), cut)
        if args is None:
            continue
        task = args.group(1).decode(errors="replace")
        if name == b"taskCreated":
            order.append((base + m.start(), "created", task, ""))
        elif args.group(2) is not None:
            order.append((base + m.start(), "spawned", task, args.group(2).decode(errors="replace")))
    for at in _finds(data, _DELEGATION, cut):
        start = data.rfind(b"\n", 0, at) + 1
        key = _KEY.search(data, start, at)
        if key is not None:
            order.append((base + at, "delegates", key.group(1).decode(errors="replace"), ""))


def _prompts(path: Path, created: list[tuple[int, str]]) -> set[bytes]:
    """The key of each task's first ``say: text`` message, looked for just after the task's creation
    (from the start of the file for the root, when no creation was recorded)."""
    keys: set[bytes] = set()
    seen: set[str] = set()
    with path.open("rb") as fh:
        for offset, task in created or [(0, "")]:
            if task in seen:
                continue
            seen.add(task)
            fh.seek(offset)
            window = fh.read(_PROMPT_WINDOW)
            for m in _TEXT.finditer(window):
                if not task or m.group(1).decode(errors="replace") == task:
                    keys.add(_key(m.group(1), m.group(2)))
                    break
    return keys


def _tree(index: TranscriptIndex, order: list[tuple[int, str, str, str]]) -> None:
    """Who is whose subtask: ``taskSpawned`` says it; engines that delegate without it (3.52) ask
    ``newTask`` in the parent, then create a task never seen before. The first task created is the root."""
    seen: set[str] = set()
    delegating: str | None = None
    for _, what, task, child in order:
        if what == "spawned":
            index.parents[child] = task
        elif what == "delegates":
            delegating = task
        else:
            if task not in seen:
                if delegating is not None and delegating != task:
                    index.parents.setdefault(task, delegating)
                seen.add(task)
            delegating = None


def _usage(path: Path, offsets: list[int], index: TranscriptIndex) -> list[tuple[float, float, int]]:
    """The root task's cost and tokens over time, from at most :data:`_MAX_POINTS` usage lines."""
    step = max(1, len(offsets) // _MAX_POINTS)
    points: list[tuple[float, float, int]] = []
    with path.open("rb") as fh:
        for offset in offsets[::step]:
            low = max(0, offset - 4096)  # the event name is near the start of its line
            fh.seek(low)
            newline = fh.read(offset - low).rfind(b"\n")
            if newline < 0 and low > 0:
                continue
            fh.seek(low + newline + 1)
            try:
                row = orjson.loads(fh.readline())
            except orjson.JSONDecodeError:
                continue
            payload = event_of(row).get("payload")
            if not isinstance(payload, list) or len(payload) < 2 or not isinstance(payload[1], dict):
                continue
            if str(payload[0]) in index.parents:
                continue  # the chart follows the root task
            u = payload[1]
            tokens = int(u.get("totalTokensIn") or 0) + int(u.get("totalTokensOut") or 0)
            t = row.get("t") if isinstance(row, dict) else None
            points.append((float(t or 0.0), float(u.get("totalCost") or 0.0), tokens))
    return points


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
        index = build_index(path)
        self._items[path] = index
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return index


def _shown(index: TranscriptIndex, line: bytes, offset: int) -> tuple[bool, bytes | None]:
    """Whether a line is part of the conversation, and its message key (if it is a message)."""
    name = _NAME.search(line)
    if name is not None and name.group(1) in _HIDDEN:
        return False, None
    key = _KEY.search(line)
    if key is None:
        return True, None
    k = _key(key.group(1), key.group(3))
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
