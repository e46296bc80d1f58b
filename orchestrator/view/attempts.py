"""A run's attempts as the run page needs them: an on-disk index of results.jsonl, read once and then
tailed.

The index (an SQLite file, :mod:`orchestrator.view.attempt_db`) keeps, per record, its byte offset and
the columns the table shows and filters on and the run's figures read: a page of the table, its filters
and their choices are SQL queries, the figures are computed from rows streamed out of it a batch at a
time, and a whole record is read back from its offset only when an attempt is opened. So the server's
memory does not grow with the number of attempts: it holds a page, a batch and SQLite's page cache.
A run in progress grows its results.jsonl by whole lines (one write each); :meth:`AttemptIndex.refresh`
reads only what was appended since the offset the index reached, and leaves a line still being written
(or torn by a kill) for a later refresh. A results.jsonl replaced or cut short is indexed again.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import takewhile
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import RESULTS, Row, flat_values, gc_paused
from orchestrator.results.summary import summarize
from orchestrator.view import attempt_db
from orchestrator.view.attempt_db import COLUMNS, Pin

_BATCH = 2000
"""Rows read out of the index at a time (the lock is held per batch, not for a whole stream)."""
_SELECT = f"idx, offset, reason, {', '.join(COLUMNS)}"
_AS_ROW = itemgetter(*(3 + COLUMNS.index(c) if c in COLUMNS else -1 for c in Row._fields))
"""A selected entry, its last item a None, -> its row's fields in order (None where not kept)."""
_FINAL, _PASSED, _TAGS, _EVENTS = (Row._fields.index(c) for c in ("final", "passed", "tags", "events_file"))
_SHARED = tuple(Row._fields.index(c) for c in ("run_id", "model_id", "config_hash", "status", "error_class"))
_KEPT = itemgetter(*(Row._fields.index(c) for c in COLUMNS))
_STATUS_AT, _MODEL_AT = (4 + COLUMNS.index(c) for c in ("status", "model_id"))
"""Where an inserted row (number, offset, reason, live name, then the columns) has these."""
_INSERT = f"INSERT INTO attempts VALUES ({', '.join('?' * (len(COLUMNS) + 4))})"


@dataclass(frozen=True, slots=True)
class Entry:
    """One results.jsonl line: where it is, and what the table filters and shows."""

    index: int
    offset: int
    row: Row
    """The record's row, with the index's columns (:data:`~orchestrator.view.attempt_db.COLUMNS`) filled
    and the others None: all that the table, ``summarize`` and ``compare_rows`` read."""
    reason: str
    events_file: str | None


def _entry(values: tuple[Any, ...]) -> Entry:
    row = list(_AS_ROW((*values, None)))
    row[_FINAL] = bool(row[_FINAL])  # SQLite gives booleans back as 0 and 1
    if row[_PASSED] is not None:
        row[_PASSED] = bool(row[_PASSED])
    row[_TAGS] = orjson.loads(row[_TAGS])
    for i in _SHARED:  # a few distinct values each: one string each, not one a row (compare holds rows)
        if type(row[i]) is str:
            row[i] = sys.intern(row[i])
    # tuple.__new__ as records.flat_values does: a Row without a Python-level call of 53 arguments.
    return Entry(values[0], values[1], tuple.__new__(Row, row), values[2], row[_EVENTS])


def _stored(r: Row) -> list[Any]:
    values = list(_KEPT(r))
    values[COLUMNS.index("tags")] = orjson.dumps(r.tags)
    return values


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    model: str | None = None
    tag: str | None = None
    passed: bool | None = None
    final_only: bool = False

    def where(self) -> tuple[str, list[Any]]:
        """The filters as an SQL condition on ``attempts`` and its parameters (``bool(passed)`` as the
        table shows it: no check is not passed)."""
        terms = ["1"]
        params: list[Any] = []
        if self.status is not None:
            terms.append("status = ?")
            params.append(self.status)
        if self.model is not None:
            terms.append("model_id = ?")
            params.append(self.model)
        if self.tag is not None:
            terms.append("idx IN (SELECT idx FROM tags WHERE tag = ?)")
            params.append(self.tag)
        if self.passed is True:
            terms.append("passed")
        elif self.passed is False:
            terms.append("(passed IS NULL OR NOT passed)")
        if self.final_only:
            terms.append("final")
        return " AND ".join(terms), params


