"""An attempt's transcript (``events/<attempt>.jsonl``) as a conversation, paged.

Opening a transcript builds an index in one pass over the file's bytes, parsing nothing but the few
lines it must (task spawns, token usage): each line's offset, and, for a ``message`` event, the key of
the message it updates (task id and ``ts``). A message that a later line updates is not shown (its
partial states collapse to the last one); lifecycle events that say nothing to a reader are not shown
either. A page parses only its own lines, so a 100 MB transcript opens in a fraction of a second and
the server never holds more than the index and one page.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_CHUNK = 1 << 22
_LINE = re.compile(
    rb'(?:[^\n]*?"eventName":"([A-Za-z]+)"'
    rb'(?:,"payload":\[\{"taskId":"([^"\n]*)","action":"[a-z]+","message":\{"ts":(\d+))?)?[^\n]*\n'
)
"""One transcript line: its event name and, written in the engine's key order, a message's task id and
``ts`` (the key its updates share)."""
_SPECIAL = frozenset({b"taskSpawned", b"taskTokenUsageUpdated", b"taskCreated"})
_TASK_ID = re.compile(rb'"taskId":"([^"]*)"')
_TS = re.compile(rb'"ts":(\d+)')
_NEW_TASK = b'\\"tool\\":\\"newTask\\"'
"""A ``newTask`` tool ask, as its JSON text appears escaped inside a transcript line."""
_DELEGATION = re.compile(re.escape(_NEW_TASK))
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


@dataclass
class TranscriptIndex:
    path: Path
    size: int
    mtime_ns: int
    visible: list[int] = field(default_factory=list)
    """Offsets of the lines the conversation shows, in file order."""
    lines: int = 0
    parents: dict[str, str] = field(default_factory=dict)
    """Child task id -> parent task id (``taskSpawned``)."""
    prompts: dict[int, str] = field(default_factory=dict)
    """Offset of each task's first ``say: text`` message (its prompt) -> task id."""
    tasks: set[str] = field(default_factory=set)
    """Task ids created so far (while indexing)."""
    delegating: str | None = None
    """The task whose last ask was ``newTask`` (while indexing): the parent of the next new task."""
    usage: list[tuple[float, float, int]] = field(default_factory=list)
    """(seconds, total cost, total tokens) of the root task over time, at most :data:`_MAX_POINTS`."""

    def depth(self, task: str | None) -> int:
        d = 0
        while task is not None and task in self.parents and d < 32:
            task = self.parents[task]
            d += 1
        return d


def _event(row: Any) -> Mapping[str, Any]:
    """The event inside a transcript row (as :func:`orchestrator.results.records.is_partial_message`
    finds it: under ``event``, ``msg`` or ``data``)."""
    event = row
    for key in ("event", "msg", "data"):
        inner = event.get(key) if isinstance(event, Mapping) else None
        if isinstance(inner, Mapping):
            event = inner
    return event if isinstance(event, Mapping) else {}


def build_index(path: Path) -> TranscriptIndex:
    st = path.stat()
    indexer = _Indexer(TranscriptIndex(path, st.st_size, st.st_mtime_ns))
    with path.open("rb") as fh:
        base = 0
        rest = b""
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next chunk
            indexer.lines(data, cut, base)
            rest = data[cut:]
            base += cut
    return indexer.done()


