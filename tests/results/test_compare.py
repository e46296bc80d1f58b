"""``orchestrate compare`` on run directories written by the real ResultsWriter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.results.compare import build_comparison, compare_rows, format_comparison
from orchestrator.results.records import (
    RESULTS,
    read_rows,
)
from tests.results.report_runs import G, invoke, make_run, rec


def test_compare_pairs_finals_and_lists_flips(run_a: Path, run_b: Path) -> None:
    cmp = build_comparison(run_a, run_b)
    assert cmp["a"]["run_id"] == "run-a" and cmp["b"]["run_id"] == "run-b"
    flips = [(c["model_id"], c["case_id"], c["change"], c["config"]) for c in cmp["changes"]]
    assert flips == [
        ("m1", "c1", "pass->fail", "same"),
        ("m1", "c2", "fail->pass", "same"),
        ("m1", "c3", "pass->error", "same"),
        ("m2", "c2", "fail->pass", "changed"),
    ]
    by_case = {c["case_id"] + c["model_id"]: c for c in cmp["changes"]}
    assert by_case["c1m1"]["cost_delta"] == pytest.approx(0.05)
    assert by_case["c1m1"]["duration_delta"] == pytest.approx(2.0)
    assert by_case["c3m1"]["status_b"] == "infra_error" and by_case["c3m1"]["error_b"] == "host died"
    assert by_case["c2m2"]["status_a"] == "timeout" and by_case["c2m2"]["status_b"] == "completed"
    assert cmp["only_a"] == [["c3", "m2", 0]] and cmp["only_b"] == [["c4", "m1", 0]]

    m1, m2, totals = cmp["by_model"]["m1"], cmp["by_model"]["m2"], cmp["totals"]
    assert m1["paired"] == 3 and m1["config_changed"] == 0
    assert m1["pass_rate_a"] == pytest.approx(2 / 3) and m1["pass_rate_b"] == pytest.approx(1 / 3)
    assert m1["pass_rate_delta"] == pytest.approx(-1 / 3)
    assert m1["cost_usd_delta"] == pytest.approx(-0.2)
    assert (m1["duration_p50_a"], m1["duration_p50_b"], m1["duration_p50_delta"]) == (20.0, 12.0, -8.0)
    assert m1["flips"] == {"fail->pass": 1, "pass->error": 1, "pass->fail": 1}
    assert m2["paired"] == 2 and m2["config_changed"] == 2
    assert (m2["pass_rate_a"], m2["pass_rate_b"]) == (0.5, 1.0)
    assert m2["cost_usd_delta"] == pytest.approx(-0.05)
    assert m2["duration_p50_delta"] == -5.0
    assert totals["paired"] == 5 and totals["config_changed"] == 2 and totals["pass_rate_delta"] == 0
    assert totals["flips"] == {"fail->pass": 2, "pass->error": 1, "pass->fail": 1}

    # The paired test leaves out c3/m1 (infra_error in B): 4 graded pairs, 2 fail->pass, 1 pass->fail.
    test = cmp["tests"]["totals"]
    assert (test["pairs"], test["infra_pairs"], test["cases"]) == (4, 1, 2)
    assert (test["fail_to_pass"], test["pass_to_fail"]) == (2, 1)
    assert test["p_value"] == 1.0 and test["significant"] is False  # 2 * P(Bin(3, 1/2) <= 1) = 1
    assert (test["rate_a"], test["rate_b"], test["rate_delta"]) == (0.5, 0.75, 0.25)
    assert test["cost_delta"] == pytest.approx((0.05 + 0.05 + 0 - 0.05) / 4)
    assert test["duration_delta"] == pytest.approx((2 - 2 + -5 - 5) / 4)
    low, high = test["rate_delta_ci"]
    assert -1 <= low <= 0.25 <= high <= 1
    assert test["sentence"].endswith("not significant at 5%")
    m2_test = cmp["tests"]["by_model"]["m2"]
    assert (m2_test["pairs"], m2_test["fail_to_pass"], m2_test["pass_to_fail"]) == (2, 1, 0)
    assert list(cmp["tests"]["by_model"]) == ["m1", "m2"]


def test_compare_command_text_and_json(run_a: Path, run_b: Path, results: Path) -> None:
    as_json = invoke("compare", "--results", str(results), "run-a", "run-b", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == json.loads(json.dumps(build_comparison(run_a, run_b)))
    text = invoke("compare", "--results", str(results), "run-a", str(run_b))
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert "4 changed outcome(s):" in out
    assert "  total: pass rate B - A +25.0 pp (95% CI " in out
    assert "McNemar exact p = 1 (2 fail->pass, 1 pass->fail): not significant at 5%" in out
    assert "  model m2: pass rate B - A +50.0 pp" in out
    assert (
        "only in A: 1 case/model/repeat: c3/m2/0" in out and "only in B: 1 case/model/repeat: c4/m1/0" in out
    )
    change_rows = [
        line.split() for line in out.splitlines()[out.splitlines().index("4 changed outcome(s):") + 3 :]
    ]
    assert change_rows[0] == [
        "c1",
        "m1",
        "0",
        "pass->fail",
        "completed",
        "completed",
        "+0.0500",
        "+2.0s",
        "same",
    ]
    assert change_rows[3] == [
        "c2",
        "m2",
        "0",
        "fail->pass",
        "timeout",
        "completed",
        "-0.0500",
        "-5.0s",
        "changed",
    ]
    m2 = next(line for line in out.splitlines() if line.startswith("model m2"))
    assert m2.split()[3:7] == ["50.0%", "100.0%", "+50.0pp", "0.9000"]


def test_compare_same_run_has_no_flips(run_a: Path) -> None:
    cmp = build_comparison(run_a, run_a)
    assert cmp["changes"] == [] and cmp["totals"]["pass_rate_delta"] == 0
    assert "no outcome changed" in format_comparison(cmp)


def test_compare_takes_the_last_final_of_a_forced_resume(results: Path) -> None:
    """A resumed run with a changed suite holds finals under two config hashes: the newest counts."""
    old = make_run(results, "old", [rec("old", "c1", "m1", passed=True)])
    new = make_run(
        results,
        "new",
        [rec("new", "c1", "m1", passed=True), rec("new", "c1", "m1", attempt=2, passed=False, config_hash=G)],
    )
    a = compare_rows(read_rows(old / RESULTS), read_rows(new / RESULTS))
    assert [(c["change"], c["config"]) for c in a["changes"]] == [("pass->fail", "changed")]


def test_compare_with_a_missing_run_exits_2(run_a: Path, results: Path) -> None:
    result = invoke("compare", "--results", str(results), "run-a", "missing")
    assert result.exit_code == 2
    assert "error: no run 'missing'" in result.stderr


# ----------------------------------------------------------------------------------- formatting
