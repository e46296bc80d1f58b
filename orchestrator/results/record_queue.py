"""The scheduler's records, written on a thread of their own.

Each record costs fsyncs (its transcript, the events directory, results.jsonl): milliseconds each on
many disks, far more on network filesystems. Written on the scheduler's thread, they would hold up what
that thread must do at once (grant slots, start attempts, notice a dead worker). The thread takes every
record waiting when it wakes, so a burst of finished attempts shares its wake-ups, and its fsyncs: the
batch's transcripts and diffs (each fsynced), one fsync of their directory, then every record in one write
and one fsync of results.jsonl (group commit).

A record counts as written once :class:`~orchestrator.results.store.ResultsWriter` has fsynced it; only then
is it reported (:meth:`RecordQueue.written`). One that was handed over but not written when the process
died is not lost: the attempt has no record, so resume runs it again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.results.records import (
    AttemptRecord,
    DuplicateRecordError,
    ResultsError,
    ResultsWriteError,
)
from orchestrator.results.store import ResultsWriter
from orchestrator.suite.plan import AttemptKey

log = logging.getLogger(__name__)


@dataclass
class _Item:
    record: AttemptRecord
    key: AttemptKey
    number: int
    transcript: Sequence[Mapping[str, Any]] = field(default_factory=list)
    diff: str | None = None


class RecordQueue:
    """Hands records to ``writer`` on a background thread; see the module docstring."""

    def __init__(self, writer: ResultsWriter) -> None:
        self._writer = writer
        self._todo: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._written: deque[AttemptRecord] = deque()
        self._error: ResultsError | None = None
        # Each counter has one writer: the scheduler's thread, or (dropped) the writing thread.
        self._handed = 0
        self._reported = 0
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="results-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records handed over and not yet reported as written."""
        return self._handed - self._reported - self._dropped

    @property
    def error(self) -> ResultsError | None:
        """Why writing stopped (disk full, ...): no later record is written."""
        return self._error

    def put(
        self,
        record: AttemptRecord,
        key: AttemptKey,
        number: int,
        transcript: Sequence[Mapping[str, Any]] = (),
        diff: str | None = None,
    ) -> None:
        """Write ``record`` (after its transcript and workspace diff, whose paths it then names)."""
        self._handed += 1
        self._todo.put(_Item(record, key, number, list(transcript), diff))

    def written(self) -> list[AttemptRecord]:
        """The records written since the last call, in the order they were written."""
        out = []
        while self._written:
            out.append(self._written.popleft())
        self._reported += len(out)
        return out

    def close(self) -> list[AttemptRecord]:
        """Write what was handed over, stop the thread; returns what :meth:`written` has not yet."""
        self._todo.put(None)
        self._thread.join()
        return self.written()

    def _run(self) -> None:
        while True:
            batch = [self._todo.get()]
            while True:
                try:
                    batch.append(self._todo.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            items = [item for item in batch if item is not None]
            if self._error is None:
                self._write(items)
            else:
                self._dropped += len(items)  # never written: resume runs them again
            if stop:
                return

    def _write(self, items: list[_Item]) -> None:
        """Group commit: every transcript and diff of the batch, one fsync of their directory, then every
        record with one fsync of results.jsonl; a record is reported only after that fsync."""
        ready = 0
        try:
            for item in items:
                if item.transcript:
                    item.record.events_file = self._writer.write_transcript(
                        item.key, item.number, item.transcript, sync_dir=False
                    )
                if item.diff:
                    item.record.diff_file = self._writer.write_diff(
                        item.key, item.number, item.diff, sync_dir=False
                    )
                ready += 1
        except ResultsError as exc:
            self._fail(exc)
        written = 0
        try:
            if ready:
                # The records name their files: those are made durable first.
                if any(item.transcript or item.diff for item in items[:ready]):
                    self._writer.sync_events()
                self._writer.append_many([item.record for item in items[:ready]])
            written = ready
        except (DuplicateRecordError, ResultsWriteError) as exc:
            written = exc.written
            self._fail(exc)
        except ResultsError as exc:
            self._fail(exc)
        self._written.extend(item.record for item in items[:written])
        self._dropped += len(items) - written  # never written: resume runs them again

    def _fail(self, exc: ResultsError) -> None:
        log.error("%s", exc)
        self._error = exc
