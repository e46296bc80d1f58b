"""The runs page's rows: states from the run lock and summary.json, counts without reading results.jsonl,
and the names a URL may use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.results.run_lock import RunLock
from orchestrator.view.runs import Sources, UnknownRunError, list_runs, run_info
from tests.view.synthetic import write_run


def test_a_run_whose_owner_lives_is_running_and_its_attempts_are_estimated(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", 300, planned=1000, summary=False)
    lock = RunLock(run)  # what a live `orchestrate run` holds
    try:
        info = run_info(run)
        assert info["state"] == "running" and f"pid {os.getpid()}" in info["owner"]
        assert info["attempts_estimated"] and 270 <= info["attempts_done"] <= 330
        assert info["attempts_planned"] == 1000 and info["pass_rate"] is None
    finally:
        lock.release()
    # Its owner gone without a summary.json: interrupted (killed, or died).
    assert run_info(run)["state"] == "interrupted"


@pytest.mark.parametrize(
    ("summary", "state"),
    [
        ({"stop_reason": "finished", "pending": 0}, "finished"),
        ({"stop_reason": "budget", "pending": 0}, "finished"),
        ({"stop_reason": "interrupted", "pending": 3}, "interrupted"),
        ({"stop_reason": "killed", "pending": 0}, "interrupted"),
        ({"stop_reason": "finished", "pending": 2}, "interrupted"),
    ],
)
def test_an_ended_run_s_state_comes_from_its_summary(
    tmp_path: Path, summary: dict[str, object], state: str
) -> None:
    run = write_run(tmp_path / "r", 10)
    written = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**written, **summary}))
    info = run_info(run)
    assert info["state"] == state and not info["attempts_estimated"] and info["attempts_done"] == 10
    assert info["pass_rate"] == written["totals"]["pass_rate"]


def test_runs_are_listed_newest_first_and_names_from_urls_stay_inside(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for i in range(5):
        run = write_run(results / f"run-{i}", 3)
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["started_at"] = f"2026-01-0{i + 1}T00:00:00+00:00"
        (run / "manifest.json").write_text(json.dumps(manifest))
    (results / "not-a-run").mkdir()
    outside = write_run(tmp_path / "outside", 1)
    (results / "link").symlink_to(outside)
    explicit = write_run(tmp_path / "elsewhere" / "mine", 2)
    sources = Sources.from_paths([results, explicit])
    rows, total = list_runs(sources)
    names = [r["name"] for r in rows]
    assert total == 6
    assert [n for n in names if n.startswith("run-")] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert sorted(names) == ["mine", "run-0", "run-1", "run-2", "run-3", "run-4"]  # no link, no non-run
    assert sources.resolve("mine") == explicit.resolve()
    for bad in ("..", ".", "", "run-1/..", "../outside", "/etc", "link", "not-a-run", "run-1\x00"):
        with pytest.raises(UnknownRunError):
            sources.resolve(bad)


def test_the_first_rows_are_the_newest_runs_by_name_and_say_how_many_there_are(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for i in range(5):
        write_run(results / f"2026010{i}T000000Z-s", 1)
    rows, total = list_runs(Sources.from_paths([results]), first=2)
    assert total == 5
    assert [r["name"] for r in rows] == ["20260104T000000Z-s", "20260103T000000Z-s"]
