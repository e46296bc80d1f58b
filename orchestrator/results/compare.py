"""``orchestrate compare``: two runs side by side, paired by (case, model, repeat), as pure functions over
their flat rows (:func:`~orchestrator.results.records.iter_rows` reads them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.results.records import RESULTS, Row, gc_paused, iter_rows
from orchestrator.results.report import pct, pct_delta, read_manifest, secs, table, usd
from orchestrator.results.summary import percentile
from orchestrator.stats import paired_test
from orchestrator.status import Status


def final_rows(rows: Iterable[Row]) -> dict[tuple[str, str, int], Row]:
    """The final row of each (case, model, repeat); when a forced resume left finals under several
    config hashes, the last written wins (it is the newest result)."""
    out: dict[tuple[str, str, int], Row] = {}
    for r in rows:
        if r.final:
            out[(r.case_id, r.model_id, r.repeat)] = r
    return out


def _side(rows: Sequence[Row]) -> dict[str, Any]:
    n = len(rows)
    durations = sorted(r.duration_s for r in rows)
    return {
        "pass_rate": sum(1 for r in rows if r.passed) / n if n else None,
        "cost_usd": sum(r.cost_usd for r in rows),
        "duration_p50": percentile(durations, 0.5),
    }


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _compare_group(pairs: Sequence[tuple[Row, Row]]) -> dict[str, Any]:
    a = _side([p[0] for p in pairs])
    b = _side([p[1] for p in pairs])
    flips: dict[str, int] = {}
    for ra, rb in pairs:
        if ra.outcome != rb.outcome:
            change = f"{ra.outcome}->{rb.outcome}"
            flips[change] = flips.get(change, 0) + 1
    return {
        "paired": len(pairs),
        "config_changed": sum(1 for ra, rb in pairs if ra.config_hash != rb.config_hash),
        **{f"{k}_a": v for k, v in a.items()},
        **{f"{k}_b": v for k, v in b.items()},
        **{f"{k}_delta": _delta(a[k], b[k]) for k in a},
        "flips": dict(sorted(flips.items())),
    }


def paired_statistics(pairs: Sequence[tuple[Row, Row]], *, seed: int = 0) -> dict[str, Any]:
    """McNemar's exact test and the paired bootstrap intervals (pass rate, cost and duration, B minus A;
    :func:`orchestrator.stats.paired_test`) over the pairs where neither attempt ended in an
    infrastructure error, plus the sentence that says whether the difference is significant at 5%."""
    graded = [(a, b) for a, b in pairs if not (Status(a.status).is_infra or Status(b.status).is_infra)]
    test = paired_test(
        [bool(a.passed) for a, _ in graded],
        [bool(b.passed) for _, b in graded],
        [a.cost_usd for a, _ in graded],
        [b.cost_usd for _, b in graded],
        [a.duration_s for a, _ in graded],
        [b.duration_s for _, b in graded],
        [a.case_id for a, _ in graded],
        seed=seed,
    )
    return {**test.as_dict(), "infra_pairs": len(pairs) - len(graded), "sentence": test.sentence()}


def compare_rows(rows_a: Iterable[Row], rows_b: Iterable[Row]) -> dict[str, Any]:
    """Pairs the final rows of two runs by (case, model, repeat) -- the config hash may differ and is
    reported -- and lists every pair whose outcome (pass, fail, error) changed, with per-model and total
    pass-rate (errors count against it, as in summarize), cost and median-duration deltas, and (``tests``)
    per model and in total :func:`paired_statistics`."""
    a = final_rows(rows_a)
    b = final_rows(rows_b)
    keys = sorted(a.keys() & b.keys(), key=lambda k: (k[1], k[0], k[2]))
    pairs = [(a[k], b[k]) for k in keys]
    changes = [
        {
            "case_id": ra.case_id,
            "model_id": ra.model_id,
            "repeat": ra.repeat,
            "change": f"{ra.outcome}->{rb.outcome}",
            "status_a": ra.status,
            "status_b": rb.status,
            "error_a": ra.error,
            "error_b": rb.error,
            "config": "same" if ra.config_hash == rb.config_hash else "changed",
            "cost_delta": rb.cost_usd - ra.cost_usd,
            "duration_delta": rb.duration_s - ra.duration_s,
        }
        for ra, rb in pairs
        if ra.outcome != rb.outcome
    ]
    by_model: dict[str, list[tuple[Row, Row]]] = {}
    for pair in pairs:  # already in model order
        by_model.setdefault(pair[0].model_id, []).append(pair)
    return {
        "totals": _compare_group(pairs),
        "by_model": {m: _compare_group(p) for m, p in by_model.items()},
        "tests": {
            "totals": paired_statistics(pairs),
            "by_model": {m: paired_statistics(p) for m, p in by_model.items()},
        },
        "changes": changes,
        "only_a": [list(k) for k in sorted(a.keys() - b.keys())],
        "only_b": [list(k) for k in sorted(b.keys() - a.keys())],
    }


def build_comparison(run_a: Path, run_b: Path) -> dict[str, Any]:
    """What ``orchestrate compare`` shows: both runs' identities plus :func:`compare_rows`."""
    out: dict[str, Any] = {}
    for label, run_dir in (("a", run_a), ("b", run_b)):
        manifest = read_manifest(run_dir)
        out[label] = {"run_id": manifest.get("run_id") or run_dir.name, "run_dir": str(run_dir)}
    with gc_paused():  # the final rows pile up in a dict: no collector passes over them
        return {**out, **compare_rows(iter_rows(run_a / RESULTS), iter_rows(run_b / RESULTS))}


