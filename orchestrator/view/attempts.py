"""A run's attempts as the run page needs them: an index of results.jsonl, read once and then tailed.

The index keeps, per record, its byte offset and a slim :class:`~orchestrator.results.report.Row` (plus
the few columns the table shows): a page of the table, its filters and the run's figures come from the
index, and a whole record is read back from its offset only when an attempt is opened. A run in progress
grows its results.jsonl by whole lines (one write each); :meth:`AttemptIndex.refresh` reads only what was
appended since the last offset, and leaves a line still being written for the next refresh.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import RESULTS, Row, flat_values
from orchestrator.results.summary import summarize
from orchestrator.status import Status

_INFRA = frozenset(s.value for s in Status if s.is_infra)


@dataclass(frozen=True, slots=True)
class Entry:
    """One results.jsonl line: where it is, and what the table filters and shows."""

    index: int
    offset: int
    row: Row
    reason: str
    events_file: str | None


def _row(data: dict[str, Any]) -> Row:
    # The one reading of a record's line (records.flat_values: load()'s columns, the report's rows).
    return flat_values(data)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    model: str | None = None
    tag: str | None = None
    passed: bool | None = None
    final_only: bool = False

    def match(self, e: Entry) -> bool:
        r = e.row
        return (
            (self.status is None or r.status == self.status)
            and (self.model is None or r.model_id == self.model)
            and (self.tag is None or self.tag in r.tags)
            and (self.passed is None or bool(r.passed) == self.passed)
            and (not self.final_only or r.final)
        )


class AttemptIndex:
    """The index of one run's results.jsonl. Thread-safe: the server refreshes it from worker threads."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RESULTS
        self.entries: list[Entry] = []
        self._offset = 0
        self._size: int | None = None
        self._lock = threading.Lock()
        self._summary: tuple[int, dict[str, Any]] | None = None

    @property
    def offset(self) -> int:
        """How far results.jsonl has been read: every complete line before it is indexed."""
        return self._offset

    def refresh(self, until: int | None = None) -> int:
        """Index the lines appended since the last call (only until ``until`` entries are indexed, when
        given: a first page needs no more); returns how many were added."""
        with self._lock:
            try:
                fh = self.path.open("rb")
            except FileNotFoundError:
                self._size = 0
                return 0
            enabled = gc.isenabled()
            gc.disable()  # many small objects with no cycles: the cyclic GC would only slow the read
            try:
                with fh:
                    self._size = os.fstat(fh.fileno()).st_size
                    fh.seek(self._offset)
                    return self._read(fh, until)
            finally:
                if enabled:
                    gc.enable()

    @property
    def opened(self) -> bool:
        """Whether results.jsonl has been looked at (its size is known)."""
        return self._size is not None

    @property
    def complete(self) -> bool:
        """Whether every line results.jsonl held at the last refresh is indexed."""
        return self._size is not None and self._offset >= self._size

    def estimated_total(self) -> int:
        """How many records results.jsonl holds: exact once complete, else from the bytes per record
        indexed so far."""
        if self.complete or not self.entries or self._size is None or self._offset <= 0:
            return len(self.entries)
        return round(len(self.entries) * self._size / self._offset)

    def _read(self, lines: Iterable[bytes], until: int | None) -> int:
        added = 0
        offset = self._offset
        for line in lines:
            if until is not None and len(self.entries) >= until:
                break
            if not line.endswith(b"\n"):
                break  # being written (or torn by a kill): read again on the next refresh
            start = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                reason = sys.intern(str(data.get("reason") or ""))
                entry = Entry(len(self.entries), start, _row(data), reason, data.get("events_file"))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # the report names a damaged line; the viewer shows the others
            self.entries.append(entry)
            self._offset = offset  # as each entry lands: pages read the index while it grows
            added += 1
        self._offset = offset
        return added

    def record(self, index: int) -> dict[str, Any]:
        """The whole record of the ``index``-th attempt, read from its offset. IndexError if none."""
        if index < 0:
            raise IndexError(index)
        entry = self.entries[index]
        with self.path.open("rb") as fh:
            fh.seek(entry.offset)
            data: dict[str, Any] = orjson.loads(fh.readline())
        return data

    def page(self, filters: Filters, start: int, limit: int) -> tuple[int, list[Entry]]:
        """The number of entries matching ``filters`` and those from ``start`` on, at most ``limit``."""
        matching = [e for e in self.entries if filters.match(e)]
        return len(matching), matching[start : start + limit]

    def choices(self) -> dict[str, list[str]]:
        """The values the table's filters offer."""
        statuses: set[str] = set()
        models: set[str] = set()
        tags: set[str] = set()
        for e in self.entries:
            statuses.add(e.row.status)
            models.add(e.row.model_id)
            tags.update(e.row.tags)
        return {"status": sorted(statuses), "model": sorted(models), "tag": sorted(tags)}

    def summary(self) -> dict[str, Any]:
        """The run's figures (summary.json's definitions), over what is indexed now; cached per size."""
        n = len(self.entries)
        if self._summary is None or self._summary[0] != n:
            self._summary = (n, summarize(e.row for e in self.entries))
        return self._summary[1]


def as_json(e: Entry) -> dict[str, Any]:
    """A table row."""
    r = e.row
    return {
        "index": e.index,
        "case_id": r.case_id,
        "model_id": r.model_id,
        "repeat": r.repeat,
        "attempt": r.attempt,
        "final": r.final,
        "status": r.status,
        "passed": r.passed,
        "error": r.is_error,
        "cost_usd": r.cost_usd,
        "duration_s": r.duration_s,
        "tags": list(r.tags),
        "reason": e.reason,
    }