class _Indexer:
    """One pass over a transcript's lines: one regex match a line finds its event name and, for a
    message, its key; only the rare lines that need more (spawns, token usage) are parsed."""

    def __init__(self, index: TranscriptIndex) -> None:
        self.index = index
        self.offsets: list[int] = []
        self.shown: list[bool] = []
        self.keys: dict[bytes, int] = {}  # message key -> position in offsets of its latest line
        self.prompted: set[bytes] = set()
        self.usage: list[tuple[float, float, int]] = []

    def lines(self, data: bytes, cut: int, base: int) -> None:
        offsets, shown = self.offsets, self.shown
        delegations = [m.start() for m in _DELEGATION.finditer(data, 0, cut)]
        delegations.append(cut + 1)
        next_delegation = 0
        for m in _LINE.finditer(data, 0, cut):
            name, task, ts = m.groups()
            offsets.append(base + m.start())
            shown.append(name not in _HIDDEN)
            if name == b"message":
                if task is None or ts is None:  # keys in another order than the engine's
                    task, ts = _slow_key(data, m.start(), m.end())
                if task is not None and ts is not None:
                    self._message(data, m.start(), m.end(), task, ts)
                    if delegations[next_delegation] < m.end():
                        self.index.delegating = task.decode(errors="replace")
            elif name in _SPECIAL:
                _parse_special(name, data[m.start() : m.end()], self.index, self.usage)
            while delegations[next_delegation] < m.end():
                next_delegation += 1

    def _message(self, data: bytes, start: int, end: int, task: bytes, ts: bytes) -> None:
        key = task + b"/" + ts
        position = len(self.offsets) - 1
        earlier = self.keys.get(key)
        prompts = self.index.prompts
        if earlier is not None:
            self.shown[earlier] = False  # superseded by this later state of the same message
            if self.offsets[earlier] in prompts:
                prompts[self.offsets[position]] = prompts.pop(self.offsets[earlier])
        elif task not in self.prompted and data.find(b'"say":"text"', start, end) >= 0:
            self.prompted.add(task)
            prompts[self.offsets[position]] = task.decode(errors="replace")
        self.keys[key] = position

    def done(self) -> TranscriptIndex:
        index = self.index
        index.lines = len(self.offsets)
        index.visible = [o for o, s in zip(self.offsets, self.shown, strict=True) if s]
        step = max(1, len(self.usage) // _MAX_POINTS)
        index.usage = self.usage[::step]
        return index


def _slow_key(data: bytes, start: int, end: int) -> tuple[bytes | None, bytes | None]:
    task = _TASK_ID.search(data, start, end)
    ts = _TS.search(data, start, end)
    return (task.group(1) if task else None), (ts.group(1) if ts else None)


def _parse_special(
    name: bytes, line: bytes, index: TranscriptIndex, usage: list[tuple[float, float, int]]
) -> None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    payload = _event(row).get("payload")
    if not isinstance(payload, list):
        return
    if name == b"taskSpawned" and len(payload) >= 2:
        index.parents[str(payload[1])] = str(payload[0])
    elif name == b"taskCreated" and payload:
        # Engines that delegate without taskSpawned (3.52): the parent asked newTask, then a task
        # never seen before is created. The first task created is the root.
        task = str(payload[0])
        if task not in index.tasks:
            if index.delegating is not None and index.delegating != task:
                index.parents.setdefault(task, index.delegating)
            index.tasks.add(task)
        index.delegating = None
    elif name == b"taskTokenUsageUpdated" and len(payload) >= 2 and isinstance(payload[1], Mapping):
        if str(payload[0]) in index.parents:
            return  # the chart follows the root task
        u = payload[1]
        tokens = int(u.get("totalTokensIn") or 0) + int(u.get("totalTokensOut") or 0)
        t = row.get("t") if isinstance(row, Mapping) else None
        usage.append((float(t or 0.0), float(u.get("totalCost") or 0.0), tokens))


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


def page(index: TranscriptIndex, start: int, limit: int) -> list[dict[str, Any]]:
    """The conversation items of visible lines ``start`` .. ``start + limit``."""
    items: list[dict[str, Any]] = []
    with index.path.open("rb") as fh:
        for n, offset in enumerate(index.visible[start : start + limit], start=start):
            fh.seek(offset)
            try:
                row = orjson.loads(fh.readline())
            except orjson.JSONDecodeError:
                items.append({"n": n, "kind": "unreadable", "title": "unreadable line", "text": ""})
                continue
            item = render(row)
            if offset in index.prompts and item["kind"] == "assistant":
                item["kind"] = "prompt"
            item["n"] = n
            item["depth"] = index.depth(item.get("task"))
            items.append(item)
    return items


def _json_text(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


_SAY_KINDS = {
    "text": "assistant",
    "reasoning": "reasoning",
    "completion_result": "completion",
    "command_output": "output",
    "error": "error",
    "diff_error": "error",
    "rooignore_error": "error",
    "condense_context_error": "error",
    "api_req_retried": "retry",
    "api_req_retry_delayed": "retry",
    "api_req_rate_limit_wait": "retry",
    "subtask_result": "subtask_result",
    "user_feedback": "user",
}
_ASK_KINDS = {
    "tool": "tool",
    "command": "command",
    "followup": "question",
    "completion_result": "completion_ask",
    "api_req_failed": "error",
    "mistake_limit_reached": "error",
}


def _message_item(body: Mapping[str, Any]) -> dict[str, Any]:
    message = body.get("message")
    msg: Mapping[str, Any] = message if isinstance(message, Mapping) else {}
    text = msg.get("text") or ""
    if msg.get("type") == "ask":
        sub = str(msg.get("ask") or "")
        kind = _ASK_KINDS.get(sub, "ask")
    else:
        sub = str(msg.get("say") or "")
        kind = _SAY_KINDS.get(sub, "say")
    item: dict[str, Any] = {"kind": kind, "title": sub, "text": text, "task": body.get("taskId")}
    if sub == "api_req_started":
        item["kind"] = "api"
        info = _json_text(text) or {}
        item["params"] = {k: info[k] for k in ("tokensIn", "tokensOut", "cost", "cancelReason") if k in info}
        item["text"] = ""
    elif kind == "tool":
        params = _json_text(text)
        if params is not None:
            item["title"] = str(params.pop("tool", "tool"))
            item["params"] = params
            item["text"] = ""
            if item["title"] == "newTask":
                item["kind"] = "subtask"
                item["title"] = "starts a subtask"
    elif kind == "completion_ask" and not text:
        item["kind"] = "marker"
        item["title"] = "asks to complete"
    return item


def render(row: Any) -> dict[str, Any]:
    """One transcript row as a conversation item: ``kind`` (prompt, assistant, tool, command, output,
    error, retry, api, completion, subtask, ...), ``title``, ``text``, ``params``, ``task``, ``t``."""
    event = _event(row)
    t = row.get("t") if isinstance(row, Mapping) else None
    name = str(event.get("eventName") or event.get("type") or "event")
    payload = event.get("payload")
    args: list[Any] = payload if isinstance(payload, list) else []
    if name == "message" and args and isinstance(args[0], Mapping):
        item = _message_item(args[0])
    elif name == "taskSpawned" and len(args) >= 2:
        item = {"kind": "subtask", "title": "subtask started", "text": str(args[1]), "task": args[0]}
    elif name == "taskToolFailed" and len(args) >= 3:
        item = {"kind": "error", "title": f"tool {args[1]} failed", "text": str(args[2]), "task": args[0]}
    elif name in ("taskCompleted", "taskAborted", "taskStarted", "taskPaused", "taskUnpaused") and args:
        item = {"kind": "marker", "title": name, "text": "", "task": args[0]}
    else:
        # Anything else (a command sent to the host, a future event): its name and its payload as is.
        item = {"kind": "event", "title": name, "text": orjson.dumps(event).decode()[:4000], "task": None}
    item["t"] = t
    return item
