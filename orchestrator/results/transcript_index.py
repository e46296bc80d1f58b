"""An attempt transcript's offset index: which lines a later update replaces, each task's prompt and
parent, token usage over time. Built from the transcript's bytes with a few regex scans (in C); Python
sees only the lines that matter to it: a message's later states (``action: updated``), task creations and
delegations, each task's first text (its prompt), token usage.

The run's writer saves it beside a big transcript (``events/<attempt>.idx``, from :data:`SAVE_FROM` on)
while it holds the bytes, so ``orchestrate view`` opens a 100 MB transcript by reading the index and one
page, not the whole file.
On disk: one JSON object, ``v`` (format), ``size``, ``mtime_ns`` and ``ends`` (a hash of the
transcript's first and last 64 KiB), then ``last`` (task id -> flat ``[ts, offset, ...]`` of each updated
message's last state), ``prompts`` (task id -> ``ts``), ``parents`` and ``usage``. A reader uses it
only while the transcript still matches it (:func:`load_index`); otherwise it builds the index itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

KEY = re.compile(rb'"taskId":"([^"\n]*)","action":"([a-z]+)","message":\{"ts":(\d+)')
"""A message's task id, action and ``ts`` (the key its updates share), in the engine's key order."""
_UPDATE = re.compile(rb'"taskId":"([^"\n]*)","action":"updated","message":\{"ts":(\d+)')
"""A message's later state; the matched text itself is the message's key (see :func:`message_key`)."""
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
_MAX_POINTS = 200
_LINE = 1 << 20
"""The longest token usage line read (a few hundred bytes in practice)."""
_CHUNK = 1 << 22
_FORMAT = 1
SAVE_FROM = 1 << 20
"""The writer saves the index of transcripts from this size on. A smaller one the viewer indexes in a few
ms; saving its index would cost the writer more per attempt than that (a second file in the events
directory its next fsyncs must flush: measured, it doubled ``write_transcript``'s time for a 60-row
transcript)."""
_ENDS = 1 << 16
"""How much of each end of the transcript the saved index's hash covers."""


@dataclass
class TranscriptIndex:
    path: Path
    size: int
    mtime_ns: int
    last: dict[bytes, int] = field(default_factory=dict)
    """Key (:func:`message_key`) of each updated message -> file offset of its last update's key."""
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


def message_key(task: bytes, ts: bytes) -> bytes:
    """A message's key (its task id and ``ts``), spelled as :data:`_UPDATE` matches its updates: the
    scan keeps each match's text as it is, with no Python-level slicing per line."""
    return b'"taskId":"' + task + b'","action":"updated","message":{"ts":' + ts


def index_path(transcript: Path) -> Path:
    """Where a transcript's saved index lives: ``events/<attempt>.idx``."""
    return transcript.with_suffix(".idx")


def _finds(data: bytes, needle: bytes, cut: int) -> Iterator[int]:
    """Every offset of ``needle`` in ``data[:cut]``."""
    at = data.find(needle, 0, cut)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1, cut)


Read = Callable[[int, int], bytes]
"""``read(offset, n)``: up to ``n`` bytes of the transcript from ``offset``."""


def build_index(path: Path) -> TranscriptIndex:
    """The index of the transcript at ``path``, read in chunks (its whole size is never in memory)."""
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

        def read(offset: int, n: int) -> bytes:
            fh.seek(offset)
            return fh.read(n)

        _finish(index, order, usage, read)
    return index


def index_bytes(data: bytes, path: Path, mtime_ns: int) -> TranscriptIndex:
    """The index of a transcript whose bytes are ``data`` (the writer's: it holds them already)."""
    index = TranscriptIndex(path, len(data), mtime_ns)
    order: list[tuple[int, str, str, str]] = []
    usage: list[int] = []
    _scan(data, data.rfind(b"\n") + 1, 0, index, order, usage)
    _finish(index, order, usage, lambda offset, n: data[offset : offset + n])
    return index


def _finish(
    index: TranscriptIndex, order: list[tuple[int, str, str, str]], usage: list[int], read: Read
) -> None:
    order.sort()
    _tree(index, order)
    index.prompts = _prompts(read, [(o, task) for o, what, task, _ in order if what == "created"])
    index.usage = _usage(read, usage, index)


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
        key = KEY.search(data, start, at)
        if key is not None:
            order.append((base + at, "delegates", key.group(1).decode(errors="replace"), ""))


