"""Compare in one pass over two sorted streams gives what compare gave when it held every final row:
the same figures to the last bit, the same JSON and text, on runs with flips, errors, changed config
hashes, forced resumes, several models and keys of one side only."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from orchestrator.results.compare import (
    build_comparison,
    compare_rows,
    compare_sorted,
    format_comparison,
    sorted_finals,
)
from orchestrator.results.records import RESULTS, read_rows
from tests.results.compare_reference import expected_comparison, varied_records, write_records


@pytest.mark.parametrize(("cases", "seed"), [(40, 1), (150, 2), (1, 3)])
def test_streamed_compare_is_the_records_comparison_to_the_bit(tmp_path: Path, cases: int, seed: int) -> None:
    records_a = varied_records("a", cases, seed=seed)
    records_b = varied_records("b", cases, seed=seed + 100)
    run_a = write_records(tmp_path / "a", records_a)
    run_b = write_records(tmp_path / "b", records_b)
    expected = expected_comparison(records_a, records_b)
    got = compare_rows(read_rows(run_a / RESULTS), read_rows(run_b / RESULTS))
    assert got == expected
    # Byte for byte as `orchestrate compare --json` and the text print them (types too: an int cost sum
    # stays an int).
    assert orjson.dumps(got, option=orjson.OPT_INDENT_2) == orjson.dumps(expected, option=orjson.OPT_INDENT_2)
    assert json.dumps(got) == json.dumps(expected)
    cmp = build_comparison(run_a, run_b)
    assert {k: v for k, v in cmp.items() if k not in ("a", "b")} == expected
    assert format_comparison(cmp) == format_comparison({"a": cmp["a"], "b": cmp["b"], **expected})


def test_the_fixtures_hold_what_compare_tells_apart(tmp_path: Path) -> None:
    """The equality above is worth something only if the runs differ in every way compare reports."""
    expected = expected_comparison(varied_records("a", 150, seed=2), varied_records("b", 150, seed=102))
    flips = set(expected["totals"]["flips"])
    assert {"pass->fail", "fail->pass", "pass->error", "error->fail"} <= flips
    assert expected["totals"]["config_changed"] > 0 and expected["tests"]["totals"]["infra_pairs"] > 0
    assert expected["only_a"] and expected["only_b"] and len(expected["by_model"]) == 3
    assert type(expected["by_model"]["model-a"]["cost_usd_a"]) is float
    assert {type(c["cost_delta"]) for c in expected["changes"]} == {int, float}


def test_a_sum_of_int_costs_stays_an_int(tmp_path: Path) -> None:
    records = [r for r in varied_records("a", 30, seed=5) if type(r["metrics"]["cost_usd"]) is int]
    got = compare_rows(
        read_rows(write_records(tmp_path / "a", records) / RESULTS), read_rows(tmp_path / "a" / RESULTS)
    )
    assert got == expected_comparison(records, records)
    assert type(got["totals"]["cost_usd_a"]) is int


def test_limits_keep_a_window_of_the_changes_and_the_first_unpaired_keys(tmp_path: Path) -> None:
    records_a, records_b = varied_records("a", 150, seed=2), varied_records("b", 150, seed=102)
    finals_a = sorted_finals(read_rows(write_records(tmp_path / "a", records_a) / RESULTS))
    finals_b = sorted_finals(read_rows(write_records(tmp_path / "b", records_b) / RESULTS))
    full = compare_sorted(finals_a, finals_b)
    for start, limit in ((0, 5), (7, 10), (len(full["changes"]) - 2, 10), (10_000, 3)):
        part = compare_sorted(finals_a, finals_b, changes_from=start, limit=limit)
        assert part["changes"] == full["changes"][start : start + limit]
        assert part["only_a"] == full["only_a"][:limit] and part["only_b"] == full["only_b"][:limit]
        counts = (part["changes_count"], part["only_a_count"], part["only_b_count"])
        assert counts == (len(full["changes"]), len(full["only_a"]), len(full["only_b"]))
        rest = {
            k: v for k, v in part.items() if k not in ("changes", "only_a", "only_b") and "count" not in k
        }
        assert rest == {k: v for k, v in full.items() if k not in ("changes", "only_a", "only_b")}


def test_streams_out_of_order_are_refused(tmp_path: Path) -> None:
    finals = sorted_finals(
        read_rows(write_records(tmp_path / "a", varied_records("a", 10, seed=1)) / RESULTS)
    )
    with pytest.raises(ValueError, match="not in pairing order"):
        compare_sorted(finals[::-1], finals)
