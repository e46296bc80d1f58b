"""One reader, one rule: every way results.jsonl is read agrees line for line on a torn last line, a blank
line, and a line that is valid JSON but not a record."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from orchestrator.results import live, load
from orchestrator.results.columnar import CACHE, write_cache
from orchestrator.results.compare import build_comparison
from orchestrator.results.records import (
    COLUMNS,
    RESULTS,
    AttemptRecord,
    ResultsError,
    Row,
    Timings,
    flat_values,
    read_records,
    read_rows,
)
from orchestrator.results.report import build_report
from orchestrator.results.store import ResultsWriter
from orchestrator.status import Metrics, Status

pytest.importorskip("pandas")
pytest.importorskip("pyarrow.parquet")

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def rec(model: str, *, case: str = "c", final: bool = True, attempt: int = 1) -> AttemptRecord:
    """A record; here one per model, so that every reader's output names the records it read."""
    return AttemptRecord(
        run_id="r",
        case_id=case,
        model_id=model,
        repeat=0,
        config_hash="h",
        attempt=attempt,
        final=final,
        status=Status.COMPLETED if final else Status.INFRA_ERROR,
        passed=True if final else None,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
        duration_s=3.0,
        metrics=Metrics(cost_usd=0.25),
        tags=["t"],
    )


def line(record: AttemptRecord) -> bytes:
    return orjson.dumps(record.model_dump(mode="json")) + b"\n"


A, B = line(rec("m-a")), line(rec("m-b"))
MINIMAL = (
    orjson.dumps(
        {k: v for k, v in orjson.loads(line(rec("m-min"))).items() if k not in ("metrics", "timings", "tags")}
    )
    + b"\n"
)
"""A record with only the fields without a default: a record to every reader."""
UNKNOWN_STATUS = line(rec("m-x")).replace(b'"completed"', b'"exploded"')
NO_STATUS = orjson.dumps({k: v for k, v in orjson.loads(line(rec("m-x"))).items() if k != "status"}) + b"\n"

Reader = Callable[[Path], list[str]]
"""A way of reading a run: the models of the records it read, in file order (or ResultsError)."""


def _resumed(run: Path) -> list[str]:
    copy = run.parent / f"{run.name}-resumed"  # resume repairs: on a copy, the others read the original
    shutil.copytree(run, copy)
    with ResultsWriter.resume(copy) as writer:
        return [r.model_id for r in writer.records]


def _cached(run: Path) -> list[str]:
    written = write_cache(run)
    try:
        return list(load(run, all_attempts=True)["model_id"])
    finally:
        if written is not None:
            written.unlink()


READERS: dict[str, Reader] = {
    "read_records (models)": lambda run: [r.model_id for r in read_records(run / RESULTS)],
    "resume (repairs)": _resumed,
    "rows (report, compare, live)": lambda run: [r.model_id for r in read_rows(run / RESULTS)],
    "summary.json": lambda run: list(ResultsWriter(run).summary()["by_model"]),
    "orchestrate report": lambda run: list(build_report(run)["by_model"]),
    "orchestrate compare": lambda run: [m for m in build_comparison(run, run)["by_model"]],
    "load()": lambda run: list(load(run, all_attempts=True)["model_id"]),
    "columnar cache, then load()": _cached,
    "live()": lambda run: [r.model_id for r in live(run, all_attempts=True).poll()],
}


