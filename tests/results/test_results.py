"""The run directory: manifest, durable records, exactly-once, torn lines, transcripts, summary, load()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ipc_bridge.redaction import Redactor
from orchestrator.results.manifest import build_manifest
from orchestrator.results.records import (
    COLUMNS,
    RESULTS,
    AttemptRecord,
    CheckResult,
    DuplicateRecordError,
    ResultsError,
    Timings,
    final_for,
    read_records,
)
from orchestrator.results.run_lock import RunInProgressError
from orchestrator.results.store import ResultsWriter, load
from orchestrator.status import Metrics, Status, ToolCount, ToolFailure
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import AttemptKey, build_plan

SECRET = "sk-or-v1-very-secret-0123"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def key(case: str = "c1", model: str = "m1", repeat: int = 0, config_hash: str = "h" * 16) -> AttemptKey:
    return AttemptKey(case, model, repeat, config_hash)


def record(
    k: AttemptKey,
    *,
    attempt: int = 1,
    final: bool = True,
    status: Status = Status.COMPLETED,
    passed: bool | None = True,
    cost: float = 0.5,
    duration: float = 10.0,
    tags: tuple[str, ...] = ("easy",),
    **extra: Any,
) -> AttemptRecord:
    return AttemptRecord(
        run_id="run-1",
        case_id=k.case_id,
        model_id=k.model_id,
        repeat=k.repeat,
        config_hash=k.config_hash,
        attempt=attempt,
        final=final,
        status=status,
        passed=passed,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=duration),
        duration_s=duration,
        timings=Timings(agent_s=duration - 1, check_s=1.0),
        metrics=Metrics(
            tokens_in=1000,
            tokens_out=100,
            cost_usd=cost,
            tool_usage={"write_to_file": ToolCount(attempts=2, failures=1)},
            tool_failures=[ToolFailure(task_id="t", tool="apply_diff", error="no match")],
        ),
        check=CheckResult(
            passed=bool(passed), exit_code=0 if passed else 1, duration=1.0, timed_out=False, output_tail="ok"
        ),
        tags=list(tags),
        **extra,
    )


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ResultsWriter]:
    w = ResultsWriter.create(
        tmp_path / "results" / "run-1", {"run_id": "run-1", "apiKey": SECRET}, redactor=Redactor([SECRET])
    )
    yield w
    w.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------- writing


def test_create_writes_a_redacted_manifest_and_refuses_an_existing_run(
    tmp_path: Path, writer: ResultsWriter
) -> None:
    run = writer.run_dir
    assert (run / "events").is_dir() and (run / RESULTS).exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest == {"run_id": "run-1", "apiKey": "***"}
    writer.update_manifest(ended_at="later", note=f"key was {SECRET}")
    assert writer.read_manifest() == {
        "run_id": "run-1",
        "apiKey": "***",
        "ended_at": "later",
        "note": "key was ***",
    }
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(RunInProgressError, match=rf"run run-1 is in progress \(pid {os.getpid()} on host"):
        ResultsWriter.create(run, {})
    writer.close()
    with pytest.raises(ResultsError, match="--resume"):
        ResultsWriter.create(run, {})


def test_append_is_one_line_per_record_and_exactly_once(writer: ResultsWriter) -> None:
    k = key()
    assert writer.next_attempt(k) == 1
    writer.append(
        record(
            k,
            attempt=1,
            final=False,
            status=Status.INFRA_ERROR,
            passed=None,
            error_class="infra",
            error="host died",
        )
    )
    assert writer.finished_keys() == set()
    assert writer.next_attempt(k) == 2
    writer.append(record(k, attempt=2))
    assert writer.finished_keys() == {k}
    with pytest.raises(DuplicateRecordError, match="final"):
        writer.append(record(k, attempt=3))
    with pytest.raises(DuplicateRecordError, match="attempt 2"):
        writer.append(record(key(config_hash="other" * 3), attempt=2))
    rows = lines(writer.results_path)
    assert [(r["attempt"], r["final"], r["status"]) for r in rows] == [
        (1, False, "infra_error"),
        (2, True, "completed"),
    ]
    assert rows[1]["schema_version"] == 1
    assert rows[1]["metrics"]["tool_usage"] == {"write_to_file": {"attempts": 2, "failures": 1}}
    assert rows[1]["started_at"] == "2026-01-02T03:04:05Z"


def test_records_are_redacted(writer: ResultsWriter) -> None:
    writer.append(record(key(), error=f"401 for key {SECRET}", reason="x"))
    assert SECRET not in writer.results_path.read_text()
    assert lines(writer.results_path)[0]["error"] == "401 for key ***"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValidationError):
        AttemptRecord.model_validate({**record(key()).model_dump(), "started_at": datetime(2026, 1, 1)})


def test_transcript_drops_partials_and_secrets(writer: ResultsWriter) -> None:
    def message(ts: int, partial: bool | None) -> dict[str, Any]:
        m: dict[str, Any] = {"ts": ts, "type": "say", "say": "text", "text": f"token {SECRET} here"}
        if partial is not None:
            m["partial"] = partial
        return {"eventName": "message", "payload": [{"taskId": "t", "action": "updated", "message": m}]}

    rows = [
        {
            "t": 0.0,
            "dir": "out",
            "msg": {"commandName": "StartNewTask", "data": {"configuration": {"openRouterApiKey": SECRET}}},
        },
        {"t": 0.1, "dir": "in", "event": {"eventName": "taskCreated", "payload": ["t"]}},
        {"t": 0.2, "dir": "in", "event": message(1, True)},
        {"t": 0.3, "dir": "in", "event": message(1, False)},
        {"t": 0.4, "dir": "in", "event": message(2, None)},
    ]
    rel = writer.write_transcript(key("c1", "m1", 3), 2, rows)
    assert rel == "events/c1__m1__3__2.jsonl"
    path = writer.run_dir / rel
    text = path.read_text()
    assert SECRET not in text
    written = lines(path)
    assert [r["t"] for r in written] == [0.0, 0.1, 0.2, 0.3, 0.4]  # as given: the worker drops partials
    assert written[0]["msg"]["data"]["configuration"]["openRouterApiKey"] == "***"
    assert written[3]["event"]["payload"][0]["message"]["text"] == "token *** here"


# -------------------------------------------------------------------------------------- resume


def test_resume_cuts_a_torn_last_line_and_continues(writer: ResultsWriter) -> None:
    writer.append(record(key("a")))
    writer.append(record(key("b"), final=False, status=Status.INFRA_ERROR, passed=None))
    writer.close()
    good = writer.results_path.read_bytes()
    with open(writer.results_path, "ab") as fh:
        fh.write(b'{"schema_version": 1, "run_id": "run-1", "case_id": "c", "mod')  # a hard kill mid-line
    resumed = ResultsWriter.resume(writer.run_dir)
    try:
        assert writer.results_path.read_bytes() == good
        assert resumed.finished_keys() == {key("a")}
        assert resumed.next_attempt(key("b")) == 2
        resumed.append(record(key("b"), attempt=2))
        resumed.append(record(key("c")))
        assert [r["case_id"] for r in lines(writer.results_path)] == ["a", "b", "b", "c"]
    finally:
        resumed.close()


def test_a_garbage_last_line_with_newline_is_dropped_too(writer: ResultsWriter) -> None:
    writer.append(record(key("a")))
    writer.close()
    with open(writer.results_path, "ab") as fh:
        fh.write(b"\0\0\0\0\n")  # what a crash can leave after the last fsync
    assert [r.case_id for r in read_records(writer.results_path)] == ["a"]
    assert writer.results_path.read_bytes().endswith(b"\0\n")  # reading alone never modifies the file
    ResultsWriter.resume(writer.run_dir).close()
    assert len(lines(writer.results_path)) == 1


def test_damage_before_the_last_line_is_an_error(writer: ResultsWriter) -> None:
    writer.append(record(key("a")))
    writer.close()
    text = writer.results_path.read_text()
    writer.results_path.write_text("not json\n" + text)
    with pytest.raises(ResultsError, match=":1: unreadable record"):
        ResultsWriter.resume(writer.run_dir)


def test_resume_needs_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="not a run directory"):
        ResultsWriter.resume(tmp_path)


WRITER_LOOP = """
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from orchestrator.suite.plan import AttemptKey
from orchestrator.results.store import AttemptRecord, ResultsWriter
from orchestrator.outcome import Status
w = ResultsWriter.resume(Path(sys.argv[1]))
now = datetime.now(timezone.utc)
i = 0
while True:
    k = AttemptKey(f"case{i}", "m", 0, "h")
    w.append(AttemptRecord(run_id="r", case_id=k.case_id, model_id="m", repeat=0, config_hash="h", attempt=1,
                           final=True, status=Status.COMPLETED, passed=True, started_at=now, ended_at=now,
                           duration_s=0, reason="x" * 2000))
    i += 1