_COMPARE_HEADERS: tuple[str, ...] = ("", "paired", "pass A", "pass B", "delta", "cost A", "cost B", "delta")
_COMPARE_HEADERS += ("p50 A", "p50 B", "delta", "flips", "config changed")


def _compare_line(name: str, g: Mapping[str, Any]) -> list[str]:
    flips = ", ".join(f"{k} {v}" for k, v in g["flips"].items()) or "-"
    return [
        name,
        f"{g['paired']:,}",
        pct(g["pass_rate_a"]),
        pct(g["pass_rate_b"]),
        pct_delta(g["pass_rate_delta"]),
        usd(g["cost_usd_a"]),
        usd(g["cost_usd_b"]),
        usd(g["cost_usd_delta"], sign=True),
        secs(g["duration_p50_a"]),
        secs(g["duration_p50_b"]),
        secs(g["duration_p50_delta"], sign=True),
        flips,
        f"{g['config_changed']:,}",
    ]


def significance_lines(tests: Mapping[str, Any]) -> list[str]:
    """The paired statistics in words, total first, then by model, with the cost and duration deltas."""
    lines = ["", "paired test over graded pairs (infrastructure errors left out), B minus A:"]
    groups = [("total", tests["totals"])] + [(f"model {m}", t) for m, t in tests["by_model"].items()]
    for name, t in groups:
        lines.append(f"  {name}: {t['sentence']}")
        if t["pairs"]:
            lines.append(
                f"    mean cost per pair {_ci(t['cost_delta'], t['cost_delta_ci'], usd)},"
                f" mean duration per pair {_ci(t['duration_delta'], t['duration_delta_ci'], secs)}"
            )
    return lines


def _ci(value: float, ci: Sequence[float | None], fmt: Callable[..., str]) -> str:
    low, high = ci
    interval = (
        "" if low is None or high is None else f" (95% CI {fmt(low, sign=True)} to {fmt(high, sign=True)})"
    )
    return f"{fmt(value, sign=True)}{interval}"


def format_comparison(cmp: Mapping[str, Any], *, max_unpaired: int = 20) -> str:
    """The comparison as text: both runs, the per-model table, then every changed pair."""
    a, b = cmp["a"], cmp["b"]
    lines = [f"A: run {a['run_id']}  {a['run_dir']}", f"B: run {b['run_id']}  {b['run_dir']}", ""]
    rows = [_compare_line("total", cmp["totals"])]
    rows += [_compare_line(f"model {m}", g) for m, g in cmp["by_model"].items()]
    lines += table(_COMPARE_HEADERS, rows)
    lines += significance_lines(cmp["tests"])
    for label, keys in (("only in A", cmp["only_a"]), ("only in B", cmp["only_b"])):
        if keys:
            shown = ", ".join(f"{c}/{m}/{r}" for c, m, r in keys[:max_unpaired])
            more = f" (+{len(keys) - max_unpaired} more)" if len(keys) > max_unpaired else ""
            lines.append(f"{label}: {len(keys)} case/model/repeat: {shown}{more}")
    changes = cmp["changes"]
    lines.append("")
    if not changes:
        lines.append("no outcome changed between the paired attempts")
        return "\n".join(lines)
    lines.append(f"{len(changes)} changed outcome(s):")
    lines += table(
        (
            "case",
            "model",
            "repeat",
            "change",
            "status A",
            "status B",
            "cost delta",
            "duration delta",
            "config",
        ),
        (
            [
                c["case_id"],
                c["model_id"],
                str(c["repeat"]),
                c["change"],
                c["status_a"],
                c["status_b"],
                usd(c["cost_delta"], sign=True),
                secs(c["duration_delta"], sign=True),
                c["config"],
            ]
            for c in changes
        ),
        align="llrlllrrl",
    )
    return "\n".join(lines)
