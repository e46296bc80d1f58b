"""A run's results while it runs: :func:`live` follows results.jsonl as records are appended.

::

    from orchestrator.results import live

    run = live("results/my-run")
    for row in run.follow():          # each new final record, until the run ends
        print(row.case_id, row.model_id, row.status, row.passed)
    run.frame()                       # the DataFrame so far: the columns of load()

Each read starts where the last one stopped (the one reader, :class:`~orchestrator.results.records.RecordReader`,
from its offset): the file is never read again from its start, however long the run. A torn end (a line
being written, or left by a hard kill) stays unread until it is whole; a resume cuts such a line before
it appends, so the reader goes on across a resume. Ray runs write through the same writer.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.results.columnar import finish_frame, rows_frame
from orchestrator.results.records import RESULTS, SUMMARY, RecordReader, Row, flat_values, gc_paused
from orchestrator.results.run_lock import LOCK


class LiveResults:
    """The rows of one run directory read so far; read more with :meth:`poll`, :meth:`frame` or
    :meth:`follow`. Not thread-safe: one reader per thread."""

    def __init__(self, run_dir: str | Path, *, all_attempts: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.all_attempts = all_attempts
        self._reader = RecordReader(self.run_dir / RESULTS)
        self._rows: list[Row] = []

    @property
    def rows(self) -> list[Row]:
        """Every row read so far (final ones only, unless ``all_attempts``), in file order."""
        return list(self._rows)

    def poll(self) -> list[Row]:
        """Read what was appended since the last read: the new rows (final ones only, unless
        ``all_attempts``). Raises :class:`~orchestrator.results.records.ResultsError` for damage, as
        :func:`~orchestrator.results.store.load` would."""
        new: list[Row] = []
        try:
            with gc_paused():
                for row in self._reader.read(flat_values):
                    if self.all_attempts or row.final:
                        new.append(row)
        finally:  # the rows read before damage are kept: the reader has moved past them
            self._rows.extend(new)
        return new

    def frame(self) -> Any:
        """The ``pandas.DataFrame`` of every row so far, after a :meth:`poll`: the frame
        :func:`~orchestrator.results.store.load` gives for the file as it is now (same columns, dtypes
        and values)."""
        try:
            pd = importlib.import_module("pandas")
        except ImportError:
            raise ImportError(
                "orchestrator.results.live needs pandas: pip install 'roo-eval-orchestrator[notebook]'"
            ) from None
        self.poll()
        return finish_frame(pd, rows_frame(pd, self._rows, all_attempts=True))

    @property
    def ended(self) -> bool:
        """Whether the run has ended: its summary.json was written after its current owner took the run
        (a run writes it last, also when it stops early or is interrupted; a resume takes the run again).
        A run killed hard writes none: :meth:`follow`'s ``timeout`` ends the wait then."""
        try:
            summary = (self.run_dir / SUMMARY).stat().st_mtime_ns
        except FileNotFoundError:
            return False
        try:
            taken = (self.run_dir / LOCK).stat().st_mtime_ns
        except FileNotFoundError:
            return True  # nobody ever owned it through a lock: a finished run copied here
        return summary >= taken

    def follow(self, *, timeout: float | None = None, interval: float = 0.5) -> Iterator[Row]:
        """Each new row as it is appended, until the run has ended (:attr:`ended`) and every record it
        wrote was read, or ``timeout`` seconds have passed. Looks for new records every ``interval``
        seconds; rows read before by :meth:`poll` or :meth:`frame` are not yielded again."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = self.ended  # asked before reading: the run wrote its last record before its summary
            yield from self.poll()
            if ended or (deadline is not None and time.monotonic() >= deadline):
                return
            time.sleep(interval)


def live(run_dir: str | Path, *, all_attempts: bool = False) -> LiveResults:
    """Follow one run directory as its run writes it (the directory need not exist yet). The rows are
    those of :func:`~orchestrator.results.store.load`: final records only, unless ``all_attempts``."""
    return LiveResults(run_dir, all_attempts=all_attempts)
