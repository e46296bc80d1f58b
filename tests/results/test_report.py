"""``orchestrate report`` on run directories written by the real ResultsWriter."""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.results.records import (
    RESULTS,
    AttemptRecord,
    ResultsError,
    read_records,
    read_rows,
)
from orchestrator.results.report import build_report, format_report, resolve_run, table
from orchestrator.results.store import ResultsWriter
from orchestrator.results.summary import summarize
from orchestrator.status import Status
from tests.results.report_runs import G, H, invoke, make_run, rec


def group(
    attempts: int, passed: int, failed: int, errors: int, cost: float, p50: float, p90: float
) -> dict[str, Any]:
    return {
        "attempts": attempts,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "cost_usd": cost,
        "p50": p50,
        "p90": p90,
    }


def figures(g: dict[str, Any]) -> dict[str, Any]:
    out = {k: g[k] for k in ("attempts", "passed", "failed", "errors")}
    out["cost_usd"] = round(g["cost_usd"], 9)
    out["p50"] = g["duration_s"]["p50"]
    out["p90"] = round(g["duration_s"]["p90"], 9)
    return out


# -------------------------------------------------------------------------------------- report


def test_report_figures_over_final_records(run_a: Path) -> None:
    report = build_report(run_a)
    assert report["run_id"] == "run-a" and report["suite_name"] == "demo"
    totals = report["totals"]
    # Finals: c1m1 pass, c2m1 fail, c3m1 pass (after a retry), c1m2 pass, c2m2 timeout, c3m2 api error.
    assert figures(totals) == group(6, 3, 2, 1, 1.5, 25.0, 45.0)
    assert totals["pass_rate"] == 0.5
    assert totals["retried"] == 3
    assert totals["cost_usd_all_attempts"] == pytest.approx(1.57)
    assert totals["tokens_in"] == 7000 and totals["tokens_out"] == 700
    assert totals["by_status"] == {"api_error": 1, "completed": 4, "timeout": 1}
    assert figures(report["by_model"]["m1"]) == group(3, 2, 1, 0, 0.6, 20.0, 28.0)
    assert figures(report["by_model"]["m2"]) == group(3, 1, 1, 1, 0.9, 40.0, 48.0)
    assert report["by_model"]["m1"]["pass_rate"] == pytest.approx(2 / 3)
    assert list(report["by_tag"]) == ["easy", "hard", "js", "python"]
    assert figures(report["by_tag"]["easy"]) == group(4, 3, 0, 1, 0.8, 20.0, 37.0)
    assert figures(report["by_tag"]["hard"]) == group(2, 0, 2, 0, 0.7, 35.0, 47.0)
    assert figures(report["by_tag"]["js"]) == group(2, 1, 0, 1, 0.3, 17.5, 27.5)
    assert figures(report["by_tag"]["python"]) == group(4, 2, 2, 0, 1.2, 30.0, 47.0)


