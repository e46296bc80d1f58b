"""What the scheduler hands a worker and gets back: the job, the worker's configuration, the result, and
the record of one try. Plain data (picklable; no sockets, no contexts), importable without the worker's
machinery, so the main process stays light to import."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ipc_bridge.redaction import Redactor
from orchestrator.results.records import AttemptRecord, final_for
from orchestrator.suite.plan import Attempt
from orchestrator.suite.targets import Target
from orchestrator.verdict import Verdict

HOST_LOGS = "hosts"
"""Where each launched host's output is kept (``<case>__<model>__<repeat>__<attempt>.log``)."""
KEPT_WORKSPACES = "workspaces"
"""Where ``--keep-workspaces`` keeps each attempt's workspace."""


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs (picklable; no sockets, no contexts)."""

    run_id: str
    connection_file: str
    runtime_dir: str
    work_dir: str
    target: Target
    keep_workspaces: bool = False
    results_dir: str = ""
    """The run's results directory: host logs and kept workspaces go there (see
    :mod:`orchestrator.run.attempt_hosts`); empty on a Ray node, which keeps them in its work directory."""
    redactor: Redactor = field(default_factory=Redactor)
    """The suite's secrets: redacted from everything the worker writes (its log, its children's, what
    the records carry from a host's output)."""
    node: str | None = None
    """Where the attempts run, for the records: the Ray node id (None for local workers)."""
    referenced_env: frozenset[str] = frozenset()
    """The variables the suite's ``${...}`` refer to: withheld from the worker's children."""


@dataclass(frozen=True)
class Job:
    attempt: Attempt
    number: int
    """1 for the first try, then counting retries."""
    socket: str | None = None
    """For ``socket`` targets: the leased host's socket path."""
    tries: int = 0
    """Real tries of the key recorded before this one (cancelled ones are not tries): its retries are
    counted against ``retries``, whatever the attempt number."""


@dataclass
class JobResult:
    record: dict[str, Any]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    unstarted: bool = False
    """The job was readied (``prelaunch``) but its task never started: held back by a budget or a stop.
    It has no record; the scheduler queues it again."""
    diff: str | None = None
    """What the agent changed in its workspace (:mod:`orchestrator.run.workspace_diff`, redacted), or None:
    written by the run's writer beside the transcript, wherever the attempt ran (a Ray node included)."""


def new_record(
    run_id: str, job: Job, verdict: Verdict, *, started: datetime, ended: datetime, **fields: Any
) -> AttemptRecord:
    """The record of one try of ``job``: its key, number, finality and timing, and the ``verdict``
    (:mod:`orchestrator.verdict`, the one place that decides it); ``fields`` add the rest."""
    a = job.attempt
    return AttemptRecord(
        run_id=run_id,
        case_id=a.key.case_id,
        model_id=a.key.model_id,
        repeat=a.key.repeat,
        config_hash=a.key.config_hash,
        attempt=job.number,
        final=final_for(verdict.status, job.tries + 1, a.retries),
        status=verdict.status,
        reason=verdict.reason,
        error_class=verdict.error_class,
        error=verdict.error,
        started_at=started,
        ended_at=ended,
        duration_s=round((ended - started).total_seconds(), 4),
        tags=list(a.tags),
        **fields,
    )
