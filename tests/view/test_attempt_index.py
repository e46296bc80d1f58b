"""The run page's attempt index on disk: the same answers as the records it indexes, kept right as
results.jsonl grows, is torn or is replaced, and a server whose memory does not grow with the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.results.compare import compare_rows
from orchestrator.results.records import RESULTS, Row, read_rows
from orchestrator.results.summary import summarize
from orchestrator.view.attempt_db import COLUMNS, fallback_path
from orchestrator.view.attempts import AttemptIndex, Filters
from orchestrator.view.bundle import write_bundle
from tests.view.synthetic import record, write_run

ROOT = Path(__file__).resolve().parents[2]


def _varied(run_id: str, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Records of every kind the figures tell apart: retried and cancelled tries, errors, no check,
    costs and durations as ints and floats, several tags, tags shared by models."""
    out = []
    for i in range(n):
        r = record(run_id, i + seed, models=2)
        r["repeat"] = i % 3
        if i % 11 == 0:
            r.update(final=False, status="infra_error", error_class="infra", passed=None)
        if i % 13 == 0:
            r.update(final=False, status="cancelled", passed=None)
        if i % 5 == 0:
            r["metrics"]["cost_usd"] = 1  # an int, as JSON may hold it
            r["duration_s"] = 7
        else:
            r["metrics"]["cost_usd"] = 0.1 * ((i * 7 + seed) % 10) + 1e-9 * i
            r["duration_s"] = 0.37 * ((i * 5 + seed) % 17)
        r["tags"] = [["python"], ["python", "hard"], [], ["go", "hard", "x"]][i % 4]
        r["case_id"] = f"case{i // 6:04d}"
        out.append(r)
    return out


def _write(path: Path, records: list[dict[str, Any]], *, mode: str = "wb") -> None:
    with path.open(mode) as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")


def _run(tmp: Path, name: str, records: list[dict[str, Any]]) -> Path:
    run = tmp / name
    run.mkdir()
    _write(run / RESULTS, records)
    return run


def _stored(r: Row) -> tuple[Any, ...]:
    return tuple(getattr(r, c) for c in COLUMNS)


