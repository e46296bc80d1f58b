"""What an attempt's record says it ended as (:class:`Verdict`), for every way it can end: the one place
that maps an ending to a status, a reason, an error class and an error text.

An attempt's task events are read by :class:`orchestrator.outcome.OutcomeTracker`, whose
:class:`~orchestrator.status.AttemptOutcome` becomes a verdict here (:func:`of_outcome`). Everything
else that ends an attempt is a typed :data:`Ending`, given to :func:`decide`:

* before the task: :class:`SetupFailed` (a setup command or the workspace template), :class:`HostEnded`
  (a launched host that exited before it listened), :class:`LaunchFailed` (a host that did not come up,
  or an attach that failed);
* during the task, given to the tracker (:meth:`~orchestrator.outcome.OutcomeTracker.force`):
  :class:`StartFailed` (no reply to StartNewTask), :class:`StreamLost` (the slot's event stream broke),
  :class:`HostDisconnected` (the host's connection went down), :class:`Unresponsive` (the tracker's rule:
  CancelTask went unanswered);
* at any time: :class:`Cancelled` (Ctrl-C, a circuit breaker, a Ray job never started);
* in the main process: :class:`WorkerError` (the worker's code raised), :class:`WorkerDied`.

Statuses, reasons and error texts are what README.md ("Failure handling") and the records promise; the
tests of this module hold each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator.status import AttemptOutcome, Status

ErrorClass = Literal["infra", "harness"]

DISCONNECTED = "extension host disconnected"
UNRESPONSIVE = "extension host unresponsive"
CANCELLED = "cancelled by the orchestrator"


@dataclass(frozen=True)
class Verdict:
    """The status, reason, error class and error text of one attempt's record."""

    status: Status
    reason: str
    error_class: ErrorClass | None = None
    """``infra`` for an infrastructure status, ``harness`` for a failure of the orchestrator's own
    machinery (setup, the worker), None otherwise."""
    error: str | None = None
    """What the reason does not say (the host's exit, the command's output), for the record."""


@dataclass(frozen=True)
class SetupFailed:
    """The workspace could not be prepared: ``detail`` says which setup command failed, and how."""

    detail: str


@dataclass(frozen=True)
class HostEnded:
    """A launched host ended by itself before it listened on its socket; ``how``: ``exited with code
    3``, ``killed by SIGSEGV``."""

    how: str


@dataclass(frozen=True)
class LaunchFailed:
    """The host could not be launched, or the slot not attached to it: ``detail`` says why."""

    detail: str


@dataclass(frozen=True)
class StartFailed:
    """StartNewTask got no reply (the bridge restarted, the slot went down)."""

    detail: str


@dataclass(frozen=True)
class StreamLost:
    """The slot's event stream broke during the task."""

    detail: str


@dataclass(frozen=True)
class HostDisconnected:
    """The host's connection to its slot went down during the task (most likely a crash)."""


@dataclass(frozen=True)
class Unresponsive:
    """After an outcome ``then`` that left the task running, CancelTask went unanswered for
    ``cancel_timeout`` seconds (or could not be delivered): the host never gave the agent its chance."""

    then: Status
    cancel_timeout: float


@dataclass(frozen=True)
class Cancelled:
    """Stopped by the orchestrator itself. ``task_ended``: the tracker's status when the task had ended
    already (stopped in its cancel, teardown or check: what the agent did is known, its grade is not);
    ``error``: that outcome's error text, kept."""

    task_ended: Status | None = None
    error: str | None = None


@dataclass(frozen=True)
class WorkerError:
    """The worker's code raised while running the attempt (a bug of ours): ``detail`` is the error."""

    detail: str


@dataclass(frozen=True)
class WorkerDied:
    """The worker process running the attempt died."""

    wid: int
    exitcode: int | None


Ending = (
    SetupFailed
    | HostEnded
    | LaunchFailed
    | StartFailed
    | StreamLost
    | HostDisconnected
    | Unresponsive
    | Cancelled
    | WorkerError
    | WorkerDied
)
"""Every way an attempt ends that is not read from its task's events."""


def decide(ending: Ending) -> Verdict:
    """The verdict of an attempt that ``ending`` ended."""
    infra = Status.INFRA_ERROR
    match ending:
        case SetupFailed(detail):
            return Verdict(infra, "setup failed", "harness", detail)
        case HostEnded(how):
            said = f"extension host {how} before listening on its socket"
            return Verdict(infra, said, "infra", said)
        case LaunchFailed(detail):
            return Verdict(infra, "extension host did not come up", "infra", detail)
        case StartFailed(detail):
            return Verdict(infra, f"StartNewTask failed: {detail}", "infra")
        case StreamLost(detail):
            return Verdict(infra, f"lost the event stream: {detail}", "infra")
        case HostDisconnected():
            return Verdict(infra, DISCONNECTED, "infra")
        case Unresponsive(then, cancel_timeout):
            error = f"{then.value}, then no event within {cancel_timeout:g}s of CancelTask"
            return Verdict(infra, UNRESPONSIVE, "infra", error)
        case Cancelled(task_ended, error):
            after = "" if task_ended is None else f" after the task ended {task_ended.value}"
            return Verdict(Status.CANCELLED, CANCELLED + after, None, error)
        case WorkerError(detail):
            return Verdict(infra, "worker error", "harness", detail)
        case WorkerDied(wid, exitcode):
            return Verdict(infra, "worker died", "infra", f"worker process {wid} died (exit code {exitcode})")


def of_outcome(outcome: AttemptOutcome, host_end: str | None = None) -> Verdict:
    """The verdict of an attempt whose task the tracker followed to ``outcome``. ``host_end``: how the
    host had ended by itself (``exited with code 1``), if it had; an infrastructure outcome that has no
    error text of its own says so, since it is likely why."""
    error = outcome.error
    if outcome.status.is_infra and host_end and error is None:
        error = f"the extension host {host_end}"
    return Verdict(outcome.status, outcome.reason, "infra" if outcome.status.is_infra else None, error)
