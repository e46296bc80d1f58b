"""``orchestrate run --baseline RUN``: the running paired comparison (by hand on small cases), and a real
simulator run of the default suite against a baseline run, with two cases made to regress."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.results.baseline import BaselineWatch
from orchestrator.stats import mcnemar_exact
from tests.runs import SUITE, orchestrate, regressed_suite


@dataclass
class R:
    case_id: str
    model_id: str
    repeat: int
    status: str
    passed: bool | None
    final: bool = True


def watch(*baseline: R) -> BaselineWatch:
    return BaselineWatch(
        Path("base"),
        {
            (r.case_id, r.model_id, r.repeat): None if r.status == "infra_error" else bool(r.passed)
            for r in baseline
        },
    )


def test_a_baseline_pass_that_fails_now_is_a_regression_with_the_counts_so_far() -> None:
    w = watch(
        R("a", "m", 0, "completed", True),
        R("b", "m", 0, "completed", False),
        R("c", "m", 0, "completed", True),
    )
    assert w.observe(R("b", "m", 0, "completed", True)) is None  # fail -> pass: an improvement
    r = w.observe(R("a", "m", 0, "completed", False))
    assert r is not None and (r.case_id, r.pass_to_fail, r.fail_to_pass, r.pairs) == ("a", 1, 1, 2)
    assert w.observe(R("c", "m", 0, "completed", True)) is None  # concordant
    assert w.counts() == (1, 1, 3)
    assert w.p_value() == 1.0  # one discordant pair each way


def test_unpaired_retried_and_infrastructure_records_are_not_graded() -> None:
    w = watch(R("a", "m", 0, "completed", True), R("b", "m", 0, "infra_error", None))
    assert w.observe(R("a", "m", 0, "infra_error", None, final=False)) is None  # a retried try
    assert w.observe(R("a", "m", 1, "completed", False)) is None  # no such repeat in the baseline
    assert w.observe(R("b", "m", 0, "completed", False)) is None  # the baseline's side was an infra error
    assert w.observe(R("a", "m", 0, "infra_error", None)) is None  # this side is
    assert w.counts() == (0, 0, 0)


def test_a_later_final_record_of_the_same_pair_replaces_the_earlier_one() -> None:
    w = watch(R("a", "m", 0, "completed", True))
    assert w.observe(R("a", "m", 0, "completed", False)) is not None
    assert w.observe(R("a", "m", 0, "completed", True)) is None  # a forced resume ran it again: passed
    assert w.counts() == (0, 0, 1) and w.summary()["cases"] == []


CASES = ("--case", "py-two-fer", "--case", "py-leap", "--case", "py-reverse-string")
REGRESSED = [
    {"case_id": case, "model_id": model, "repeat": 0, "status": "completed"}
    for model in ("gpt", "sonnet")
    for case in ("py-leap", "py-two-fer")
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/a: the default suite's two passing cases and its failing one, both models, once each."""
    results = tmp_path_factory.mktemp("results")
    done = orchestrate(
        "run", str(SUITE), "--results", str(results), "--run-id", "a", "--slots", "6", "-q", *CASES
    )
    assert done.returncode == 0, done.stderr
    return results


def _regressed_run(results: Path, tmp: Path, run_id: str, *args: str) -> tuple[str, str, dict[str, object]]:
    suite = regressed_suite(tmp)
    done = orchestrate(
        "run",
        str(suite),
        "--results",
        str(results),
        "--run-id",
        run_id,
        "--slots",
        "6",
        "--baseline",
        "a",
        *CASES,
        *args,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((results / run_id / "summary.json").read_text())
    return done.stdout, done.stderr, summary["regressions"]


def expected_summary(results: Path) -> dict[str, object]:
    # py-leap and py-two-fer regressed for both models; py-reverse-string failed on both sides.
    return {
        "baseline": str(results / "a"),
        "pairs": 6,
        "pass_to_fail": 4,
        "fail_to_pass": 0,
        "p_value": pytest.approx(mcnemar_exact(4, 0)),
        "cases": REGRESSED,
    }


def test_each_regression_is_a_json_event_as_it_happens_and_in_the_summary(
    baseline: Path, tmp_path: Path
) -> None:
    stdout, _, regressions = _regressed_run(baseline, tmp_path, "b", "--json")
    events = [json.loads(line) for line in stdout.splitlines()]
    kinds = [e["type"] for e in events]
    found = [e for e in events if e["type"] == "regression"]
    assert sorted((e["model_id"], e["case_id"]) for e in found) == [
        (r["model_id"], r["case_id"]) for r in REGRESSED
    ]
    assert [e["pass_to_fail"] for e in found] == [1, 2, 3, 4]  # the running count, one regression at a time
    assert found[-1]["p_value"] == pytest.approx(mcnemar_exact(4, 0))
    # Each is announced right after its own attempt's record, not at the end.
    for event in found:
        i = events.index(event)
        assert kinds[i - 1] == "attempt" and events[i - 1]["case_id"] == event["case_id"]
        assert events[i - 1]["model_id"] == event["model_id"]
    assert kinds[-1] == "summary" and events[-1]["regressions"] == expected_summary(baseline)
    assert regressions == expected_summary(baseline)


def test_each_regression_is_a_line_above_the_progress_bar(baseline: Path, tmp_path: Path) -> None:
    _, stderr, regressions = _regressed_run(baseline, tmp_path, "c")
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("regression: ")]
    assert sorted(line.split(" passed")[0] for line in lines) == [
        f"regression: {r['case_id']} / {r['model_id']} / repeat 0"
        for r in sorted(REGRESSED, key=lambda r: (r["case_id"], r["model_id"]))
    ]
    assert "so far 4 pass->fail, 0 fail->pass over " in lines[-1]
    assert lines[-1].endswith("pairs, McNemar exact p = 0.125")
    assert "projected=$" in stderr and "/$5.00" in stderr  # the bar's projection, beside the budget
    assert regressions == expected_summary(baseline)


def test_a_baseline_that_is_no_run_is_refused(tmp_path: Path) -> None:
    done = orchestrate("run", str(SUITE), "--results", str(tmp_path), "--baseline", "nope", "-q")
    assert done.returncode == 2
    assert "--baseline: no run 'nope'" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing was started
