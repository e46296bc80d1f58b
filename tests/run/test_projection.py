"""The projected cost and time to completion the progress bar shows, against hand-computed figures."""

from __future__ import annotations

import pytest

from ipc_bridge.redaction import Redactor
from orchestrator.cli.progress import Progress
from orchestrator.run.projection import Projection, project
from tests.results.report_runs import rec


def test_nothing_is_projected_before_an_attempt_finished() -> None:
    assert project(spent_usd=0.3, busy_s=4.0, finished=0, left=10, slots=2) is None


def test_cost_and_time_follow_the_mean_of_the_finished_attempts() -> None:
    # 4 finished for $2.00 and 40 s of slot time: $0.50 and 10 s each. 6 left on 4 slots: 2 waves.
    p = project(spent_usd=2.0, busy_s=40.0, finished=4, left=6, slots=4)
    assert p == Projection(cost_usd=pytest.approx(5.0), remaining_s=pytest.approx(20.0))


def test_a_partial_wave_takes_a_whole_mean_duration() -> None:
    # 1 left on 4 slots still takes one mean duration (12 s), not a quarter of it.
    p = project(spent_usd=0.9, busy_s=36.0, finished=3, left=1, slots=4)
    assert p is not None
    assert p.cost_usd == pytest.approx(1.2) and p.remaining_s == pytest.approx(12.0)


def test_a_finished_run_projects_what_it_spent() -> None:
    p = project(spent_usd=1.25, busy_s=9.0, finished=5, left=0, slots=2)
    assert p == Projection(cost_usd=pytest.approx(1.25), remaining_s=0.0)


def test_over_budget_only_when_the_projection_exceeds_it() -> None:
    p = Projection(cost_usd=5.0, remaining_s=1.0)
    assert not p.over(None)
    assert not p.over(5.0)  # exactly the budget is within it
    assert p.over(4.99)


def test_the_progress_warns_once_when_the_projection_exceeds_the_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = Progress(4, quiet=True, as_json=False, redactor=Redactor(), slots=2, budget_usd=1.5)
    progress(rec("r", "c", "m", duration=2.0, cost=0.25))  # $0.25 x 4 = $1.00: within the budget
    assert capsys.readouterr().err == ""
    progress(rec("r", "c", "m", duration=2.0, cost=0.75))  # ($0.25 + $0.75) / 2 x 4 = $2.00: over it
    assert capsys.readouterr().err == (
        "warning: projected cost $2.00 exceeds the budget $1.50: the run will stop starting attempts "
        "once it is spent\n"
    )
    progress(rec("r", "c", "m", duration=2.0, cost=0.75))  # still over: said once
    assert capsys.readouterr().err == ""


def test_a_resumed_run_projects_against_the_budget_with_what_it_spent_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # $1.00 spent before the resume; 2 left at $0.25 each now: $1.50, exactly the budget, then over.
    progress = Progress(
        2, quiet=True, as_json=False, redactor=Redactor(), slots=1, budget_usd=1.5, spent_before=1.0
    )
    progress(rec("r", "c", "m", duration=2.0, cost=0.25))
    assert capsys.readouterr().err == ""
    progress(rec("r", "c", "m", duration=2.0, cost=0.30))
    assert "warning: projected cost $1.55 exceeds the budget $1.50" in capsys.readouterr().err
