"""orchestrator.verdict: every way an attempt ends, to the status, reason, error class and error text its
record carries (README, "Failure handling"; the records' fields)."""

from __future__ import annotations

import pytest

from orchestrator.status import AttemptOutcome, Metrics, Status
from orchestrator.verdict import (
    Cancelled,
    Ending,
    HostDisconnected,
    HostEnded,
    LaunchFailed,
    SetupFailed,
    StartFailed,
    StreamLost,
    Unresponsive,
    Verdict,
    WorkerDied,
    WorkerError,
    decide,
    of_outcome,
)

INFRA = Status.INFRA_ERROR


@pytest.mark.parametrize(
    ("ending", "verdict"),
    [
        pytest.param(
            SetupFailed("setup command 'make' exited 2: no rule"),
            Verdict(INFRA, "setup failed", "harness", "setup command 'make' exited 2: no rule"),
            id="setup",
        ),
        pytest.param(
            HostEnded("exited with code 3"),
            Verdict(
                INFRA,
                "extension host exited with code 3 before listening on its socket",
                "infra",
                "extension host exited with code 3 before listening on its socket",
            ),
            id="host-ended-before-listening",
        ),
        pytest.param(
            LaunchFailed("cannot launch 'code': No such file or directory"),
            Verdict(
                INFRA,
                "extension host did not come up",
                "infra",
                "cannot launch 'code': No such file or directory",
            ),
            id="launch",
        ),
        pytest.param(
            StartFailed("bridge restarted (session s1 -> s2)"),
            Verdict(INFRA, "StartNewTask failed: bridge restarted (session s1 -> s2)", "infra"),
            id="start",
        ),
        pytest.param(
            StreamLost("bridge restarted (session s1 -> s2)"),
            Verdict(INFRA, "lost the event stream: bridge restarted (session s1 -> s2)", "infra"),
            id="stream",
        ),
        pytest.param(
            HostDisconnected(), Verdict(INFRA, "extension host disconnected", "infra"), id="disconnected"
        ),
        pytest.param(
            Unresponsive(Status.TIMEOUT, 10.0),
            Verdict(
                INFRA,
                "extension host unresponsive",
                "infra",
                "timeout, then no event within 10s of CancelTask",
            ),
            id="unresponsive",
        ),
        pytest.param(Cancelled(), Verdict(Status.CANCELLED, "cancelled by the orchestrator"), id="ctrl-c"),
        pytest.param(
            Cancelled(Status.STUCK),
            Verdict(Status.CANCELLED, "cancelled by the orchestrator after the task ended stuck"),
            id="ctrl-c-after-the-task-ended",
        ),
        pytest.param(
            Cancelled(INFRA, "timeout, then no event within 1s of CancelTask"),
            Verdict(
                Status.CANCELLED,
                "cancelled by the orchestrator after the task ended infra_error",
                None,
                "timeout, then no event within 1s of CancelTask",
            ),
            id="ctrl-c-keeps-the-outcome-error",
        ),
        pytest.param(
            WorkerError("KeyError: 'boom'"),
            Verdict(INFRA, "worker error", "harness", "KeyError: 'boom'"),
            id="worker-error",
        ),
        pytest.param(
            WorkerDied(3, -9),
            Verdict(INFRA, "worker died", "infra", "worker process 3 died (exit code -9)"),
            id="worker-died",
        ),
    ],
)
def test_each_ending_has_its_one_verdict(ending: Ending, verdict: Verdict) -> None:
    assert decide(ending) == verdict


def test_a_cancelled_attempt_is_never_an_infrastructure_error_nor_retried() -> None:
    for ended in (None, *Status):
        verdict = decide(Cancelled(ended))
        assert verdict.status is Status.CANCELLED and verdict.error_class is None


def _outcome(status: Status, reason: str, error: str | None = None) -> AttemptOutcome:
    return AttemptOutcome(
        status=status,
        reason=reason,
        task_id="t",
        decided_at=1.0,
        ended_at=2.0,
        metrics=Metrics(),
        error=error,
    )


@pytest.mark.parametrize(
    ("outcome", "host_end", "verdict"),
    [
        pytest.param(
            _outcome(Status.COMPLETED, "taskCompleted for the root task"),
            "exited with code 0",
            Verdict(Status.COMPLETED, "taskCompleted for the root task"),
            id="completed-the-host-exit-is-no-error",
        ),
        pytest.param(
            _outcome(Status.TIMEOUT, "no outcome within 2 s"),
            None,
            Verdict(Status.TIMEOUT, "no outcome within 2 s"),
            id="timeout-the-agents-fault",
        ),
        pytest.param(
            _outcome(Status.API_ERROR, "the model API request failed: 500"),
            None,
            Verdict(Status.API_ERROR, "the model API request failed: 500", "infra"),
            id="api-error-is-infra",
        ),
        pytest.param(
            _outcome(INFRA, "extension host disconnected"),
            "killed by SIGSEGV",
            Verdict(INFRA, "extension host disconnected", "infra", "the extension host killed by SIGSEGV"),
            id="infra-says-how-the-host-ended",
        ),
        pytest.param(
            _outcome(INFRA, "extension host unresponsive", "stuck, then no event within 10s of CancelTask"),
            "exited with code 1",
            Verdict(
                INFRA, "extension host unresponsive", "infra", "stuck, then no event within 10s of CancelTask"
            ),
            id="infra-keeps-its-own-error",
        ),
    ],
)
def test_the_trackers_outcome_becomes_the_verdict(
    outcome: AttemptOutcome, host_end: str | None, verdict: Verdict
) -> None:
    assert of_outcome(outcome, host_end) == verdict
