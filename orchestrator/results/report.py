"""``orchestrate report``: a run's identity and its totals (:mod:`.summary`) as a table (``compare``:
:mod:`.compare`). The records are read by the one reader (:func:`~orchestrator.results.records.iter_rows`):
a torn last line is skipped (never repaired here: reading is read-only), damage before it is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import MANIFEST, RESULTS, ResultsError, iter_rows
from orchestrator.results.summary import summarize
from orchestrator.stats import wilson_interval
from orchestrator.status import Status

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ reading


def resolve_run(run: str | Path, results_dir: Path) -> Path:
    """A run directory from a path (the directory or its results.jsonl) or a run id under
    ``results_dir``. Raises :class:`ResultsError` naming where it looked."""
    candidates = [Path(run)]
    if not Path(run).is_absolute():
        candidates.append(results_dir / run)
    for path in candidates:
        run_dir = path.parent if path.name == RESULTS and path.is_file() else path
        if (run_dir / RESULTS).is_file() or (run_dir / MANIFEST).is_file():
            return run_dir
    looked = " or ".join(str(p) for p in candidates)
    raise ResultsError(f"no run {str(run)!r}: {looked} is not a run directory (no {RESULTS} or {MANIFEST})")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest, or ``{}`` when it is missing or unreadable (a report still works from the records)."""
    try:
        data = orjson.loads((run_dir / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("%s: no readable manifest (%s)", run_dir, exc)
        return {}
    return data if isinstance(data, dict) else {}


_INFRA = frozenset(s.value for s in Status if s.is_infra)


def graded_pass_rate(group: Mapping[str, Any]) -> dict[str, Any]:
    """A summary group's pass rate among its graded attempts -- infrastructure errors (``Status.is_infra``)
    left out, as :func:`orchestrator.analysis.pass_rate` does -- with its 95% Wilson interval."""
    infra = sum(n for status, n in group["by_status"].items() if status in _INFRA)
    graded = group["attempts"] - infra
    low, high = wilson_interval(group["passed"], graded)
    return {
        "graded": graded,
        "passed": group["passed"],
        "infra_errors": infra,
        "rate": group["passed"] / graded if graded else None,
        "ci_low": low if graded else None,
        "ci_high": high if graded else None,
    }


def pass_rate_intervals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`graded_pass_rate` of the totals and of each model and tag of a summary."""
    return {
        "totals": graded_pass_rate(summary["totals"]),
        "by_model": {m: graded_pass_rate(g) for m, g in summary["by_model"].items()},
        "by_tag": {t: graded_pass_rate(g) for t, g in summary["by_tag"].items()},
    }


def build_report(run_dir: Path) -> dict[str, Any]:
    """What ``orchestrate report`` shows: the run's identity plus :func:`~.summary.summarize` of its
    records (summary.json's figures), and (``pass_rate_ci``) :func:`pass_rate_intervals` of those."""
    manifest = read_manifest(run_dir)
    summary = summarize(iter_rows(run_dir / RESULTS))
    return {
        "run_id": manifest.get("run_id") or run_dir.name,
        "run_dir": str(run_dir),
        "suite_name": manifest.get("suite_name"),
        "started_at": manifest.get("started_at"),
        "ended_at": manifest.get("ended_at"),
        "attempts_planned": manifest.get("attempts_planned"),
        **summary,
        "pass_rate_ci": pass_rate_intervals(summary),
    }


# ---------------------------------------------------------------------------------- formatting


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def pct_delta(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}pp"


def secs(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else (f"{value:+.1f}s" if sign else f"{value:.1f}s")


def usd(value: float | None, sign: bool = False) -> str:
    return "-" if value is None else (f"{value:+.4f}" if sign else f"{value:.4f}")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """Aligned plain-text columns. ``align`` holds one ``l`` or ``r`` a column; by default the first
    column is left-aligned and the others, numbers, right-aligned."""
    body = [list(r) for r in rows]
    widths = [max(len(c) for c in col) for col in zip(headers, *body, strict=True)]
    align = align or "l" + "r" * (len(widths) - 1)

    def line(cells: Sequence[str]) -> str:
        out = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]


def interval_cell(ci: Mapping[str, Any]) -> str:
    """A :func:`graded_pass_rate` as ``rate (low-high)``."""
    if ci["rate"] is None:
        return "-"
    return f"{pct(ci['rate'])} ({100 * ci['ci_low']:.1f}-{100 * ci['ci_high']:.1f})"


_REPORT_HEADERS: tuple[str, ...] = ("", "attempts", "pass rate", "excl. infra (95% CI)", "passed")
_REPORT_HEADERS += ("failed", "errors", "cost $", "tokens in", "tokens out", "p50", "p90")


def _report_line(name: str, g: Mapping[str, Any], ci: Mapping[str, Any]) -> list[str]:
    d = g["duration_s"]
    return [
        name,
        f"{g['attempts']:,}",
        pct(g["pass_rate"]),
        interval_cell(ci),
        f"{g['passed']:,}",
        f"{g['failed']:,}",
        f"{g['errors']:,}",
        usd(g["cost_usd"]),
        f"{g['tokens_in']:,}",
        f"{g['tokens_out']:,}",
        secs(d["p50"]),
        secs(d["p90"]),
    ]


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text: a header, then one table of totals, models and tags."""
    totals = report["totals"]
    title = f"run {report['run_id']}"
    if report.get("suite_name"):
        title += f" (suite {report['suite_name']})"
    lines = [title, f"  {report['run_dir']}"]
    if report.get("started_at"):
        lines.append(f"  started {report['started_at']}, ended {report.get('ended_at') or '-'}")
    planned = report.get("attempts_planned")
    lines.append(
        f"  {totals['attempts']:,} final records"
        + (f" of {planned:,} planned" if isinstance(planned, int) else "")
        + f", {totals['retried']:,} retried attempts, {totals.get('cancelled', 0):,} cancelled (run again"
        + f" on resume); cost with retries ${totals['cost_usd_all_attempts']:.4f}"
    )
    cis = report["pass_rate_ci"]
    rows = [_report_line("total", totals, cis["totals"])]
    rows += [_report_line(f"model {m}", g, cis["by_model"][m]) for m, g in report["by_model"].items()]
    rows += [_report_line(f"tag {t}", g, cis["by_tag"][t]) for t, g in report["by_tag"].items()]
    lines.append(
        "  excl. infra: pass rate among graded attempts (infrastructure errors left out), 95% Wilson"
    )
    lines += ["", *table(_REPORT_HEADERS, rows)]
    return "\n".join(lines)
