"""Running attempts, as the viewer shows them: the run's live transcripts
(:mod:`orchestrator.results.live_transcripts`), listed and tailed by offset.

A live file counts while the run's lock is held and its attempt has no record yet; once the record is
written (the writer removes the file right after), the attempt is an ordinary one, shown from its
transcript. :class:`Tail` turns the lines appended since the last read into conversation items as the
transcript page does (:func:`orchestrator.view.conversation.render`; lifecycle events left out; a task's
first text is its prompt; subtasks nested), each message with its ``key``: a later state of a message
(its final text, an answered ask) replaces the one shown, so streamed updates never show one by one.
Files are read only from the offset reached, so following an attempt costs what it writes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.live_transcripts import HEADER, live_dir, valid_name
from orchestrator.results.transcript_index import event_of
from orchestrator.view.attempts import AttemptIndex
from orchestrator.view.conversation import render
from orchestrator.view.transcript import HIDDEN

_MAX_READ = 8 << 20
"""The most one read of a live file takes: a client far behind catches up over several reads."""


def live_path(run_dir: Path, name: str) -> Path | None:
    """The live file a URL names, only if it is a plain transcript name directly in the run's live/."""
    if not valid_name(name):
        return None
    directory = live_dir(run_dir)
    path = directory / name
    try:
        if path.is_symlink() or path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path


def read_header(path: Path) -> dict[str, Any] | None:
    """A live file's header line (None if it has none yet, is gone, or is a symlink)."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as fh:
            line = fh.readline(1 << 16)
    except OSError:
        return None
    if not line.endswith(b"\n"):
        return None
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get(HEADER) == 1 else None


def running_row(name: str, head: dict[str, Any]) -> dict[str, Any]:
    """A running attempt as a row of the attempts table."""
    return {
        "name": name,
        "case_id": head.get("case_id"),
        "model_id": head.get("model_id"),
        "repeat": head.get("repeat"),
        "attempt": head.get("attempt"),
        "status": "running",
        "started_at": head.get("started_at"),
        "node": head.get("node"),
        "tags": head.get("tags") or [],
    }


class LiveAttempts:
    """The running attempts of the runs served (thread-safe: handlers run in worker threads)."""

    def __init__(self) -> None:
        self._headers: dict[Path, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def running(self, run_dir: Path, index: AttemptIndex, *, run_running: bool) -> list[dict[str, Any]]:
        """The attempts running now, oldest start first (none unless the run is)."""
        if not run_running:
            return []
        try:
            names = sorted(
                e.name
                for e in os.scandir(live_dir(run_dir))
                if valid_name(e.name) and e.is_file(follow_symlinks=False)  # a run's own files only
            )
        except OSError:
            return []
        rows = []
        for name in names:
            if index.recorded(name) is not None:
                continue
            path = live_dir(run_dir) / name
            head = self._headers.get(path)
            if head is None:
                head = read_header(path)
                if head is None:
                    continue
                with self._lock:
                    self._headers[path] = head
            rows.append(running_row(name, head))
        with self._lock:
            for path in [p for p in self._headers if p.parent == live_dir(run_dir) and p.name not in names]:
                del self._headers[path]
        rows.sort(key=lambda r: str(r["started_at"] or ""))
        return rows


class Tail:
    """One reader of one live file, from its first row on (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._started = False
        self._prompted: set[str] = set()
        self._prompts: set[str] = set()
        self._parents: dict[str, str] = {}
        self._seen: set[str] = set()
        self._delegating: str | None = None

    def read(self) -> list[dict[str, Any]]:
        """The items of the whole lines appended since the last read ([] if none, or the file is gone)."""
        try:
            with open(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(_MAX_READ)
        except OSError:
            return []
        items: list[dict[str, Any]] = []
        position = 0
        while True:
            end = data.find(b"\n", position)
            if end < 0:
                break  # a line being written: read on the next call
            line = data[position : end + 1]
            at = self.offset + position
            position = end + 1
            if not self._started:
                self._started = True  # the header
                continue
            item = self._item(line, at)
            if item is not None:
                items.append(item)
        self.offset += position
        return items

    def _item(self, line: bytes, at: int) -> dict[str, Any] | None:
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            return {"kind": "unreadable", "title": "unreadable line", "text": "", "t": None, "at": at}
        event = event_of(row)
        name = str(event.get("eventName") or "")
        payload = event.get("payload")
        args: list[Any] = payload if isinstance(payload, list) else []
        self._follow_tree(name, args)
        if name.encode() in HIDDEN:
            return None
        item = render(row)
        key = _message_key(args) if name == "message" else None
        if key is not None:
            task = key.partition("/")[0]
            message = args[0].get("message") or {}
            if task not in self._prompted and message.get("say") == "text":
                self._prompted.add(task)  # a task's first text is its prompt
                self._prompts.add(key)
            if key in self._prompts and item["kind"] == "assistant":
                item["kind"] = "prompt"
            if message.get("ask") == "tool" and '"tool":"newTask"' in str(message.get("text") or ""):
                self._delegating = task
            item["key"] = key
        item["at"] = at
        item["depth"] = self._depth(item.get("task"))
        return item

    def _follow_tree(self, name: str, args: list[Any]) -> None:
        """Who is whose subtask, as the transcript page works it out (taskSpawned, or a ``newTask`` ask
        followed by a task never seen before)."""
        if name == "taskSpawned" and len(args) >= 2:
            self._parents[str(args[1])] = str(args[0])
        elif name == "taskCreated" and args:
            task = str(args[0])
            if task not in self._seen:
                if self._delegating is not None and self._delegating != task:
                    self._parents.setdefault(task, self._delegating)
                self._seen.add(task)
            self._delegating = None

    def _depth(self, task: Any) -> int:
        d = 0
        while isinstance(task, str) and task in self._parents and d < 32:
            task = self._parents[task]
            d += 1
        return d


def _message_key(args: list[Any]) -> str | None:
    """A message's task id and ``ts``: what its later states share."""
    body = args[0] if args and isinstance(args[0], dict) else None
    message = body.get("message") if body is not None else None
    if not isinstance(message, dict) or "ts" not in message:
        return None
    return f"{body.get('taskId')}/{message.get('ts')}" if body is not None else None
