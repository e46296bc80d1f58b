"""``orchestrate report``: the tables, as pure functions over a run's records (``compare``: :mod:`.compare`).

A run's results.jsonl is read with orjson one line at a time into slim :class:`Row` tuples rather than
validated :class:`~orchestrator.results.store.AttemptRecord` models: on a 100,000-attempt run pydantic
validation plus :func:`~orchestrator.results.summary.summarize` take well over the 2 s a report may take.
:func:`summarize_rows` therefore aggregates in one pass, and returns exactly what ``summarize`` returns
for the same records (same keys, same definitions; the tests hold the two together), so a report and
the run's summary.json always agree.

Torn lines are handled like :func:`~orchestrator.results.store.read_records` does: a torn last line is
skipped (never repaired here: reading is read-only), damage before it is an error.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from orchestrator.results.records import MANIFEST, RESULTS, ResultsError
from orchestrator.results.summary import _percentile
from orchestrator.stats import wilson_interval
from orchestrator.status import Status

log = logging.getLogger(__name__)

_INFRA = frozenset(s.value for s in Status if s.is_infra)
_STATUSES = frozenset(s.value for s in Status)
_CANCELLED = Status.CANCELLED.value


class Row(NamedTuple):
    """What the report and compare need of one results.jsonl line."""

    case_id: str
    model_id: str
    repeat: int
    config_hash: str
    attempt: int
    final: bool
    status: str
    passed: bool | None
    error: bool
    """An error in summarize's sense: an infrastructure status or an ``error_class``."""
    error_message: str | None
    duration_s: float
    cost_usd: float
    tokens_in: int
    tokens_out: int
    cache_reads: int
    cache_writes: int
    tags: tuple[str, ...]

    @property
    def outcome(self) -> str:
        """``error``, ``pass`` or ``fail``: the class a compare flip is made of."""
        if self.error:
            return "error"
        return "pass" if self.passed else "fail"


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


def _row(data: Any) -> Row:
    status = data["status"]
    if status not in _STATUSES:
        raise ValueError(f"unknown status {status!r}")
    metrics = data["metrics"]
    passed = data["passed"]
    return Row(
        str(data["case_id"]),
        str(data["model_id"]),
        int(data["repeat"]),
        str(data["config_hash"]),
        int(data["attempt"]),
        bool(data["final"]),
        status,
        None if passed is None else bool(passed),
        status in _INFRA or data.get("error_class") is not None,
        data.get("error"),
        float(data["duration_s"]),
        float(metrics["cost_usd"]),
        int(metrics["tokens_in"]),
        int(metrics["tokens_out"]),
        int(metrics["cache_reads"]),
        int(metrics["cache_writes"]),
        tuple(data["tags"]),
    )


def read_rows(run_dir: Path) -> list[Row]:
    """Every record of a run (retried ones included), in file order."""
    path = run_dir / RESULTS
    rows: list[Row] = []
    if not path.is_file():
        return rows  # a run that has not finished an attempt yet
    # Rows hold no reference cycles, yet the cyclic GC would rescan every live row many times as they
    # pile up: 3x the read time on 100,000 records, more in a notebook full of objects.
    enabled = gc.isenabled()
    gc.disable()
    try:
        with path.open("rb") as fh:
            _read_lines(path, fh, rows)
    finally:
        if enabled:
            gc.enable()
    return rows