def wilson(passed: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval by its textbook formula, independent of scipy."""
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    return centre - half, centre + half


def test_report_intervals_leave_infra_errors_out(run_a: Path) -> None:
    cis = build_report(run_a)["pass_rate_ci"]
    # Finals of m2: c1 pass, c2 timeout (a graded fail), c3 api_error (left out): 1 of 2.
    m2 = cis["by_model"]["m2"]
    assert (m2["graded"], m2["passed"], m2["infra_errors"], m2["rate"]) == (2, 1, 1, 0.5)
    assert (m2["ci_low"], m2["ci_high"]) == pytest.approx(wilson(1, 2), abs=1e-12)
    totals = cis["totals"]
    assert (totals["graded"], totals["passed"], totals["infra_errors"]) == (5, 3, 1)
    assert (totals["ci_low"], totals["ci_high"]) == pytest.approx(wilson(3, 5), abs=1e-12)
    assert list(cis["by_tag"]) == ["easy", "hard", "js", "python"]
    js = cis["by_tag"]["js"]  # c3m1 passed after a retry; c3m2 ended in api_error
    assert (js["graded"], js["passed"], js["infra_errors"]) == (1, 1, 1)
    assert js["ci_low"] == pytest.approx(wilson(1, 1)[0]) and js["ci_high"] == pytest.approx(1.0)


def by_the_definition(records: Sequence[AttemptRecord]) -> dict[str, Any]:
    """summary.json's figures computed record by record, straight from their definitions (README, "Result
    files"): the oracle that the one-pass aggregation over rows is held to."""

    def quantile(values: list[float], q: float) -> float | None:
        values = sorted(values)
        if not values:
            return None
        pos = (len(values) - 1) * q
        lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    def group(rs: list[AttemptRecord]) -> dict[str, Any]:
        passed = sum(1 for r in rs if r.passed)
        errors = sum(1 for r in rs if r.status.is_infra or r.error_class is not None)
        durations = [r.duration_s for r in rs]
        statuses = sorted({r.status.value for r in rs})
        return {
            "attempts": len(rs),
            "passed": passed,
            "failed": len(rs) - passed - errors,
            "errors": errors,
            "pass_rate": passed / len(rs) if rs else None,
            "cost_usd": sum(r.metrics.cost_usd for r in rs),
            "tokens_in": sum(r.metrics.tokens_in for r in rs),
            "tokens_out": sum(r.metrics.tokens_out for r in rs),
            "cache_reads": sum(r.metrics.cache_reads for r in rs),
            "cache_writes": sum(r.metrics.cache_writes for r in rs),
            "duration_s": {
                "p50": quantile(durations, 0.5),
                "p90": quantile(durations, 0.9),
                "max": max(durations) if durations else None,
            },
            "by_status": {s: sum(1 for r in rs if r.status.value == s) for s in statuses},
        }

    final = [r for r in records if r.final]
    cancelled = sum(1 for r in records if not r.final and r.status is Status.CANCELLED)
    totals = group(final)
    totals["retried"] = len(records) - len(final) - cancelled
    totals["cancelled"] = cancelled
    totals["cost_usd_all_attempts"] = sum(r.metrics.cost_usd for r in records)
    return {
        "totals": totals,
        "by_model": {
            m: group([r for r in final if r.model_id == m]) for m in sorted({r.model_id for r in final})
        },
        "by_tag": {
            t: group([r for r in final if t in r.tags]) for t in sorted({t for r in final for t in r.tags})
        },
    }


def test_one_aggregation_for_summary_json_and_report(results: Path) -> None:
    """summary.json, ``orchestrate report`` and summarize() give the same figures, those of the
    definitions computed record by record."""
    rng = random.Random(7)
    records = []
    statuses = list(Status)
    for i in range(150):
        case, model, repeat = f"c{i % 13}", f"m{i % 4}", i // 52
        status = rng.choice(statuses)
        passed = None if status.is_infra else rng.random() < 0.5
        # A harness error (say the transcript could not be written) counts as an error whatever the check.
        harness = not status.is_infra and rng.random() < 0.1
        records.append(
            rec(
                "run-r",
                case,
                model,
                repeat=repeat,
                attempt=1 + i // 13 % 3,
                final=rng.random() < 0.85,
                status=status,
                passed=passed,
                cost=rng.uniform(0, 1),
                duration=rng.uniform(1, 100),
                tokens=(rng.randint(0, 10**6), rng.randint(0, 10**5)),
                tags=rng.sample(["a", "b", "c", "d"], rng.randint(0, 3)),
                config_hash=rng.choice([H, G]),
                error_class="harness" if harness else None,
            )
        )
    # Keys and attempt numbers must be unique for the writer: keep the first of each.
    seen: set[tuple[str, str, int, int]] = set()
    finals: set[tuple[str, str, int, str]] = set()
    unique = []
    for r in records:
        attempt_id = (r.case_id, r.model_id, r.repeat, r.attempt)
        if attempt_id in seen or (r.case_id, r.model_id, r.repeat, r.config_hash) in finals:
            continue
        seen.add(attempt_id)
        if r.final:
            finals.add((r.case_id, r.model_id, r.repeat, r.config_hash))
        unique.append(r)
    run = make_run(results, "run-r", unique)
    expected = by_the_definition(read_records(run / RESULTS))
    assert expected["totals"]["attempts"] > 50 and expected["totals"]["retried"] > 3
    assert len(expected["by_tag"]) == 4 and len(expected["totals"]["by_status"]) == len(Status)
    assert_same(summarize(read_rows(run / RESULTS)), expected)
    with ResultsWriter.resume(run) as writer:
        summary_json = json.loads(writer.write_summary().read_text())
    report = json.loads(invoke("report", str(run), "--json").stdout)
    for got in (summary_json, report):
        assert_same({k: got[k] for k in expected}, json.loads(json.dumps(expected)))


def assert_same(got: Any, expected: Any) -> None:
    """Equal, keys in the same order, floats up to summation order."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), (got, expected)
        for k in expected:
            assert_same(got[k], expected[k])
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-12)
    else:
        assert got == expected and type(got) is type(expected)


def test_report_command_text_and_json(run_a: Path, results: Path) -> None:
    as_json = invoke("report", "--results", str(results), "run-a", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    expected = build_report(run_a)
    assert data == json.loads(json.dumps(expected))
    text = invoke("report", str(run_a))
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "run run-a (suite demo)"
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("attempts"))
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[header + 2 :]}
    assert list(rows) == ["total", "model m1", "model m2", "tag easy", "tag hard", "tag js", "tag python"]
    # name, attempts, pass rate, excl. infra (its interval: a second word), passed, failed, errors, cost,
    # tokens in, tokens out, p50, p90. Excl. infra: 3 of 5 graded (the api_error is left out).
    assert rows["total"] == [
        *("total", "6", "50.0%", "60.0%", "(23.1-88.2)", "3", "2", "1", "1.5000", "7,000", "700"),
        *("25.0s", "45.0s"),
    ]
    assert rows["model m1"][3:] == [
        *("66.7%", "66.7%", "(20.8-93.9)", "2", "1", "0", "0.6000", "4,000", "400", "20.0s", "28.0s"),
    ]
    assert rows["model m2"][3:6] == ["33.3%", "50.0%", "(9.5-90.5)"]
    # Aligned: every row of the table is as wide as its header underline.
    widths = {len(line) for line in lines[header + 1 :]}
    assert len(widths) == 1
    assert "3 retried attempts" in lines[2]


def test_report_resolves_a_run_by_id_path_or_results_file(run_a: Path, results: Path) -> None:
    assert resolve_run("run-a", results) == run_a
    assert resolve_run(str(run_a), Path("elsewhere")) == run_a
    assert resolve_run(run_a / RESULTS, Path("elsewhere")) == run_a
    with pytest.raises(ResultsError, match="no run 'nope'"):
        resolve_run("nope", results)


def test_report_of_a_missing_or_invalid_run_exits_2(results: Path, run_a: Path, tmp_path: Path) -> None:
    missing = invoke("report", "--results", str(results), "no-such-run")
    assert missing.exit_code == 2
    assert "error: no run 'no-such-run'" in missing.stderr and not missing.stdout
    (tmp_path / "not-a-run").mkdir()
    assert invoke("report", str(tmp_path / "not-a-run")).exit_code == 2
    # Damage before the last line is not a torn write: refused, naming the line.
    lines = (run_a / RESULTS).read_bytes().split(b"\n")
    lines[1] = lines[1][:40]
    (run_a / RESULTS).write_bytes(b"\n".join(lines))
    damaged = invoke("report", str(run_a))
    assert damaged.exit_code == 2
    assert f"{run_a / RESULTS}:2: unreadable record" in damaged.stderr
    assert gc.isenabled(), "the reader pauses the GC and must turn it back on, also after an error"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b'{"schema_version": 1, "run_id": "run-a", "case_', id="cut"),
        pytest.param(b"garbage\n", id="garbage"),
        # Whole but without its newline: the writer's single write was cut, as read_records judges it.
        pytest.param(
            rec("run-a", "c9", "m1").model_dump_json().encode(),
            id="no-newline",
        ),
    ],
)
def test_a_torn_last_line_does_not_break_report(
    run_a: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    before = build_report(run_a)
    path = run_a / RESULTS
    size = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(tail)
    with caplog.at_level("WARNING", logger="orchestrator.results.report"):
        assert build_report(run_a) == before
    assert "torn last line" in caplog.text
    result = invoke("report", str(run_a), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["attempts"] == 6
    assert path.stat().st_size == size + len(tail), "report only reads: it never repairs"


def test_report_of_a_run_without_records(results: Path) -> None:
    ResultsWriter.create(results / "empty", {"run_id": "empty"}).close()
    result = invoke("report", "--results", str(results), "empty")
    assert result.exit_code == 0, result.output
    assert "0 final records" in result.stdout
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1:4] == ["0", "-", "-"]
    ci = json.loads(invoke("report", "--results", str(results), "empty", "--json").stdout)["pass_rate_ci"]
    assert ci["totals"] == {
        **{"graded": 0, "passed": 0, "infra_errors": 0},
        **{"rate": None, "ci_low": None, "ci_high": None},
    }


# ------------------------------------------------------------------------------------- compare


def test_table_aligns_columns() -> None:
    lines = table(("name", "n"), [["a", "1"], ["longer", "1,000"]], align="lr")
    assert lines == ["name        n", "------  -----", "a           1", "longer  1,000"]


def test_format_report_lists_models_and_tags_in_order(run_a: Path) -> None:
    text = format_report(build_report(run_a))
    names = [line.split("  ")[0].strip() for line in text.splitlines() if line.startswith(("model", "tag"))]
    assert names == ["model m1", "model m2", "tag easy", "tag hard", "tag js", "tag python"]


def test_group_help_lists_report_and_compare() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "report" in result.stdout and "compare" in result.stdout
    assert "Per-case flips" in result.stdout


def test_cancelled_attempts_are_counted_apart_from_retried_ones(results: Path) -> None:
    r = "run-c"
    cancelled = dict(final=False, status=Status.CANCELLED, passed=None)
    run = make_run(
        results,
        r,
        [
            rec(r, "c1", "m1", attempt=1, cost=0.2, **cancelled),  # Ctrl-C, then resumed
            rec(r, "c1", "m1", attempt=2, final=False, status=Status.API_ERROR, passed=None),
            rec(r, "c1", "m1", attempt=3),
            rec(r, "c2", "m1", attempt=1, **cancelled),  # Ctrl-C, not resumed yet
        ],
    )
    report = build_report(run)
    totals = report["totals"]
    assert (totals["attempts"], totals["retried"], totals["cancelled"]) == (1, 1, 2)
    assert totals["cost_usd_all_attempts"] == pytest.approx(0.5)
    assert_same(summarize(read_rows(run / RESULTS)), by_the_definition(read_records(run / RESULTS)))
    text = invoke("report", str(run))
    assert text.exit_code == 0, text.output
    assert "1 retried attempts, 2 cancelled" in text.stdout.splitlines()[2]