def _prompts(read: Read, created: list[tuple[int, str]]) -> set[bytes]:
    """The key of each task's first ``say: text`` message, looked for just after the task's creation
    (from the start of the file for the root, when no creation was recorded)."""
    keys: set[bytes] = set()
    seen: set[str] = set()
    for offset, task in created or [(0, "")]:
        if task in seen:
            continue
        seen.add(task)
        for m in _TEXT.finditer(read(offset, _PROMPT_WINDOW)):
            if not task or m.group(1).decode(errors="replace") == task:
                keys.add(message_key(m.group(1), m.group(2)))
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


def event_of(row: Any) -> Mapping[str, Any]:
    """The event inside a transcript row: under ``event`` (what a worker writes), ``msg`` or ``data``
    (older transcripts)."""
    event = row
    for key in ("event", "msg", "data"):
        inner = event.get(key) if isinstance(event, Mapping) else None
        if isinstance(inner, Mapping):
            event = inner
    return event if isinstance(event, Mapping) else {}


def _usage(read: Read, offsets: list[int], index: TranscriptIndex) -> list[tuple[float, float, int]]:
    """The root task's cost and tokens over time, from at most :data:`_MAX_POINTS` usage lines."""
    step = max(1, len(offsets) // _MAX_POINTS)
    points: list[tuple[float, float, int]] = []
    for offset in offsets[::step]:
        low = max(0, offset - 4096)  # the event name is near the start of its line
        newline = read(low, offset - low).rfind(b"\n")
        if newline < 0 and low > 0:
            continue
        line = read(low + newline + 1, _LINE)
        end = line.find(b"\n")
        try:
            row = orjson.loads(line if end < 0 else line[:end])
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


# ------------------------------------------------------------------------------------ on disk


def _ends(head: bytes, tail: bytes) -> str:
    return hashlib.blake2b(head + b"\0" + tail, digest_size=16).hexdigest()


def _key_parts(key: bytes) -> tuple[str, int]:
    """A key's task id and ``ts`` (the inverse of :func:`message_key`)."""
    m = _UPDATE.match(key)
    assert m is not None  # every key came from _UPDATE or message_key
    return m.group(1).decode(), int(m.group(2))


def dump_index(index: TranscriptIndex, data: bytes) -> bytes:
    """The saved form of ``index`` of a transcript whose bytes are ``data`` (see the module docstring)."""
    last: dict[str, list[int]] = {}
    for key, offset in index.last.items():
        task, ts = _key_parts(key)
        last.setdefault(task, []).extend((ts, offset))
    prompts: dict[str, int] = dict(_key_parts(key) for key in index.prompts)
    saved = {
        "v": _FORMAT,
        "size": index.size,
        "mtime_ns": index.mtime_ns,
        "ends": _ends(data[:_ENDS], data[-_ENDS:]),
        "last": last,
        "prompts": prompts,
        "parents": index.parents,
        "usage": index.usage,
    }
    return orjson.dumps(saved) + b"\n"


def load_index(path: Path, size: int, mtime_ns: int) -> TranscriptIndex | None:
    """The saved index of the transcript at ``path`` (whose size and mtime are given), or None when there
    is none or it does not match the transcript as it is now (size, mtime, the hash of its ends) or cannot
    be read whole: then the caller builds it, never showing lines by a stale index."""
    try:
        saved = orjson.loads(index_path(path).read_bytes())
        if (
            not isinstance(saved, dict)
            or saved.get("v") != _FORMAT
            or (saved.get("size"), saved.get("mtime_ns")) != (size, mtime_ns)
        ):
            return None
        with path.open("rb") as fh:
            head = fh.read(_ENDS)
            fh.seek(max(0, size - _ENDS))
            tail = fh.read(_ENDS)
        if saved.get("ends") != _ends(head, tail):
            return None
        index = TranscriptIndex(path, size, mtime_ns)
        for task, flat in saved["last"].items():
            t = task.encode()
            index.last.update(
                {message_key(t, str(ts).encode()): off for ts, off in zip(flat[::2], flat[1::2], strict=True)}
            )
        index.prompts = {
            message_key(task.encode(), str(ts).encode()) for task, ts in saved["prompts"].items()
        }
        index.parents = {str(k): str(v) for k, v in saved["parents"].items()}
        index.usage = [(float(t), float(c), int(n)) for t, c, n in saved["usage"]]
        return index
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def save_index(path: Path, data: bytes) -> None:
    """Save the index of the transcript just written at ``path`` with bytes ``data``, atomically, after it
    (a crash between the two leaves no index, or an old one that no longer matches: both are ignored)."""
    index = index_bytes(data, path, path.stat().st_mtime_ns)
    target = index_path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(dump_index(index, data))
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
