"""Run directories for the report and compare tests, written by the real ResultsWriter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from click.testing import CliRunner, Result

from orchestrator.cli.main import main
from orchestrator.results.records import (
    AttemptRecord,
    CheckResult,
)
from orchestrator.results.store import ResultsWriter
from orchestrator.status import Metrics, Status

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
H = "h" * 16
G = "g" * 16


def rec(
    run_id: str,
    case: str,
    model: str,
    *,
    repeat: int = 0,
    attempt: int = 1,
    final: bool = True,
    status: Status = Status.COMPLETED,
    passed: bool | None = True,
    cost: float = 0.1,
    duration: float = 10.0,
    tokens: tuple[int, int] = (1000, 100),
    tags: Sequence[str] = (),
    config_hash: str = H,
    error: str | None = None,
    error_class: Literal["infra", "harness"] | None = None,
) -> AttemptRecord:
    infra = status.is_infra
    return AttemptRecord(
        run_id=run_id,
        case_id=case,
        model_id=model,
        repeat=repeat,
        config_hash=config_hash,
        attempt=attempt,
        final=final,
        status=status,
        passed=passed,
        error_class="infra" if infra else error_class,
        error=error or ("host died" if infra else None),
        started_at=T0,
        ended_at=T0 + timedelta(seconds=duration),
        duration_s=duration,
        metrics=Metrics(tokens_in=tokens[0], tokens_out=tokens[1], cache_reads=7, cost_usd=cost),
        check=None
        if passed is None
        else CheckResult(
            passed=passed, exit_code=0 if passed else 1, duration=0.5, timed_out=False, output_tail="tail"
        ),
        tags=list(tags),
    )


def make_run(results: Path, run_id: str, records: Sequence[AttemptRecord]) -> Path:
    writer = ResultsWriter.create(results / run_id, {"run_id": run_id, "suite_name": "demo"})
    with writer:
        for r in records:
            writer.append(r)
    return writer.run_dir


def run_a_records() -> list[AttemptRecord]:
    a = "run-a"
    return [
        rec(a, "c1", "m1", cost=0.1, duration=10, tags=["python", "easy"]),
        rec(a, "c2", "m1", passed=False, cost=0.2, duration=20, tokens=(2000, 200), tags=["python", "hard"]),
        rec(
            a, "c3", "m1", final=False, status=Status.INFRA_ERROR, passed=None, cost=0.05, tags=["js", "easy"]
        ),
        rec(a, "c3", "m1", attempt=2, cost=0.3, duration=30, tags=["js", "easy"]),
        rec(a, "c1", "m2", cost=0.4, duration=40, tags=["python", "easy"]),
        rec(
            a, "c2", "m2", status=Status.TIMEOUT, passed=False, cost=0.5, duration=50, tags=["python", "hard"]
        ),
        rec(a, "c3", "m2", final=False, status=Status.API_ERROR, passed=None, cost=0.01, tags=["js", "easy"]),
        rec(
            a,
            "c3",
            "m2",
            attempt=2,
            final=False,
            status=Status.API_ERROR,
            passed=None,
            cost=0.01,
            tags=["js", "easy"],
        ),
        rec(
            a,
            "c3",
            "m2",
            attempt=3,
            status=Status.API_ERROR,
            passed=None,
            cost=0.0,
            duration=5,
            tags=["js", "easy"],
        ),
    ]


def run_b_records() -> list[AttemptRecord]:
    b = "run-b"
    return [
        rec(b, "c1", "m1", passed=False, cost=0.15, duration=12, tags=["python", "easy"]),
        rec(b, "c2", "m1", cost=0.25, duration=18, tags=["python", "hard"]),
        rec(b, "c3", "m1", status=Status.INFRA_ERROR, passed=None, cost=0.0, duration=3, tags=["js", "easy"]),
        rec(b, "c1", "m2", cost=0.4, duration=35, tags=["python", "easy"], config_hash=G),
        rec(b, "c2", "m2", cost=0.45, duration=45, tags=["python", "hard"], config_hash=G),
        rec(b, "c4", "m1", cost=0.1, duration=10, tags=["go"]),
    ]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))