"""


@pytest.mark.timeout(30)
def test_sigkill_while_writing_leaves_a_resumable_file(writer: ResultsWriter) -> None:
    writer.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER_LOOP), str(writer.run_dir)],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        deadline = time.monotonic() + 20
        while writer.results_path.stat().st_size < 200_000:
            assert proc.poll() is None, "the writer loop died"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    resumed = ResultsWriter.resume(writer.run_dir)
    try:
        keys = [r.key for r in resumed.records]
        assert len(keys) == len(set(keys)) >= 50
        resumed.append(record(key("after-kill")))
        assert all(line for line in lines(writer.results_path))
    finally:
        resumed.close()


# ------------------------------------------------------------------------------------- summary


def filled(writer: ResultsWriter) -> None:
    writer.append(record(key("a", "m1"), cost=1.0, duration=10, tags=("py", "easy")))
    writer.append(
        record(
            key("a", "m2"), status=Status.COMPLETED, passed=False, cost=2.0, duration=20, tags=("py", "easy")
        )
    )
    writer.append(
        record(
            key("b", "m1"),
            attempt=1,
            final=False,
            status=Status.INFRA_ERROR,
            passed=None,
            cost=0.25,
            tags=("py",),
        )
    )
    writer.append(
        record(
            key("b", "m1"),
            attempt=2,
            status=Status.TIMEOUT,
            passed=False,
            cost=3.0,
            duration=30,
            tags=("py",),
        )
    )
    writer.append(
        record(
            key("b", "m2"),
            status=Status.API_ERROR,
            passed=None,
            cost=0.0,
            duration=40,
            tags=("py",),
            error_class="infra",
            error="api",
        )
    )


def test_summary_totals_by_model_and_tag(writer: ResultsWriter) -> None:
    filled(writer)
    path = writer.write_summary(stopped_by="budget")
    summary = json.loads(path.read_text())
    assert summary["stopped_by"] == "budget" and summary["schema_version"] == 1
    totals = summary["totals"]
    assert (totals["attempts"], totals["passed"], totals["failed"], totals["errors"]) == (4, 1, 2, 1)
    assert totals["pass_rate"] == 0.25
    assert totals["cost_usd"] == 6.0 and totals["cost_usd_all_attempts"] == 6.25
    assert totals["retried"] == 1
    assert totals["duration_s"] == {"p50": 25.0, "p90": pytest.approx(37.0), "max": 40.0}
    assert totals["by_status"] == {"api_error": 1, "completed": 2, "timeout": 1}
    assert summary["by_model"]["m1"]["attempts"] == 2 and summary["by_model"]["m1"]["pass_rate"] == 0.5
    assert summary["by_model"]["m2"]["errors"] == 1
    assert summary["by_tag"]["easy"]["attempts"] == 2 and summary["by_tag"]["py"]["attempts"] == 4
    # rebuilt from the file on resume: the same numbers
    writer.close()
    again = ResultsWriter.resume(writer.run_dir)
    try:
        assert again.summary(stopped_by="budget") == summary
    finally:
        again.close()


# ---------------------------------------------------------------------------------------- load


def test_load_one_row_per_final_record(writer: ResultsWriter) -> None:
    pd = pytest.importorskip("pandas")
    filled(writer)
    frame = load(writer.run_dir)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 4
    assert set(frame["status"]) == {"completed", "timeout", "api_error"}
    assert frame["cost_usd"].sum() == 6.0
    assert str(frame["started_at"].dtype).startswith("datetime64") and frame["started_at"].dt.tz is not None
    row = frame[(frame.case_id == "b") & (frame.model_id == "m1")].iloc[0]
    assert row["attempt"] == 2 and row["status"] == "timeout"
    assert row["tool_attempts"] == 2 and row["tool_failures"] == 1
    assert row["tool_usage"] == {"write_to_file": {"attempts": 2, "failures": 1}}
    assert row["check_exit_code"] == 1 and row["tags"] == ["py"]
    assert len(load(writer.results_path, all_attempts=True)) == 5
    assert isinstance(frame, pd.DataFrame)


def test_load_several_runs_and_globs_without_repairing(tmp_path: Path, writer: ResultsWriter) -> None:
    pytest.importorskip("pandas")
    filled(writer)
    other = ResultsWriter.create(tmp_path / "results" / "run-2", {})
    other.append(record(key("z")).model_copy(update={"run_id": "run-2"}))
    other.close()
    with open(other.results_path, "ab") as fh:
        fh.write(b'{"torn')
    before = other.results_path.read_bytes()
    frame = load(str(tmp_path / "results" / "run-*"))
    assert sorted(set(frame["run_id"])) == ["run-1", "run-2"] and len(frame) == 5
    assert other.results_path.read_bytes() == before
    assert len(load([writer.run_dir, other.run_dir])) == 5
    with pytest.raises(ResultsError):
        load(str(tmp_path / "nothing-*"))
    with pytest.raises(ResultsError):
        load(tmp_path)


def test_load_empty_run_has_the_columns(writer: ResultsWriter) -> None:
    pytest.importorskip("pandas")
    frame = load(writer.run_dir)
    assert len(frame) == 0 and list(frame.columns) == COLUMNS


def test_load_without_pandas_says_what_to_install(
    writer: ResultsWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"roo-eval-orchestrator\[notebook\]"):
        load(writer.run_dir)


# ------------------------------------------------------------------------------------ manifest


def test_build_manifest_from_a_suite(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(
        "name: m\ndefaults: {configuration: {openRouterApiKey: '${K}'}}\ncases: [{id: a, prompt: p}]\n"
    )
    suite = load_suite(tmp_path / "suite.yaml", env={"K": SECRET})
    plan = build_plan(suite)
    manifest = build_manifest(
        suite,
        run_id="r1",
        config_hash=plan.config_hash,
        argv=["orchestrate", "run", "x"],
        started_at=T0,
        attempts_planned=len(plan),
        extra={"overrides": {"slots": 2}},
    )
    w = ResultsWriter.create(tmp_path / "r1", manifest, redactor=suite.redactor())
    w.close()
    text = (tmp_path / "r1" / "manifest.json").read_text()
    assert SECRET not in text
    saved = json.loads(text)
    assert saved["config_hash"] == plan.config_hash and saved["attempts_planned"] == 1
    assert saved["suite"]["defaults"]["configuration"]["openRouterApiKey"] == "***"
    assert saved["versions"]["python"] and saved["command_line"] == ["orchestrate", "run", "x"]
    assert saved["git"] is None  # the temp dir is no repository
    assert saved["overrides"] == {"slots": 2} and saved["started_at"] == T0.isoformat()


def test_flat_row_matches_columns() -> None:
    assert list(record(key()).flat()) == COLUMNS
    assert record(key()).key == key()


@pytest.mark.parametrize(
    ("status", "attempt", "retries", "final"),
    [
        (Status.COMPLETED, 1, 2, True),
        (Status.TIMEOUT, 1, 2, True),
        (Status.STUCK, 1, 0, True),
        (Status.INFRA_ERROR, 1, 2, False),
        (Status.INFRA_ERROR, 3, 2, True),
        (Status.API_ERROR, 2, 2, False),
        (Status.API_ERROR, 1, 0, True),
        (Status.CANCELLED, 1, 2, False),
        (Status.CANCELLED, 9, 2, False),
    ],
)
def test_final_for(status: Status, attempt: int, retries: int, final: bool) -> None:
    assert final_for(status, attempt, retries) is final


def test_cost_counts_retried_attempts(writer: ResultsWriter) -> None:
    filled(writer)
    assert writer.cost_usd == pytest.approx(6.25)


# --------------------------------------------------------------------------------- retries


def test_cancelled_tries_are_not_counted_against_retries(writer: ResultsWriter) -> None:
    k = key("api")
    cancelled = dict(final=False, status=Status.CANCELLED, passed=None)
    writer.append(record(k, attempt=1, final=False, status=Status.API_ERROR, passed=None))
    writer.append(record(k, attempt=2, **cancelled))
    assert (writer.tries(k), writer.next_attempt(k)) == (1, 3)
    writer.close()
    resumed = ResultsWriter.resume(writer.run_dir)
    try:
        assert (resumed.tries(k), resumed.next_attempt(k)) == (1, 3)
        resumed.append(record(k, attempt=3, **cancelled))
        assert (resumed.tries(k), resumed.next_attempt(k)) == (1, 4)
        assert resumed.tries(key("other")) == 0
    finally:
        resumed.close()
