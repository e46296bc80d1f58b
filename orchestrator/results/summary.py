"""Totals over a run's records: pass rate, cost, tokens and durations, overall, by model and by tag.

The one aggregation: summary.json (the writer, at the end of a run and on resume), ``orchestrate report``
and the sides of ``orchestrate compare`` all come from here, so they always agree. It runs in one pass
over flat rows (:class:`~orchestrator.results.records.Row`, from the one reader), never over validated
models: on a 100,000-attempt run pydantic validation alone takes well over the 2 s a report may take.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator.results.records import Row
from orchestrator.status import Status


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values, linearly interpolated; None for no values."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


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
        """One final row (for every row read: written out, not looped over names)."""
        self.attempts += 1
        if r.passed:
            self.passed += 1
        if r.is_error:
            self.errors += 1
        self.cost += r.cost_usd
        self.tokens_in += r.tokens_in
        self.tokens_out += r.tokens_out
        self.cache_reads += r.cache_reads
        self.cache_writes += r.cache_writes
        self.durations.append(r.duration_s)
        self.by_status[r.status] = self.by_status.get(r.status, 0) + 1

    def merge(self, other: _Cell) -> None:
        """Add another cell's sums (once per cell and group: few, so by name)."""
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.durations.extend(other.durations)
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n


_SUMS = ("attempts", "passed", "errors", "cost", "tokens_in", "tokens_out", "cache_reads", "cache_writes")


def _group(cells: Iterable[_Cell]) -> dict[str, Any]:
    """The figures of one group (the totals, a model, a tag), merged from its cells."""
    total = _Cell()
    for c in cells:
        total.merge(c)
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
            "p50": percentile(durations, 0.5),
            "p90": percentile(durations, 0.9),
            "max": durations[-1] if durations else None,
        },
        "by_status": dict(sorted(total.by_status.items())),
    }


def summarize(rows: Iterable[Row]) -> dict[str, Any]:
    """Totals over final rows, overall (``totals``), ``by_model`` and ``by_tag``, in one pass.
    ``pass_rate`` = passed / attempts (errors count against it); ``failed`` excludes errors
    (:attr:`~orchestrator.results.records.Row.is_error`). Non-final rows add only to the cost (money
    spent is spent) and to ``retried`` (tries that failed and were retried) or ``cancelled`` (tries the
    orchestrator stopped, run again on resume: not tries, not retries)."""
    cells: dict[tuple[str, tuple[str, ...]], _Cell] = {}
    retried = cancelled = 0
    cost_all = 0.0
    for r in rows:
        cost_all += r.cost_usd
        if not r.final:
            if r.status == Status.CANCELLED:  # a row's status is the text; Status is a str
                cancelled += 1
            else:
                retried += 1
            continue
        where = (r.model_id, tuple(r.tags))
        cell = cells.get(where)
        if cell is None:
            cell = cells[where] = _Cell()
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