# (file content, what every reader reads: the models in file order, or the number of the damaged line)
FILES: dict[str, tuple[bytes, list[str] | int]] = {
    "a blank line between records": (A + b"\n" + B, ["m-a", "m-b"]),
    "a blank last line": (A + B + b"  \n", ["m-a", "m-b"]),
    "a torn last line (no newline)": (A + b"\n" + B + line(rec("m-x"))[:50], ["m-a", "m-b"]),
    "a whole record without its newline": (A + B + line(rec("m-x"))[:-1], ["m-a", "m-b"]),
    "valid JSON, not a record, last": (A + b"\n" + B + b'{"note": "not a record"}\n', ["m-a", "m-b"]),
    "a JSON array, last": (A + B + b"[1, 2]\n", ["m-a", "m-b"]),
    "a record with an unknown status, last": (A + B + UNKNOWN_STATUS, ["m-a", "m-b"]),
    "a record with an unknown status, before a record": (A + UNKNOWN_STATUS + B, 2),
    "a minimal record, before a record": (A + MINIMAL + B, ["m-a", "m-min", "m-b"]),
    "a record without its status, last": (A + B + NO_STATUS, ["m-a", "m-b"]),
    "zeros a crash left, last": (A + B + b"\0\0\0\0\n", ["m-a", "m-b"]),
    "not a record, then a torn line": (A + b'{"note": 1}\n' + line(rec("m-x"))[:50], ["m-a"]),
    "valid JSON, not a record, before a record": (A + b'{"note": "not a record"}\n' + B, 2),
    "not a record, then a blank line": (A + B + b"[1, 2]\n\n", 3),
    "a record without its status, before a blank line and a record": (A + NO_STATUS + b"\n" + B, 2),
}


WHOLE = {"a blank line between records", "a blank last line", "a minimal record, before a record"}
"""The files without a torn end: the only ones the columnar cache is made of."""


@pytest.mark.parametrize("name", list(FILES))
def test_every_reader_keeps_one_rule(tmp_path: Path, name: str) -> None:
    content, expected = FILES[name]
    run = tmp_path / "run"
    ResultsWriter.create(run, {"run_id": "r"}).close()
    (run / RESULTS).write_bytes(content)
    for reader, read in READERS.items():
        if isinstance(expected, int):
            with pytest.raises(ResultsError, match=f"{RESULTS}:{expected}: unreadable record"):
                read(run)
        else:
            grouped = reader in ("summary.json", "orchestrate report", "orchestrate compare")  # by model
            assert read(run) == (sorted(expected) if grouped else expected), reader
    assert (run / RESULTS).read_bytes() == content, "reading never modifies results.jsonl"
    assert not (run / CACHE).exists()
    assert (write_cache(run) is not None) is (name in WHOLE)


def test_resume_cuts_exactly_what_the_readers_skip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ResultsWriter.create(run, {"run_id": "r"}).close()
    (run / RESULTS).write_bytes(A + b"\n" + B + b'{"note": 1}\n' + b'{"torn')
    with ResultsWriter.resume(run) as writer:
        assert (run / RESULTS).read_bytes() == A + b"\n" + B
        writer.append(rec("m-c"))
    assert list(load(run)["model_id"]) == ["m-a", "m-b", "m-c"]


def test_a_whole_record_a_model_rejects_is_damage_not_a_torn_line(tmp_path: Path) -> None:
    """A line with every field of a record is no torn write, even where a model refuses a value: resume
    refuses it rather than cutting a record away; the row readers take it as written (load() reads
    results.jsonl lines no writer of ours produces)."""
    run = tmp_path / "run"
    ResultsWriter.create(run, {"run_id": "r"}).close()
    odd = orjson.loads(line(rec("m-x")))
    odd["attempt"] = 0
    content = A + orjson.dumps(odd) + b"\n"
    (run / RESULTS).write_bytes(content)
    with pytest.raises(ResultsError, match=f"{RESULTS}:2: unreadable record"):
        ResultsWriter.resume(run)
    assert (run / RESULTS).read_bytes() == content
    assert [r.attempt for r in read_rows(run / RESULTS)] == [1, 0]


def test_the_flat_row_is_the_columns() -> None:
    row = flat_values(rec("m").model_dump(mode="json"))
    assert isinstance(row, Row) and len(row) == len(COLUMNS) and list(Row._fields) == COLUMNS
    timings = [c for c in COLUMNS if c.endswith("_s") and c[: -len("_s")] + "_s" in Timings.model_fields]
    assert timings == list(Timings.model_fields)
    assert row.model_id == "m" and row.cost_usd == 0.25 and row.tags == ["t"] and row.outcome == "pass"