class AttemptIndex:
    """The index of one run's results.jsonl. Thread-safe: the server refreshes it from worker threads."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RESULTS
        self._conn, self.db_path = attempt_db.open_index(run_dir)
        self._lock = threading.Lock()
        self._pin = attempt_db.read_pin(self._conn)
        self._size: int | None = None
        self._summary: tuple[Pin, dict[str, Any]] | None = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def offset(self) -> int:
        """How far results.jsonl has been read: every complete line before it is indexed."""
        return self._pin.offset

    @property
    def count(self) -> int:
        """How many records are indexed."""
        return self._pin.count

    def refresh(self, until: int | None = None) -> int:
        """Index the lines appended since the last call (only until ``until`` entries are indexed, when
        given: a first page needs no more); returns how many were added."""
        with self._lock:
            # One writer at a time, across processes too: the offset is read again inside the lock.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                added = self._refresh(until)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return added

    def _refresh(self, until: int | None) -> int:
        pin = attempt_db.read_pin(self._conn)
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            if pin.offset:
                attempt_db.clear(self._conn)
            self._size, self._pin = 0, attempt_db.read_pin(self._conn)
            return 0
        with fh, gc_paused():
            st = os.fstat(fh.fileno())
            if not attempt_db.still_valid(pin, st, fh.fileno()):
                attempt_db.clear(self._conn)  # replaced or rewritten: index it again
                pin = Pin(st.st_dev, st.st_ino, 0, "", 0)
            self._size = st.st_size
            fh.seek(pin.offset)
            self._pin, added = self._read(fh, pin, st, until)
            attempt_db.write_pin(self._conn, self._pin)
        return added

    def _read(self, fh: Any, pin: Pin, st: os.stat_result, until: int | None) -> tuple[Pin, int]:
        count, offset = pin.count, pin.offset
        rows: list[tuple[Any, ...]] = []
        tags: list[tuple[int, str]] = []
        for line in fh:
            if until is not None and count >= until:
                break
            if not line.endswith(b"\n"):
                break  # being written (or torn by a kill): read again on the next refresh
            start = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                row = flat_values(data)
                reason = str(data.get("reason") or "")
                name = f"{row.case_id}__{row.model_id}__{row.repeat}__{row.attempt}.jsonl"
                values = (count, start, reason, name, *_stored(row))
                tags += [(count, str(t)) for t in row.tags]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # the report names a damaged line; the viewer shows the others
            rows.append(values)
            count += 1
            if len(rows) >= _BATCH:  # into the file a batch at a time: memory holds one batch
                self._insert(rows, tags)
        self._insert(rows, tags)
        pinned = attempt_db.pin_of(fh.fileno(), offset) if offset else ""
        return Pin(st.st_dev, st.st_ino, offset, pinned, count), count - pin.count

    def _insert(self, rows: list[tuple[Any, ...]], tags: list[tuple[int, str]]) -> None:
        self._conn.executemany(_INSERT, rows)
        self._conn.executemany("INSERT INTO tags VALUES (?, ?)", tags)
        # The filters' choices, kept apart: a few rows to read, not a scan of every attempt.
        choices = {("status", r[_STATUS_AT]) for r in rows} | {("model", r[_MODEL_AT]) for r in rows}
        choices |= {("tag", tag) for _, tag in tags}
        self._conn.executemany("INSERT OR IGNORE INTO choices VALUES (?, ?)", choices)
        rows.clear()
        tags.clear()

    @property
    def opened(self) -> bool:
        """Whether results.jsonl has been looked at (its size is known)."""
        return self._size is not None

    @property
    def complete(self) -> bool:
        """Whether every line results.jsonl held at the last refresh is indexed."""
        return self._size is not None and self._pin.offset >= self._size

    def estimated_total(self) -> int:
        """How many records results.jsonl holds: exact once complete, else from the bytes per record
        indexed so far."""
        count, offset = self._pin.count, self._pin.offset
        if self.complete or not count or self._size is None or offset <= 0:
            return count
        return round(count * self._size / offset)

    def _query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def record(self, index: int) -> dict[str, Any]:
        """The whole record of the ``index``-th attempt, read from its offset. IndexError if none."""
        found = self._query("SELECT offset FROM attempts WHERE idx = ?", (index,))
        if index < 0 or not found:
            raise IndexError(index)
        with self.path.open("rb") as fh:
            fh.seek(found[0][0])
            data: dict[str, Any] = orjson.loads(fh.readline())
        return data

    def page(self, filters: Filters, start: int, limit: int) -> tuple[int, list[Entry]]:
        """The number of entries matching ``filters`` and those from ``start`` on, at most ``limit``."""
        where, params = filters.where()
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM attempts WHERE {where}", params).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {_SELECT} FROM attempts WHERE {where} ORDER BY idx LIMIT ? OFFSET ?",
                [*params, limit, start],
            ).fetchall()
        return total, [_entry(r) for r in rows]

    def entries(self, since: int = 0, *, events_only: bool = False) -> Iterator[Entry]:
        """Every entry from the ``since``-th on, in file order, read a batch at a time (entries indexed
        while the stream goes are included); with ``events_only``, those with a transcript only."""
        where = "idx >= ?" + (" AND events_file IS NOT NULL" if events_only else "")
        while True:
            rows = self._query(
                f"SELECT {_SELECT} FROM attempts WHERE {where} ORDER BY idx LIMIT ?", (since, _BATCH)
            )
            for r in rows:
                yield _entry(r)
            if len(rows) < _BATCH:
                return
            since = rows[-1][0] + 1

    def rows(self) -> Iterator[Row]:
        """Every entry's row, in file order (what summarize and compare read)."""
        return (e.row for e in self.entries())

    def finals(self) -> Iterator[Row]:
        """The final row of each (case, model, repeat) -- the last written, when a forced resume left
        several -- in :func:`~orchestrator.results.compare.pairing_order`: what compare pairs, streamed.
        Read on a connection of its own, so the index's lock is not held while the consumer works.
        SQLite sorts them into a temporary table in a file (its cache bounded, never in Python), and
        they are streamed from there: the index file is read-locked only while that table is made, not
        for the whole compare (a refresh of a live run's index would wait for it)."""
        conn = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            conn.execute("PRAGMA temp_store = FILE")
            conn.execute(
                f"CREATE TEMP TABLE finals AS SELECT {_SELECT} FROM attempts WHERE idx IN"
                " (SELECT max(idx) FROM attempts WHERE final GROUP BY case_id, model_id, repeat)"
                " ORDER BY model_id, case_id, repeat"  # BINARY collation: UTF-8 bytes sort as str does
            )
            cursor = conn.execute("SELECT * FROM temp.finals ORDER BY rowid")
            while rows := cursor.fetchmany(_BATCH):
                for r in rows:
                    yield _entry(r).row
        finally:
            conn.close()

    def recorded(self, live_name: str) -> int | None:
        """The index of the last record whose live transcript was named ``live_name``
        (``case__model__repeat__attempt.jsonl``), if there is one."""
        found = self._query("SELECT max(idx) FROM attempts WHERE live_name = ?", (live_name,))
        return found[0][0] if found else None

    def choices(self) -> dict[str, list[str]]:
        """The values the table's filters offer."""
        found: dict[str, list[str]] = {"status": [], "model": [], "tag": []}
        for kind, value in self._query("SELECT kind, value FROM choices"):
            found[kind].append(value)
        return {kind: sorted(values) for kind, values in found.items()}

    def summary(self) -> dict[str, Any]:
        """The run's figures (summary.json's definitions), over what is indexed now; cached per size."""
        pin = self._pin
        n = pin.count
        if self._summary is None or self._summary[0] != pin:
            self._summary = (pin, summarize(e.row for e in takewhile(lambda e: e.index < n, self.entries())))
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
