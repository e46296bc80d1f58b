"""orchestrator.analysis on frames that load() reads from runs written by the real ResultsWriter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.analysis.paired import compare_runs
from orchestrator.analysis.rates import pass_at_k, pass_rate
from orchestrator.cli.main import main
from orchestrator.results import load
from orchestrator.results.compare import build_comparison
from orchestrator.results.records import AttemptRecord
from orchestrator.results.report import build_report
from orchestrator.stats import bootstrap_mean, pass_at_k_unbiased, wilson_interval
from orchestrator.status import Status
from tests.results.report_runs import G, make_run, rec


def repeats_run(results: Path) -> Path:
    """m1: c1 passes 3 of 4 repeats, c2 1 of 4 (one more repeat an infra error after its retry), c3 0 of
    2; m2: c1 4 of 4, c2 2 of 4, c3 only infra errors."""
    r = "run-k"
    plan = {
        ("c1", "m1"): "PPPF",
        ("c2", "m1"): "PFFFE",
        ("c3", "m1"): "FF",
        ("c1", "m2"): "PPPP",
        ("c2", "m2"): "FPFP",
        ("c3", "m2"): "EE",
    }
    records: list[AttemptRecord] = []
    for (case, model), outcomes in plan.items():
        for repeat, o in enumerate(outcomes):
            if o == "E":  # retried once, then out of retries
                records.append(
                    rec(r, case, model, repeat=repeat, final=False, status=Status.INFRA_ERROR, passed=None)
                )
                records.append(
                    rec(r, case, model, repeat=repeat, attempt=2, status=Status.INFRA_ERROR, passed=None)
                )
            else:
                records.append(rec(r, case, model, repeat=repeat, passed=o == "P", tags=["t"]))
    return make_run(results, r, records)


# ------------------------------------------------------------------------------------ pass_rate


def test_pass_rate_by_model_leaves_infra_errors_out(run_a: Path) -> None:
    got = pass_rate(load(run_a))
    assert list(got.columns) == [
        "model_id",
        "n",
        "passed",
        "failed",
        "rate",
        "ci_low",
        "ci_high",
        "infra_errors",
    ]
    assert got[["model_id", "n", "passed", "failed", "infra_errors"]].values.tolist() == [
        ["m1", 3, 2, 1, 0],  # c3 passed on its retry: the final record counts, once
        ["m2", 2, 1, 1, 1],  # c2's timeout is a graded fail; c3's api_error is left out
    ]
    assert got["rate"].tolist() == pytest.approx([2 / 3, 1 / 2])
    assert got.loc[0, ["ci_low", "ci_high"]].tolist() == pytest.approx(wilson_interval(2, 3))
    assert got.loc[1, ["ci_low", "ci_high"]].tolist() == pytest.approx(wilson_interval(1, 2))


def test_pass_rate_agrees_with_the_report(run_a: Path) -> None:
    """The notebook's figures and ``orchestrate report``'s are the same, by model, tag and in total."""
    report = build_report(run_a)["pass_rate_ci"]
    df = load(run_a)
    total = pass_rate(df, by=[]).iloc[0]
    expected = report["totals"]
    assert (total["n"], total["passed"], total["infra_errors"]) == (
        expected["graded"],
        expected["passed"],
        expected["infra_errors"],
    )
    assert (total["ci_low"], total["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    for by, key in (("model_id", "by_model"), ("tags", "by_tag")):
        frame = df.explode("tags") if by == "tags" else df
        rows = pass_rate(frame, by=[by]).set_index(by)
        assert list(rows.index) == list(report[key])
        for name, r in report[key].items():
            assert rows.loc[name, "n"] == r["graded"] and rows.loc[name, "infra_errors"] == r["infra_errors"]
            assert rows.loc[name, "ci_high"] == pytest.approx(r["ci_high"])


def test_pass_rate_reads_only_final_records(run_a: Path) -> None:
    """A frame of every attempt (retries too) gives the figures of the final records."""
    assert pass_rate(load(run_a, all_attempts=True)).equals(pass_rate(load(run_a)))
    assert len(load(run_a, all_attempts=True)) > len(load(run_a))


def test_pass_rate_of_a_group_with_only_infra_errors(results: Path) -> None:
    got = pass_rate(load(repeats_run(results)), by=["model_id", "case_id"])
    c3m2 = got[(got.model_id == "m2") & (got.case_id == "c3")].iloc[0]
    assert (c3m2["n"], c3m2["infra_errors"]) == (0, 2)
    assert math.isnan(c3m2["rate"]) and math.isnan(c3m2["ci_low"]) and math.isnan(c3m2["ci_high"])
    assert len(got) == 6


# ------------------------------------------------------------------------------------ pass_at_k


def test_pass_at_k_averages_the_unbiased_estimator_over_cases(results: Path) -> None:
    df = load(repeats_run(results))
    got = pass_at_k(df, 2).set_index("model_id")
    # m1: c1 n=4 c=3, c2 n=4 c=1 (the infra error is not an attempt of the agent), c3 n=2 c=0.
    m1 = [1 - math.comb(1, 2) / math.comb(4, 2), 1 - math.comb(3, 2) / math.comb(4, 2), 0.0]
    assert got.loc["m1", "pass_at_k"] == pytest.approx(sum(m1) / 3)
    assert got.loc["m1", "cases"] == 3 and got.loc["m1", "cases_too_few"] == 0
    # m2: c3 has no graded attempt: too few for k=2, left out of the average.
    m2 = [1.0, 1 - math.comb(2, 2) / math.comb(4, 2)]
    assert got.loc["m2", "pass_at_k"] == pytest.approx(sum(m2) / 2)
    assert got.loc["m2", "cases"] == 2 and got.loc["m2", "cases_too_few"] == 1
    assert (got.loc["m1", "ci_low"], got.loc["m1", "ci_high"]) == pytest.approx(bootstrap_mean(m1))
    assert (got["k"] == 2).all()

    at_3 = pass_at_k(df, 3).set_index("model_id")  # c3/m1 (2 repeats) drops out
    assert at_3.loc["m1", "cases"] == 2 and at_3.loc["m1", "cases_too_few"] == 1
    assert at_3.loc["m1", "pass_at_k"] == pytest.approx((1 + pass_at_k_unbiased(4, 1, 3)) / 2)


def test_pass_at_1_is_the_mean_of_case_pass_rates(results: Path) -> None:
    df = load(repeats_run(results))
    got = pass_at_k(df, 1).set_index("model_id")
    assert got.loc["m1", "pass_at_k"] == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)
    assert got.loc["m2", "pass_at_k"] == pytest.approx((1 + 2 / 4) / 2)  # c3/m2 has no graded attempt
    # Without a grouping a case is its case_id: its attempts of every model are pooled.
    pooled = pass_at_k(df, 1, by=[]).iloc[0]
    assert pooled["pass_at_k"] == pytest.approx((7 / 8 + 3 / 8 + 0 / 2) / 3) and pooled["cases"] == 3


def test_pass_at_k_is_reproducible_and_needs_a_positive_k(results: Path) -> None:
    df = load(repeats_run(results))
    assert pass_at_k(df, 2, seed=4).equals(pass_at_k(df, 2, seed=4))
    one_case = pass_at_k(df, 1, by=["model_id", "case_id"])
    assert one_case["ci_low"].isna().all(), "one case a group: no bootstrap interval"
    nobody = pass_at_k(df, 9)
    assert (nobody["cases"] == 0).all() and nobody["pass_at_k"].isna().all()
    with pytest.raises(ValueError, match="k >= 1"):
        pass_at_k(df, 0)


# ---------------------------------------------------------------------------------- compare_runs


def test_compare_runs_gives_the_figures_of_orchestrate_compare(run_a: Path, run_b: Path) -> None:
    cmp = compare_runs(load(run_a), load(run_b))
    assert cmp.on == ("case_id", "model_id", "repeat")
    assert cmp.flips == {"fail->pass": 2, "pass->error": 1, "pass->fail": 1}
    assert (len(cmp.pairs), cmp.only_a, cmp.only_b) == (5, 1, 1)
    cli = build_comparison(run_a, run_b)["tests"]["totals"]
    ours = cmp.test.as_dict()
    assert {k: ours[k] for k in ours} == {k: cli[k] for k in ours}
    assert cmp.pairs[["case_id", "model_id"]].values.tolist() == [
        ["c1", "m1"],
        ["c2", "m1"],
        ["c3", "m1"],
        ["c1", "m2"],
        ["c2", "m2"],
    ]
    assert cmp.pairs["config_hash_b"].tolist()[3:] == [G, G]
    text = cmp.summary()
    assert "5 pairs (1 only in A, 1 only in B); flips: fail->pass 2, pass->error 1, pass->fail 1" in text
    assert "not significant at 5%" in text and str(cmp) == text


def test_compare_two_models_of_one_run(run_a: Path) -> None:
    df = load(run_a)
    cmp = compare_runs(df[df.model_id == "m1"], df[df.model_id == "m2"])
    assert cmp.on == ("case_id", "repeat")
    assert cmp.pairs[["case_id", "model_id_a", "model_id_b", "outcome_a", "outcome_b"]].values.tolist() == [
        ["c1", "m1", "m2", "pass", "pass"],
        ["c2", "m1", "m2", "fail", "fail"],
        ["c3", "m1", "m2", "pass", "error"],
    ]
    assert cmp.test.pairs == 2 and cmp.test.cost_delta == pytest.approx((0.3 + 0.3) / 2)
    assert "mean cost per pair +0.3000 (95% CI +0.3000 to +0.3000) USD" in cmp.summary()
    one_case = compare_runs(df[(df.model_id == "m1") & (df.case_id == "c1")], df[df.model_id == "m2"])
    assert one_case.test.cases == 1 and "mean duration per pair +30.0 s" in one_case.summary()
    assert "nan" not in one_case.summary()


def test_a_significant_regression_is_called_so(results: Path) -> None:
    """Nine cases that passed in A fail in B: McNemar p = 2 / 2**9, significant at 5%, in both the
    notebook's comparison and ``orchestrate compare``."""
    old = make_run(results, "old", [rec("old", f"c{i}", "m", cost=0.1) for i in range(12)])
    new = make_run(
        results, "new", [rec("new", f"c{i}", "m", passed=i >= 9, cost=0.2, duration=5) for i in range(12)]
    )
    cmp = compare_runs(load(old), load(new))
    assert cmp.flips == {"pass->fail": 9}
    assert cmp.test.p_value == pytest.approx(2 / 512) and cmp.significant
    low, high = cmp.test.rate_delta_ci
    assert low < -0.75 < high < 0, (low, high)
    out = CliRunner().invoke(main, ["compare", "--results", str(results), "old", "new"])
    assert out.exit_code == 0, out.output
    total = next(line for line in out.stdout.splitlines() if line.startswith("  total:"))
    assert "McNemar exact p = 0.00391 (0 fail->pass, 9 pass->fail): significant at 5%" in total
    assert "mean cost per pair +0.1000 (95% CI +0.1000 to +0.1000)" in out.stdout
    as_json = json.loads(CliRunner().invoke(main, ["compare", str(old), str(new), "--json"]).stdout)
    assert as_json["tests"]["totals"]["significant"] is True
    assert as_json["tests"]["by_model"]["m"]["p_value"] == pytest.approx(2 / 512)


def test_compare_refuses_a_side_with_one_key_twice(run_a: Path, run_b: Path) -> None:
    both = load([run_a, run_b])
    with pytest.raises(ValueError, match=r"A holds \d+ records sharing a"):
        compare_runs(both, load(run_b))
    # The last final record of a forced resume is the one compared, as orchestrate compare does.
    results = run_a.parent
    resumed = make_run(
        results,
        "resumed",
        [rec("resumed", "c1", "m1"), rec("resumed", "c1", "m1", attempt=2, passed=False, config_hash=G)],
    )
    cmp = compare_runs(load(run_a), load(resumed))
    assert cmp.flips == {"pass->fail": 1} and cmp.pairs["config_hash_b"].tolist() == [G]
    assert isinstance(cmp.pairs, pd.DataFrame)