def _read_lines(path: Path, lines: Iterable[bytes], rows: list[Row]) -> None:
    bad: tuple[int, Exception] | None = None
    dropped = 0
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            # The writer emits whole lines, so one without a newline is the end of a hard kill.
            dropped += len(line)
            break
        if bad is not None:
            raise ResultsError(f"{path}:{bad[0]}: unreadable record ({bad[1]}); fix or remove the line")
        if not line.strip():
            continue
        try:
            rows.append(_row(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            bad = (number, exc)
            dropped += len(line)
    if dropped:
        log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted run", path, dropped)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest, or ``{}`` when it is missing or unreadable (a report still works from the records)."""
    try:
        data = orjson.loads((run_dir / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("%s: no readable manifest (%s)", run_dir, exc)
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------- aggregating


class _Cell:
    """Sums over the final rows sharing one (model, tags): few cells, so per-row work stays small."""

    __slots__ = (
        "attempts",
        "by_status",
        "cache_reads",
        "cache_writes",
        "cost",
        "durations",
        "errors",
        "passed",
        "tokens_in",
        "tokens_out",
    )

    def __init__(self) -> None:
        self.attempts = self.passed = self.errors = 0
        self.tokens_in = self.tokens_out = self.cache_reads = self.cache_writes = 0
        self.cost = 0.0
        self.durations: list[float] = []
        self.by_status: dict[str, int] = {}

    def add(self, r: Row) -> None:
        self.attempts += 1
        if r.passed:
            self.passed += 1
        if r.error:
            self.errors += 1
        self.cost += r.cost_usd
        self.tokens_in += r.tokens_in
        self.tokens_out += r.tokens_out
        self.cache_reads += r.cache_reads
        self.cache_writes += r.cache_writes
        self.durations.append(r.duration_s)
        self.by_status[r.status] = self.by_status.get(r.status, 0) + 1


def _group(cells: Iterable[_Cell]) -> dict[str, Any]:
    """summary._group's figures, merged from cells."""
    total = _Cell()
    for c in cells:
        total.attempts += c.attempts
        total.passed += c.passed
        total.errors += c.errors
        total.cost += c.cost
        total.tokens_in += c.tokens_in
        total.tokens_out += c.tokens_out
        total.cache_reads += c.cache_reads
        total.cache_writes += c.cache_writes
        total.durations.extend(c.durations)
        for status, n in c.by_status.items():
            total.by_status[status] = total.by_status.get(status, 0) + n
    durations = sorted(total.durations)
    n = total.attempts
    return {
        "attempts": n,
        "passed": total.passed,
        "failed": n - total.passed - total.errors,
        "errors": total.errors,
        "pass_rate": total.passed / n if n else None,
        "cost_usd": total.cost,
        "tokens_in": total.tokens_in,
        "tokens_out": total.tokens_out,
        "cache_reads": total.cache_reads,
        "cache_writes": total.cache_writes,
        "duration_s": {
            "p50": _percentile(durations, 0.5),
            "p90": _percentile(durations, 0.9),
            "max": durations[-1] if durations else None,
        },
        "by_status": dict(sorted(total.by_status.items())),
    }


def summarize_rows(rows: Iterable[Row]) -> dict[str, Any]:
    """:func:`orchestrator.results.summary.summarize` over rows, in one pass: totals, ``by_model``, ``by_tag``."""
    cells: dict[tuple[str, tuple[str, ...]], _Cell] = {}
    retried = cancelled = 0
    cost_all = 0.0
    for r in rows:
        cost_all += r.cost_usd
        if not r.final:
            if r.status == _CANCELLED:
                cancelled += 1
            else:
                retried += 1
            continue
        cell = cells.get((r.model_id, r.tags))
        if cell is None:
            cell = cells[(r.model_id, r.tags)] = _Cell()
        cell.add(r)
    totals = _group(cells.values())
    totals["retried"] = retried
    totals["cancelled"] = cancelled
    totals["cost_usd_all_attempts"] = cost_all
    models = sorted({m for m, _ in cells})
    tags = sorted({t for _, ts in cells for t in ts})
    return {
        "totals": totals,
        "by_model": {m: _group(c for (cm, _), c in cells.items() if cm == m) for m in models},
        "by_tag": {t: _group(c for (_, ts), c in cells.items() if t in ts) for t in tags},
    }


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
    """What ``orchestrate report`` shows: the run's identity plus :func:`summarize_rows` of its records,
    and (``pass_rate_ci``) :func:`pass_rate_intervals` of those."""
    manifest = read_manifest(run_dir)
    rows = read_rows(run_dir)
    summary = summarize_rows(rows)
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
