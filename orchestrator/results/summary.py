"""Totals over attempt records: pass rate, cost, tokens and durations, overall, by model and by tag.

Used for summary.json (rebuilt from results.jsonl) and by reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from orchestrator.status import Status

if TYPE_CHECKING:
    from orchestrator.results.records import AttemptRecord


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _group(records: list[AttemptRecord]) -> dict[str, Any]:
    passed = sum(1 for r in records if r.passed)
    errors = sum(1 for r in records if r.status.is_infra or r.error_class is not None)
    durations = sorted(r.duration_s for r in records)
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
    return {
        "attempts": len(records),
        "passed": passed,
        "failed": len(records) - passed - errors,
        "errors": errors,
        "pass_rate": passed / len(records) if records else None,
        "cost_usd": sum(r.metrics.cost_usd for r in records),
        "tokens_in": sum(r.metrics.tokens_in for r in records),
        "tokens_out": sum(r.metrics.tokens_out for r in records),
        "cache_reads": sum(r.metrics.cache_reads for r in records),
        "cache_writes": sum(r.metrics.cache_writes for r in records),
        "duration_s": {
            "p50": _percentile(durations, 0.5),
            "p90": _percentile(durations, 0.9),
            "max": durations[-1] if durations else None,
        },
        "by_status": dict(sorted(by_status.items())),
    }


def summarize(records: Iterable[AttemptRecord]) -> dict[str, Any]:
    """Totals over final records, overall and by model and tag. ``pass_rate`` = passed / attempts
    (errors count against it); ``failed`` excludes errors. Non-final records add only to the cost
    (money spent is spent) and to ``retried`` (tries that failed and were retried) or ``cancelled``
    (tries the orchestrator stopped, run again on resume: not tries, not retries)."""
    every = list(records)
    final = [r for r in every if r.final]
    cancelled = sum(1 for r in every if not r.final and r.status is Status.CANCELLED)
    models = sorted({r.model_id for r in final})
    tags = sorted({t for r in final for t in r.tags})
    totals = _group(final)
    totals["retried"] = len(every) - len(final) - cancelled
    totals["cancelled"] = cancelled
    totals["cost_usd_all_attempts"] = sum(r.metrics.cost_usd for r in every)
    return {
        "totals": totals,
        "by_model": {m: _group([r for r in final if r.model_id == m]) for m in models},
        "by_tag": {t: _group([r for r in final if t in r.tags]) for t in tags},
    }
