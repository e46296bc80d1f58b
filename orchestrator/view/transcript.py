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
_EVENT_NAME = re.compile(rb'"eventName":"([A-Za-z]+)"')
_TASK_ID = re.compile(rb'"taskId":"([^"]*)"')
_TS = re.compile(rb'"ts":(\d+)')
_NEW_TASK = b'\\"tool\\":\\"newTask\\"'
"""A ``newTask`` tool ask, as its JSON text appears escaped inside a transcript line."""
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
    prompted: set[str] = field(default_factory=set)
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
    index = TranscriptIndex(path, st.st_size, st.st_mtime_ns)
    offsets: list[int] = []
    keys: dict[bytes, int] = {}  # message key -> position in offsets of its latest line
    shown: list[bool] = []
    usage: list[tuple[float, float, int]] = []
    with path.open("rb") as fh:
        base = 0
        rest = b""
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            data = rest + chunk
            start = 0
            while True:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                _index_line(data, start, end, base + start, offsets, keys, shown, usage, index)
                start = end + 1
            rest = data[start:]
            base += start
    index.lines = len(offsets)
    index.visible = [o for o, s in zip(offsets, shown, strict=True) if s]
    step = max(1, len(usage) // _MAX_POINTS)
    index.usage = usage[::step]
    return index


def _index_line(
    data: bytes,
    start: int,
    end: int,
    offset: int,
    offsets: list[int],
    keys: dict[bytes, int],
    shown: list[bool],
    usage: list[tuple[float, float, int]],
    index: TranscriptIndex,
) -> None:
    m = _EVENT_NAME.search(data, start, end)
    name = m.group(1) if m else b""
    visible = name not in _HIDDEN
    if name == b"message":
        task = _TASK_ID.search(data, start, end)
        ts = _TS.search(data, start, end)
        if task and ts:
            key = task.group(1) + b"/" + ts.group(1)
            earlier = keys.get(key)
            if earlier is not None:
                shown[earlier] = False  # superseded by this later state of the same message
                if offsets[earlier] in index.prompts:
                    index.prompts[offset] = index.prompts.pop(offsets[earlier])
            else:
                tid = task.group(1).decode(errors="replace")
                if tid not in index.prompted and data.find(b'"say":"text"', start, end) >= 0:
                    index.prompted.add(tid)
                    index.prompts[offset] = tid
            keys[key] = len(offsets)
        if task and data.find(_NEW_TASK, start, end) >= 0:
            index.delegating = task.group(1).decode(errors="replace")
    elif name in (b"taskSpawned", b"taskTokenUsageUpdated", b"taskCreated"):
        _parse_special(name, data[start:end], index, usage)
    offsets.append(offset)
    shown.append(visible)


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
