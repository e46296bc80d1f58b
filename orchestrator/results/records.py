"""What one attempt's record is: the schema of a results.jsonl line, its flat (DataFrame) form, and how
results.jsonl is read back. :mod:`orchestrator.results.store` writes the files; this module defines them."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from orchestrator.run.grading import CheckResult
from orchestrator.status import Metrics, Status
from orchestrator.suite.plan import AttemptKey

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
EVENTS = "events"


class ResultsError(Exception):
    """A run directory that cannot be created, resumed or read."""


class DuplicateRecordError(ResultsError):
    """A second final record for an attempt key, or a reused attempt number: refused."""


class ResultsWriteError(ResultsError):
    """A file of the run could not be written (disk full, file too large, I/O error, not writable).
    Every record written before is complete, and no torn line is left behind: once the cause is fixed,
    resuming the run continues it. ``orchestrate run`` exits with :attr:`exit_code`."""

    exit_code = 3

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = Path(path)
        self.errno = error.errno
        name = errno.errorcode.get(error.errno or 0, "")
        reason = f"{error.strerror} ({name})" if error.strerror and name else str(error)
        super().__init__(f"cannot write {self.path}: {reason}")


class Timings(BaseModel):
    """Seconds spent in each phase (None when the phase did not run)."""

    model_config = ConfigDict(extra="ignore")
    setup_s: float | None = None
    launch_s: float | None = None
    wait_s: float | None = None
    """Ready (workspace set up, host attached), waiting for a slot to free: only with ``prelaunch``."""
    agent_s: float | None = None
    check_s: float | None = None
    teardown_s: float | None = None


class AttemptRecord(BaseModel):
    """One line of results.jsonl: one attempt of one (case, model, repeat)."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    case_id: str
    model_id: str
    repeat: int
    config_hash: str
    attempt: int = Field(ge=1)
    """1 for the first try; retries after infrastructure failures count up."""
    final: bool
    """The last record of its key: a result, or an infrastructure error with no retries left.
    Non-final records are retried attempts, or cancelled ones (``status: cancelled``: stopped by the
    orchestrator, not a try); a key without a final record is run again on resume."""
    status: Status
    passed: bool | None
    """The check's verdict (None when no check ran)."""
    reason: str = ""
    """Why the outcome is what it is, in words."""
    error_class: Literal["infra", "harness"] | None = None
    error: str | None = None
    task_id: str | None = None
    """The root Roo task id."""
    slot: str | None = None
    """The host or socket that ran it."""
    node: str | None = None
    """The Ray node id that ran it (``target.executor: ray``); None for a local run."""
    started_at: AwareDatetime
    ended_at: AwareDatetime
    duration_s: float
    timings: Timings = Field(default_factory=Timings)
    metrics: Metrics = Field(default_factory=Metrics)
    check: CheckResult | None = None
    tags: list[str] = Field(default_factory=list)
    events_file: str | None = None
    """The transcript, relative to the run directory."""
    host_log: str | None = None
    """The launched host's own output (stdout and stderr), relative to the run directory
    (``hosts/<case>__<model>__<repeat>__<attempt>.log``); None when it wrote nothing."""
    host_output_tail: str | None = None
    """The last ~2 KB of that output, redacted, when the host died or the attempt is an infra_error:
    what the host said about why."""
    host_killed: list[str] = Field(default_factory=list)
    """What the host's teardown had to end besides the host's own process (``code (pid 123)``): the
    processes it left, in its session or detached from it (see :mod:`orchestrator.hosts.marks`)."""
    kept_workspace: str | None = None
    """With ``--keep-workspaces``: where its workspace was kept, relative to the run directory
    (``workspaces/<case>__<model>__<repeat>__<attempt>``; absolute on a Ray node)."""

    @property
    def key(self) -> AttemptKey:
        return AttemptKey(self.case_id, self.model_id, self.repeat, self.config_hash)

    def flat(self) -> dict[str, Any]:
        """The record as one flat row (the columns of :func:`load`)."""
        return flat_row(self.model_dump(mode="json"))


