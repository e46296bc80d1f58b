"""live(): the rows of load(), read as the real writer appends them, across torn writes, a resume and a
real run followed from another thread."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from orchestrator.results import live, load
from orchestrator.results.columnar import write_cache
from orchestrator.results.records import RESULTS, AttemptRecord, ResultsError, Row
from orchestrator.results.store import ResultsWriter
from tests.results.test_columnar import varied_record
from tests.results.test_reading import line
from tests.results.test_reading import rec as one_record
from tests.runs import TWO_FER, running, simulator_suite

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow.parquet")
assert_frame_equal = pd.testing.assert_frame_equal


def rec(case: str, *, attempt: int = 1, final: bool = True) -> AttemptRecord:
    return one_record("m", case=case, attempt=attempt, final=final)


def append_raw(path: Path, data: bytes) -> None:
    """Bytes at the end of results.jsonl, as a write cut short leaves them."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def cases_of(rows: list[Row]) -> list[tuple[str, int]]:
    return [(r.case_id, r.attempt) for r in rows]


def test_live_follows_the_writer_through_torn_writes_and_a_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    every, finals = live(run, all_attempts=True), live(run)
    assert every.poll() == [] and not every.ended  # the run does not exist yet
    writer = ResultsWriter.create(run, {"run_id": "r"})
    assert every.poll() == []
    writer.append(rec("a"))
    writer.append(rec("b", final=False))
    assert cases_of(every.poll()) == [("a", 1), ("b", 1)] and cases_of(finals.poll()) == [("a", 1)]

    # A line being written: unread until it is whole, then read once.
    half = line(rec("c"))
    append_raw(run / RESULTS, half[:40])
    assert every.poll() == [] and finals.poll() == []
    append_raw(run / RESULTS, half[40:])
    assert cases_of(every.poll()) == [("c", 1)] and cases_of(finals.poll()) == [("c", 1)]

    # A hard kill mid-write leaves a torn line; the resume cuts it and appends.
    writer.append(rec("b", attempt=2, final=False))
    append_raw(run / RESULTS, line(rec("d"))[:-7])
    assert cases_of(every.poll()) == [("b", 2)]
    writer.close()
    assert every.poll() == [] and not every.ended
    with ResultsWriter.resume(run) as resumed:
        assert resumed.next_attempt(rec("b").key) == 3
        resumed.append(rec("b", attempt=3))
        resumed.append(rec("d"))
        assert cases_of(every.poll()) == [("b", 3), ("d", 1)]
        assert cases_of(finals.poll()) == [("b", 3), ("d", 1)]
        resumed.write_summary()
    assert every.ended and finals.ended
    assert_frame_equal(every.frame(), load(run, all_attempts=True))
    assert_frame_equal(finals.frame(), load(run))
    assert cases_of(finals.rows) == [("a", 1), ("c", 1), ("b", 3), ("d", 1)]


def test_live_never_reads_the_file_again_from_its_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with ResultsWriter.create(run, {"run_id": "r"}) as writer:
        reader = live(run)
        writer.append(rec("a"))
        writer.append(rec("b"))
        assert len(reader.poll()) == 2
        # Damage where the reader has already been: load() reads the whole file and refuses it...
        data = (run / RESULTS).read_bytes()
        first = data.index(b"\n")
        (run / RESULTS).write_bytes(b"x" * first + data[first:])
        writer.append(rec("c"))
        with pytest.raises(ResultsError, match=":1: unreadable record"):
            load(run)
        # ...the live reader reads only what was appended since.
        assert cases_of(reader.poll()) == [("c", 1)]
        # A file cut below what was read is no longer the file it was reading.
        os.truncate(run / RESULTS, 10)
        with pytest.raises(ResultsError, match="was cut to 10 bytes"):
            reader.poll()


def test_damage_stops_a_poll_but_keeps_the_rows_before_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ResultsWriter.create(run, {"run_id": "r"}).close()
    reader = live(run)
    (run / RESULTS).write_bytes(line(rec("a")) + line(rec("b")) + b'{"note": 1}\n' + line(rec("c")))
    with pytest.raises(ResultsError, match=":3: unreadable record"):
        reader.poll()
    assert cases_of(reader.rows) == [("a", 1), ("b", 1)]
    with pytest.raises(ResultsError, match=":3: unreadable record"):
        reader.poll()  # the damage stays where it is
    assert cases_of(reader.rows) == [("a", 1), ("b", 1)]


def test_the_live_frame_is_load_as_records_are_appended(tmp_path: Path) -> None:
    """Records with every optional field sometimes None, unicode, nested tool usage: after each append,
    the live frame equals load()'s (from results.jsonl, and from the columnar cache once written)."""
    rng = random.Random(11)
    run = tmp_path / "run"
    every, finals = live(run, all_attempts=True), live(run)
    with ResultsWriter.create(run, {"run_id": "r"}) as writer:
        for k in range(12):
            tries = rng.randint(1, 3)
            for attempt in range(1, tries + 1):
                writer.append(varied_record(rng, "r", f"case-{k}", "m", attempt, attempt == tries))
                assert_frame_equal(every.frame(), load(run, all_attempts=True))
                assert_frame_equal(finals.frame(), load(run))
    assert write_cache(run) is not None
    assert_frame_equal(every.frame(), load(run, all_attempts=True))
    assert_frame_equal(live(run).frame(), load(run))


WAIT_FOR = """\
import os, sys, time
deadline = time.monotonic() + 120
while not os.path.exists(sys.argv[1]):  # the test creates it once it has read a row live
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.05)
"""


@pytest.mark.timeout(300)
def test_a_real_run_followed_live_from_another_thread(tmp_path: Path) -> None:
    """``orchestrate run`` on the simulator, followed by live() in a thread until the run ends. The second
    case's check waits for a file that the follower creates when it reads a row: so a row was read while
    the run was going, whatever the machine's load, and the run ends only after."""
    go = tmp_path / "go"
    waiter = tmp_path / "wait_for.py"
    waiter.write_text(WAIT_FOR)
    check = "check: python3 -m unittest -q"
    assert check in TWO_FER
    blocked = TWO_FER.replace(check, f"check: python3 {waiter} {go} && python3 -m unittest -q")
    suite = simulator_suite(
        tmp_path,
        f"- id: first\n  prompt: Implement two_fer.{TWO_FER}- id: second\n  prompt: Implement two_fer.{blocked}",
        slots=2,
    )
    results = tmp_path / "results"
    follower = live(results / "r")
    seen: list[tuple[Row, bool]] = []
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            for row in follower.follow(timeout=240, interval=0.05):
                seen.append((row, follower.ended))
                go.touch()
        except BaseException as exc:  # re-raised by the test's thread
            failed.append(exc)

    thread = threading.Thread(target=follow, name="live-follower")
    with running(suite, results, first=False) as (proc, _):
        thread.start()
        assert proc.wait(timeout=240) == 0
    thread.join(timeout=60)
    assert not thread.is_alive(), "follow() did not end with the run"
    assert not failed, failed
    assert follower.ended
    assert [row.case_id for row, _ in seen] == ["first", "second"]
    assert seen[0][1] is False, "the first row was read while the run was going"
    assert_frame_equal(follower.frame(), load(results / "r"))
    assert list(follower.frame()["passed"]) == [True, True]
