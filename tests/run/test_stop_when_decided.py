"""``orchestrate run --baseline RUN --stop-when-decided``: the baseline watch's sequential test (by hand),
and a real simulator run against a baseline, with two cases made to regress, that stops once decided
and leaves the rest to ``--resume``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipc_bridge.redaction import Redactor
from orchestrator.cli.progress import Progress
from orchestrator.results.baseline import BaselineWatch
from orchestrator.results.records import read_records
from orchestrator.sequential import DiscordantSPRT
from tests.results.report_runs import rec
from tests.run.test_baseline import R
from tests.runs import FAST_TIMING, SUITE, orchestrate, regressed_suite, suite_copy


def test_the_watch_feeds_only_discordant_graded_pairs_to_the_test_and_reports_its_decision() -> None:
    cases = [f"c{i}" for i in range(12)]
    w = BaselineWatch(Path("base"), {(c, "m", 0): True for c in cases}, DiscordantSPRT())
    w.observe(R("c0", "m", 0, "completed", True))  # concordant: not counted by the test
    w.observe(R("c1", "m", 0, "infra_error", None))  # not graded
    for case in cases[2:10]:
        w.observe(R(case, "m", 0, "completed", False))
    assert w.decision is None and w.summary()["decision"] is None  # 8 regressions: not yet
    w.observe(R("c10", "m", 0, "completed", False))
    assert w.summary()["decision"] == {
        "hypothesis": "regressed",
        "pass_to_fail": 9,
        "fail_to_pass": 0,
        "discordant": 9,
    }
    assert w.counts() == (9, 0, 10)


def test_without_the_test_the_summary_has_no_decision() -> None:
    w = BaselineWatch(Path("base"), {("a", "m", 0): True})
    w.observe(R("a", "m", 0, "completed", False))
    assert w.decision is None and "decision" not in w.summary()


def test_the_decision_is_a_line_above_the_bar_once(capsys: pytest.CaptureFixture[str]) -> None:
    watch = BaselineWatch(Path("base"), {(f"c{i}", "m", 0): True for i in range(10)}, DiscordantSPRT())
    progress = Progress(10, quiet=True, as_json=False, redactor=Redactor(), slots=1, baseline=watch)
    for i in range(10):
        progress(rec("r", f"c{i}", "m", passed=False, duration=1.0))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("decided: ")]
    assert lines == [
        "decided: regressed after 9 discordant pairs (9 pass->fail, 0 fail->pass; sequential test at "
        "5%): no more attempts start, running ones finish"
    ]


def test_stop_when_decided_without_a_baseline_is_a_usage_error(tmp_path: Path) -> None:
    done = orchestrate("run", str(SUITE), "--results", str(tmp_path), "--stop-when-decided", "-q")
    assert done.returncode == 2
    assert "--stop-when-decided needs --baseline RUN" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing was started


REPEATS = 6
CASES = ("--case", "py-two-fer", "--case", "py-leap", "--repeats", str(REPEATS), "--slots", "4")
PAIRS = 2 * 2 * REPEATS  # two cases, two models


def test_a_regressed_run_stops_once_decided_and_resume_runs_the_rest(tmp_path: Path) -> None:
    results = tmp_path / "results"
    # at the simulator's fast timing: this is about when the test decides, not when the engine answers
    fast = suite_copy(tmp_path / "fast", FAST_TIMING)
    base = orchestrate("run", str(fast), "--results", str(results), "--run-id", "a", "-q", *CASES)
    assert base.returncode == 0, base.stderr
    suite = regressed_suite(tmp_path, fast=True)  # both cases fail in every repeat: every pair regresses
    args = ("run", str(suite), "--results", str(results), *CASES, "--baseline", "a")
    done = orchestrate(*args, "--run-id", "b", "--json", "--stop-when-decided")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    decisions = [e for e in events if e["type"] == "decision"]
    assert [(e["hypothesis"], e["pass_to_fail"], e["fail_to_pass"], e["discordant"]) for e in decisions] == [
        ("regressed", 9, 0, 9)  # nine regressions in a row decide it
    ]
    # Announced right after the ninth regression, which came right after its attempt's record.
    i = events.index(decisions[0])
    assert events[i - 1]["type"] == "regression" and events[i - 1]["pass_to_fail"] == 9
    summary = json.loads((results / "b" / "summary.json").read_text())
    assert events[-1]["stop_reason"] == summary["stop_reason"] == "decided"
    assert summary["regressions"]["decision"] == {
        "hypothesis": "regressed",
        "pass_to_fail": 9,
        "fail_to_pass": 0,
        "discordant": 9,
    }
    # Attempts running at the decision finished (graded, none cancelled); the rest never started and
    # left no record.
    records = read_records(results / "b" / "results.jsonl")
    assert 9 <= len(records) < PAIRS and all(r.final and r.status.value == "completed" for r in records)
    assert summary["pending"] == PAIRS - len(records)
    resumed = orchestrate(*args, "--resume", "b", "-q")  # without the test: runs what was held back
    assert resumed.returncode == 0, resumed.stderr
    finals = [r for r in read_records(results / "b" / "results.jsonl") if r.final]
    assert len(finals) == PAIRS and len({(r.case_id, r.model_id, r.repeat) for r in finals}) == PAIRS