def flat_values(d: Mapping[str, Any]) -> tuple[Any, ...]:
    """The flat values of a record's JSON form (a results.jsonl line), in :data:`COLUMNS` order: the one
    definition of the columns.

    Works on plain dicts so that :func:`~orchestrator.results.store.load` builds no pydantic model per line
    (100,000 lines: ~0.7 s instead of ~8 s), and returns a tuple so that the rows transpose into columns
    in C (``zip(*rows)``). ``started_at``/``ended_at`` stay ISO strings here; ``load`` converts them."""
    m = d.get("metrics") or {}
    c = d.get("check")
    t = d.get("timings") or {}
    tools = m.get("tool_usage") or {}
    return (
        d["run_id"],
        d["case_id"],
        d["model_id"],
        d["repeat"],
        d["attempt"],
        d["final"],
        d["config_hash"],
        d["status"],
        d.get("passed"),
        d.get("reason", ""),
        d.get("error_class"),
        d.get("error"),
        d.get("task_id"),
        d.get("slot"),
        d.get("node"),
        d["started_at"],
        d["ended_at"],
        d["duration_s"],
        *(t.get(name) for name in _TIMINGS),
        m.get("tokens_in", 0),
        m.get("tokens_out", 0),
        m.get("cache_reads", 0),
        m.get("cache_writes", 0),
        m.get("context_tokens", 0),
        m.get("cost_usd", 0.0),
        sum(v["attempts"] for v in tools.values()),
        sum(v["failures"] for v in tools.values()),
        tools,
        list(m.get("tool_failures") or []),
        list(m.get("errors") or []),
        m.get("subtasks", 0),
        m.get("messages", 0),
        m.get("api_requests", 0),
        m.get("api_retries", 0),
        m.get("time_to_first_event_s"),
        m.get("completion"),
        c["passed"] if c else None,
        c["exit_code"] if c else None,
        c["timed_out"] if c else None,
        c["duration"] if c else None,
        c["output_tail"] if c else None,
        list(d.get("tags") or []),
        d.get("events_file"),
        d.get("host_log"),
        d.get("host_output_tail"),
        list(d.get("host_killed") or []),
        d.get("kept_workspace"),
    )


def flat_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row: :func:`flat_values` by column name."""
    return dict(zip(COLUMNS, flat_values(d), strict=True))


_TIMINGS = tuple(Timings.model_fields)
COLUMNS = [
    *("run_id", "case_id", "model_id", "repeat", "attempt", "final", "config_hash", "status", "passed"),
    *("reason", "error_class", "error", "task_id", "slot", "node", "started_at", "ended_at", "duration_s"),
    *_TIMINGS,
    *("tokens_in", "tokens_out", "cache_reads", "cache_writes", "context_tokens", "cost_usd"),
    *("tool_attempts", "tool_failures", "tool_usage", "tool_errors", "errors", "subtasks", "messages"),
    *("api_requests", "api_retries", "time_to_first_event_s", "completion"),
    *("check_passed", "check_exit_code", "check_timed_out", "check_duration_s", "check_output_tail"),
    *("tags", "events_file", "host_log", "host_output_tail", "host_killed", "kept_workspace"),
]
"""The columns of :func:`~orchestrator.results.store.load`, in order: the names of :func:`flat_values`."""


def final_for(status: Status, tries: int, retries: int) -> bool:
    """Whether a record with this outcome is its key's last. ``tries`` counts the key's real tries, this
    one included; cancelled ones are not tries (the attempt number, which counts every record, is not
    it). Infrastructure failures are retried while ``tries <= retries``; an attempt stopped by the
    orchestrator itself (cancelled) never is final, so resume runs it again."""
    if status is Status.CANCELLED:
        return False
    return not status.is_infra or tries > retries


def read_records(path: Path, *, repair: bool = False) -> list[AttemptRecord]:
    """Parse results.jsonl. A torn last line (no newline, or garbage where the last line should be) is
    the trace of a hard kill: skipped, and cut from the file when ``repair``. Damage before the last line
    is an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    keep = data.rfind(b"\n") + 1  # bytes up to the last complete line
    lines = data[:keep].split(b"\n")[:-1]
    records: list[AttemptRecord] = []
    offset = 0
    for number, line in enumerate(lines, start=1):
        start = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            records.append(AttemptRecord.model_validate(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            if number == len(lines):
                keep = start
                break
            raise ResultsError(
                f"{path}:{number}: unreadable record ({exc}); fix or remove the line"
            ) from None
    if keep < len(data):
        log.warning(
            "%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - keep
        )
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
    return records