def test_figures_pages_and_comparison_are_those_of_the_records(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", _varied("a", 700))
    b = _run(tmp_path, "b", _varied("b", 650, seed=3))
    index_a, index_b = AttemptIndex(a), AttemptIndex(b)
    index_a.refresh()
    index_b.refresh()
    rows_a = read_rows(a / RESULTS)
    # The stored columns of each row are the record's, with their types (int stays int, bool bool).
    got = list(index_a.rows())
    assert [_stored(r) for r in got] == [_stored(r) for r in rows_a]
    assert [[type(v) for v in _stored(r)] for r in got] == [[type(v) for v in _stored(r)] for r in rows_a]
    # summary.json's figures, to the last bit.
    assert index_a.summary() == summarize(rows_a)
    assert orjson.dumps(index_a.summary()) == orjson.dumps(summarize(rows_a))
    # orchestrate compare's rows.
    assert compare_rows(index_a.rows(), index_b.rows()) == compare_rows(rows_a, read_rows(b / RESULTS))
    # The table's filters, as the rows in memory answered them.
    assert index_a.choices() == {
        "status": sorted({r.status for r in rows_a}),
        "model": sorted({r.model_id for r in rows_a}),
        "tag": sorted({t for r in rows_a for t in r.tags}),
    }
    for f in (
        Filters(),
        Filters(status="infra_error"),
        Filters(model="model-1", tag="hard"),
        Filters(passed=True),
        Filters(passed=False, final_only=True),
        Filters(tag="x", passed=False),
    ):
        want = [
            i
            for i, r in enumerate(rows_a)
            if (f.status is None or r.status == f.status)
            and (f.model is None or r.model_id == f.model)
            and (f.tag is None or f.tag in r.tags)
            and (f.passed is None or bool(r.passed) == f.passed)
            and (not f.final_only or r.final)
        ]
        total, entries = index_a.page(f, 7, 25)
        assert total == len(want) and [e.index for e in entries] == want[7:32]
        assert all(e.reason == str(rows_a[e.index].reason or "") for e in entries)
    assert index_a.record(699)["case_id"] == rows_a[699].case_id
    with pytest.raises(IndexError):
        index_a.record(700)
    name = f"{rows_a[5].case_id}__{rows_a[5].model_id}__{rows_a[5].repeat}__{rows_a[5].attempt}.jsonl"
    assert index_a.recorded(name) == 5 and index_a.recorded("nope__m__0__1.jsonl") is None


def test_growth_a_torn_line_and_a_replaced_file(tmp_path: Path) -> None:
    records = _varied("r", 60)
    run = _run(tmp_path, "r", records[:20])
    results = run / RESULTS
    index = AttemptIndex(run)
    assert index.refresh() == 20 and index.complete
    # Appended to, with a torn last line (a write under way, or a kill): the whole lines only.
    line = orjson.dumps(records[25]) + b"\n"
    _write(results, records[20:25], mode="ab")
    with results.open("ab") as fh:
        fh.write(line[:40])
    assert index.refresh() == 5 and not index.complete and index.count == 25
    # The line completed later is read then, from where the index stopped.
    with results.open("ab") as fh:
        fh.write(line[40:])
    _write(results, records[26:30], mode="ab")
    assert index.refresh() == 5 and index.complete
    assert [r.case_id for r in index.rows()] == [r["case_id"] for r in records[:30]]
    assert index.summary() == summarize(read_rows(results))
    # Another server (a new index object on the same file) reads on from the saved offset.
    again = AttemptIndex(run)
    assert again.count == 30 and again.refresh() == 0 and again.summary() == index.summary()
    # Replaced (renamed over, as a copy or a new run would): indexed again from its first line.
    other = _varied("other", 12, seed=9)
    _write(run / "new.jsonl", other)
    os.replace(run / "new.jsonl", results)
    assert again.refresh() == 12 and again.count == 12
    assert [r.run_id for r in again.rows()] == ["other"] * 12
    assert again.summary() == summarize(read_rows(results))
    # Cut short and written again in place (the same inode): indexed again, never trusted.
    _write(results, records[40:45])
    assert index.refresh() == 5 and [r.run_id for r in index.rows()] == ["r"] * 5
    assert index.record(0)["case_id"] == records[40]["case_id"]
    # Rewritten in place to a longer file: its bytes differ where the index last stopped.
    _write(results, other[:3] + records[:9])
    index.refresh()
    assert [r.run_id for r in index.rows()] == ["other"] * 3 + ["r"] * 9
    # Gone: nothing to show.
    results.unlink()
    assert index.refresh() == 0 and index.count == 0 and index.page(Filters(), 0, 10) == (0, [])


def test_a_run_directory_that_cannot_be_written_is_indexed_elsewhere(tmp_path: Path) -> None:
    run = write_run(tmp_path / "ro", 50)
    # Where the index would go is taken (as root, a read-only mode alone would not stop a write).
    (run / ".view").write_text("not a directory")
    run.chmod(0o555)
    try:
        index = AttemptIndex(run)
        index.refresh()
        assert index.db_path == fallback_path(run) and index.db_path.is_file()
        assert index.count == 50 and index.summary() == summarize(read_rows(run / RESULTS))
    finally:
        run.chmod(0o755)
        fallback_path(run).unlink(missing_ok=True)


def test_a_bundle_of_a_run_that_cannot_be_written(tmp_path: Path) -> None:
    run = write_run(tmp_path / "src" / "ro", 40)
    (run / ".view").write_text("not a directory")  # as root, the mode below alone would not stop a write
    before = sorted(p.name for p in run.rglob("*"))
    run.chmod(0o555)
    try:
        html = write_bundle([run], tmp_path / "out")
    finally:
        run.chmod(0o755)
        fallback_path(run).unlink(missing_ok=True)
    assert html.is_file() and sorted(p.name for p in run.rglob("*")) == before
    text = (tmp_path / "out" / "data" / "0" / "run.js").read_text()
    data = json.loads(text[text.index(", ") + 2 : text.rindex(");")])
    assert [r["index"] for r in data["rows"]] == list(range(40)) and data["run"]["count"] == 40
    assert data["run"]["summary"] == summarize(read_rows(run / RESULTS))


def test_a_link_in_the_run_directory_never_chooses_where_the_index_is_written(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", 20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "attempts.sqlite").write_text("someone's file")
    (run / ".view").symlink_to(elsewhere)
    try:
        index = AttemptIndex(run)
        assert index.refresh() == 20 and index.db_path == fallback_path(run)
    finally:
        fallback_path(run).unlink(missing_ok=True)
    assert (elsewhere / "attempts.sqlite").read_text() == "someone's file"


def test_a_damaged_index_file_is_built_again(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", 30)
    index = AttemptIndex(run)
    index.refresh()
    path = index.db_path
    index.close()
    path.write_bytes(b"this is not an SQLite file at all" * 100)
    again = AttemptIndex(run)
    assert again.db_path == path and again.refresh() == 30


_MEASURE = """
import json, resource, sys
from pathlib import Path
from orchestrator.view.attempts import AttemptIndex, Filters
from orchestrator.view.bundle import write_bundle
run = Path(sys.argv[1])
index = AttemptIndex(run)
while index.refresh(until=index.count + 2000):
    pass
index.page(Filters(model="model-1", tag="hard"), 5000, 100)
index.choices()
index.summary()
sum(1 for _ in index.entries(events_only=False))
print(json.dumps({"count": index.count, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_kb(run: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(run)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=True,
    )
    data = json.loads(out.stdout)
    return data["count"], data["peak_kb"]


def test_the_servers_memory_does_not_grow_with_the_run(tmp_path: Path) -> None:
    """Indexing, paging, filtering and summing a run of 100,000 attempts peaks within a few MB of a run
    of 20,000 (an index of rows in memory grew ~2.9 kB an attempt: +230 MB here)."""
    small = write_run(tmp_path / "small", 20_000, summary=False)
    big = write_run(tmp_path / "big", 100_000, summary=False)
    try:
        n_small, small_kb = _peak_kb(small)
        n_big, big_kb = _peak_kb(big)
    finally:
        shutil.rmtree(tmp_path / "small")
        shutil.rmtree(tmp_path / "big")
    assert (n_small, n_big) == (20_000, 100_000)
    growth_mb = (big_kb - small_kb) / 1024
    assert growth_mb < 24, f"peak RSS {small_kb / 1024:.0f} MB -> {big_kb / 1024:.0f} MB"
