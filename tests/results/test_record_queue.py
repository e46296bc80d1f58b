"""The scheduler's records, written on a thread: in order, reported only once written, and a write
error stops every later write."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.records import ResultsWriteError, read_records
from orchestrator.results.store import ResultsWriter
from tests.results.test_results import key, record


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ResultsWriter]:
    w = ResultsWriter.create(tmp_path / "run", {"run_id": "run-1"})
    yield w
    w.close()


def test_records_are_written_in_order_with_their_transcripts(writer: ResultsWriter) -> None:
    queue = RecordQueue(writer)
    keys = [key(f"c{i}") for i in range(50)]
    for k in keys:
        queue.put(record(k), k, 1, [{"t": 0.1, "dir": "in", "event": {"eventName": "taskCreated"}}])
    reported = queue.close()
    assert [r.case_id for r in reported] == [k.case_id for k in keys]
    assert queue.pending == 0 and queue.error is None
    on_disk = read_records(writer.results_path)
    assert [r.case_id for r in on_disk] == [k.case_id for k in keys]
    for r in on_disk:
        assert r.events_file is not None
        assert (writer.run_dir / r.events_file).read_text().count("taskCreated") == 1


def test_written_reports_each_record_once(writer: ResultsWriter) -> None:
    queue = RecordQueue(writer)
    queue.put(record(key("a")), key("a"), 1)
    seen = []
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        seen += queue.written()  # the thread may not have written it yet: poll, as the scheduler does
    queue.put(record(key("b")), key("b"), 1)
    seen += queue.close()
    assert [r.case_id for r in seen] == ["a", "b"]
    assert queue.written() == []


def test_a_write_error_stops_later_writes(writer: ResultsWriter) -> None:
    queue = RecordQueue(writer)
    queue.put(record(key("a")), key("a"), 1)
    assert [r.case_id for r in queue.close()] == ["a"]
    # The events directory replaced by a file: the next transcript cannot be written.
    shutil.rmtree(writer.events_dir)
    writer.events_dir.write_text("in the way")
    queue = RecordQueue(writer)
    rows = [{"t": 0.0, "dir": "in", "event": {"eventName": "taskCreated"}}]
    queue.put(record(key("b")), key("b"), 1, rows)
    queue.put(record(key("c")), key("c"), 1)  # no transcript: it could be written, but must not be
    assert queue.close() == []
    assert isinstance(queue.error, ResultsWriteError)
    assert queue.pending == 0
    assert [r.case_id for r in read_records(writer.results_path)] == ["a"]
