"""Group commit: a batch of records costs one fsync of results.jsonl (and one of the events directory),
and no record counts as written before that fsync. The fsyncs are counted through a wrapper around the
real ``os.fsync``: the files are really written and synced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.records import DuplicateRecordError, ResultsWriteError, read_records
from orchestrator.results.store import ResultsWriter
from tests.results.test_results import key, record

ROWS = [{"t": 0.1, "dir": "in", "event": {"eventName": "taskCreated"}}]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ResultsWriter]:
    w = ResultsWriter.create(tmp_path / "run", {"run_id": "run-1"})
    yield w
    w.close()


class Fsyncs:
    """Counts the fsyncs of results.jsonl, of the events directory and of anything else; ``hook`` runs
    before results.jsonl's."""

    def __init__(self, writer: ResultsWriter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results_ino = writer.results_path.stat().st_ino
        self.events_ino = writer.events_dir.stat().st_ino
        self.results = self.events = self.other = 0
        self.hook: Callable[[], None] = lambda: None
        real = os.fsync

        def fsync(fd: int) -> None:
            ino = os.fstat(fd).st_ino
            if ino == self.results_ino:
                self.hook()
                self.results += 1
            elif ino == self.events_ino:
                self.events += 1
            else:
                self.other += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def test_a_batch_of_records_is_one_fsync(writer: ResultsWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = Fsyncs(writer, monkeypatch)
    keys = [key(f"c{i}") for i in range(20)]
    writer.append_many([record(k) for k in keys])
    assert (fsyncs.results, fsyncs.events, fsyncs.other) == (1, 0, 0)
    assert [r.case_id for r in read_records(writer.results_path)] == [k.case_id for k in keys]
    assert writer.finished_keys() == set(keys)


def test_a_refused_record_ends_the_batch_after_the_ones_before_it(writer: ResultsWriter) -> None:
    with pytest.raises(DuplicateRecordError) as refused:
        writer.append_many(
            [record(key("a")), record(key("b")), record(key("a"), attempt=2), record(key("c"))]
        )
    assert refused.value.written == 2
    assert [r.case_id for r in read_records(writer.results_path)] == ["a", "b"]


def test_the_queue_commits_what_waits_as_one_batch(
    writer: ResultsWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = Fsyncs(writer, monkeypatch)
    entered, release = threading.Event(), threading.Event()

    def hold_the_first() -> None:
        if fsyncs.results == 0:
            entered.set()
            assert release.wait(30)

    fsyncs.hook = hold_the_first
    queue = RecordQueue(writer)
    queue.put(record(key("first")), key("first"), 1, ROWS)
    assert entered.wait(30)
    # Its line is written, not yet fsynced: it does not count as written.
    assert queue.written() == [] and queue.pending == 1
    keys = [key(f"c{i}") for i in range(10)]
    for k in keys:
        queue.put(record(k), k, 1, ROWS)
    release.set()
    reported = queue.close()
    assert [r.case_id for r in reported] == ["first"] + [k.case_id for k in keys]
    # Two batches: the first record, then the ten that waited behind it.
    assert (fsyncs.results, fsyncs.events) == (2, 2)
    assert fsyncs.other == 11  # each transcript's own fsync before its rename
    for r in read_records(writer.results_path):
        assert r.events_file is not None and (writer.run_dir / r.events_file).is_file()


KILLED_IN_FSYNC = """
import json, os, signal, sys, threading, time
from pathlib import Path
from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.store import ResultsWriter
from tests.results.test_results import key, record

writer = ResultsWriter.resume(Path(sys.argv[1]))
queue = RecordQueue(writer)
ino = writer.results_path.stat().st_ino
real = os.fsync
synced = 0

def fsync(fd):
    global synced
    if os.fstat(fd).st_ino == ino:
        if synced == 1:  # the second batch's lines are written, not synced: report, then die
            print(json.dumps({"at_kill": [r.case_id for r in queue.written()]}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        synced += 1
    real(fd)

os.fsync = fsync
rows = [{"t": 0.1, "dir": "in", "event": {"eventName": "taskCreated"}}]
for name in ("a", "b"):
    queue.put(record(key(name)), key(name), 1, rows)
seen = []
deadline = time.monotonic() + 30
while len(seen) < 2 and time.monotonic() < deadline:
    seen += [r.case_id for r in queue.written()]
print(json.dumps({"reported": seen}), flush=True)
for name in ("c", "d", "e"):
    queue.put(record(key(name)), key(name), 1, rows)
threading.Event().wait(60)
"""


@pytest.mark.timeout(60)
def test_a_kill_between_write_and_fsync_loses_nothing_reported(writer: ResultsWriter) -> None:
    run_dir = writer.run_dir
    writer.close()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_IN_FSYNC), str(run_dir)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=50,
    )
    assert out.returncode == -9, out.stderr.decode()
    said = [json.loads(line) for line in out.stdout.splitlines()]
    assert said[0] == {"reported": ["a", "b"]}
    assert said[1] == {"at_kill": []}  # nothing of the batch being synced was reported
    resumed = ResultsWriter.resume(run_dir)
    try:
        on_disk = {r.case_id: r for r in resumed.records}
        assert {"a", "b"} <= set(on_disk)
        for r in on_disk.values():  # what the file holds names a transcript that is there
            assert r.events_file is not None and (run_dir / r.events_file).is_file()
    finally:
        resumed.close()


def test_a_batch_too_big_for_the_disk_still_writes_the_records_that_fit(writer: ResultsWriter) -> None:
    """A nearly full disk (here a file size limit: EFBIG, as the disk-full fault test uses) takes the
    records before the one that does not fit, one by one, as it did before group commit."""
    import resource

    records = [record(key(f"c{i}")) for i in range(3)]
    line = len(writer.results_path.read_bytes()) + len(json.dumps(records[0].model_dump(mode="json")))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Room for one record and a half: the batch of three fails, the first alone fits.
    resource.setrlimit(resource.RLIMIT_FSIZE, (line + line // 2, hard))
    try:
        with pytest.raises(ResultsWriteError) as failed:
            writer.append_many(records)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert failed.value.written == 1
    assert [r.case_id for r in read_records(writer.results_path)] == ["c0"]
    assert writer.finished_keys() == {records[0].key}
