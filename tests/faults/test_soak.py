"""The soak of benchmarks/soak.py, short: 200 simulated attempts at 8 slots with 5 % host crashes, 5 %
host freezes and two SIGKILLs of the bridge, through the real ``orchestrate run``. Every invariant of the
full soak is asserted except RSS growth, which only means something over a long run (``-m soak`` runs the
full one)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import soak_checks
from benchmarks.soak_procs import Sample
from benchmarks.soak_run import SoakOptions, SoakRun, run_soak
from orchestrator.results.records import AttemptRecord

SHORT = SoakOptions(attempts=200, slots=8, crash=0.05, freeze=0.05, bridge_kills=2, seed=3, run_timeout=100.0)


def failed(report: soak_checks.Report, *, short: bool = True) -> str:
    return "\n".join(f"{c.name}: {c.detail}" for c in report.failures(short=short))


@pytest.fixture(scope="module")
def short_run() -> SoakRun:
    return run_soak(SHORT)


@pytest.mark.timeout(150)
def test_every_invariant_holds_under_crashes_freezes_and_bridge_kills(short_run: SoakRun) -> None:
    report = soak_checks.analyse(short_run)
    assert not report.failures(short=True), failed(report) + "\n" + short_run.stderr_tail
    f = report.figures
    # The faults really happened, each kind, and were retried to a completed attempt.
    assert f["injected_crash"] > 0 and f["injected_freeze"] > 0
    assert f["bridge_kills"] == 2 and f["bridge_restart_records"] > 0
    assert f["retries"] == f["records"] - SHORT.attempts
    assert all(r.status.value == "completed" for r in short_run.records if r.final)


def _first(run: SoakRun, fault: str) -> int:
    reason = soak_checks.CRASH_REASON if fault == "crash" else soak_checks.FREEZE_REASON
    return next(
        i
        for i, r in enumerate(run.records)
        if soak_checks.injected(r, run.options) == fault
        and r.reason == reason
        and not soak_checks.bridge_killed_during(r, run.kills)  # else a wrong reason is blamed on the bridge
    )


@pytest.mark.timeout(150)
def test_the_checks_catch_what_they_are_for(short_run: SoakRun) -> None:
    """Doctored copies of the real run, one defect each: the matching check fails."""

    def broken(records: list[AttemptRecord]) -> set[str]:
        report = soak_checks.analyse(dataclasses.replace(short_run, records=records))
        return {c.name for c in report.failures(short=True)}

    records = list(short_run.records)
    final = next(r for r in records if r.final)
    assert "one final record per attempt key" in broken([*records, final])

    crash = _first(short_run, "crash")
    wrong = [*records]
    wrong[crash] = records[crash].model_copy(update={"reason": soak_checks.FREEZE_REASON})
    assert broken(wrong) == {"each try's fate follows its injected fault"}

    freeze = _first(short_run, "freeze")
    spared = [*records]
    spared[freeze] = records[freeze].model_copy(update={"status": final.status, "reason": final.reason})
    assert "each try's fate follows its injected fault" in broken(spared)

    unretried = [r.model_copy(update={"final": True}) if not r.final else r for r in records]
    assert "retries = records with a fault reason" in broken(unretried)


def test_rss_quarters_and_growth() -> None:
    mib = 2**20

    def sample(t: float, orchestrator: int, bridge: int = 0) -> Sample:
        return Sample(t, orchestrator * mib, bridge * mib, 100 * mib, 50 * mib)

    flat = [sample(t, 50, 40 + (t % 2)) for t in range(40)]
    peaks = soak_checks.quarters(flat)
    assert [q["total"] // mib for q in peaks] == [191] * 4  # peak: 50 + 41 + 100; farms not counted
    growing = [sample(t, 50 + t) for t in range(40)]
    peaks = soak_checks.quarters(growing)
    assert [q["orchestrator"] // mib for q in peaks] == [59, 69, 79, 89]
    assert soak_checks.quarters([]) == []


@pytest.mark.soak
@pytest.mark.timeout(1500)
def test_full_soak() -> None:
    run = run_soak(SoakOptions())
    report = soak_checks.analyse(run)
    soak_checks.print_report(report)
    assert report.ok, failed(report, short=False)
