"""What one attempt's record is: the schema of a results.jsonl line, its flat row (the DataFrame's
columns), and the one reader of results.jsonl with its rule for a torn last line.
:mod:`orchestrator.results.store` writes the files; this module defines them and reads them back."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from orchestrator.status import Metrics, Status
from orchestrator.suite.plan import AttemptKey

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
EVENTS = "events"


class ResultsError(Exception):
    """A run directory that cannot be created, resumed or read."""


class DuplicateRecordError(ResultsError):
    """A second final record for an attempt key, or a reused attempt number: refused."""

    written = 0
    """How many records before the refused one :meth:`ResultsWriter.append_many` wrote."""


class ResultsWriteError(ResultsError):
    """A file of the run could not be written (disk full, file too large, I/O error, not writable).
    Every record written before is complete, and no torn line is left behind: once the cause is fixed,
    resuming the run continues it. ``orchestrate run`` exits with :attr:`exit_code`."""

    exit_code = 3
    written = 0
    """How many records of the batch :meth:`ResultsWriter.append_many` wrote before the failure."""

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
    """The host closed and gone, and the workspace's diff taken (``diff_file``)."""


class CheckResult(BaseModel):
    """What the case's check command did (:mod:`orchestrator.run.grading` runs it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    passed: bool
    """Exit status 0 within the timeout."""
    exit_code: int | None
    """The exit status; negative when ended by a signal (-15, -9 after a timeout); None when the command
    could not be started (the reason is in ``output_tail``)."""
    duration: float
    """Seconds from start until the process group was gone."""
    timed_out: bool
    output_tail: str
    """The last bytes of stdout and stderr, interleaved, decoded as UTF-8 (bounded)."""


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
    diff_file: str | None = None
    """What the agent changed in its workspace, a unified diff against the case's template taken before
    the check (redacted, capped at 1 MiB), relative to the run directory
    (``events/<case>__<model>__<repeat>__<attempt>.diff``, written by the run's writer wherever the
    attempt ran, a Ray node included); None when nothing changed or the task never started."""

    @property
    def key(self) -> AttemptKey:
        return AttemptKey(self.case_id, self.model_id, self.repeat, self.config_hash)

    def flat(self) -> dict[str, Any]:
        """The record as one flat row (the columns of :func:`load`)."""
        return flat_row(self.model_dump(mode="json"))


class Row(NamedTuple):
    """One results.jsonl line as a flat row: the columns of :func:`~orchestrator.results.store.load`
    (:data:`COLUMNS` are its field names), and what the summary, the report, compare and
    :func:`~orchestrator.results.live.live` read. Built by :func:`flat_values` from the line's JSON, not
    validated again: the types are what the writer writes. ``started_at``/``ended_at`` are ISO texts."""

    run_id: str
    case_id: str
    model_id: str
    repeat: int
    attempt: int
    final: bool
    config_hash: str
    status: str
    passed: bool | None
    reason: str
    error_class: str | None
    error: str | None
    task_id: str | None
    slot: str | None
    node: str | None
    started_at: str
    ended_at: str
    duration_s: float
    setup_s: float | None
    launch_s: float | None
    wait_s: float | None
    agent_s: float | None
    check_s: float | None
    teardown_s: float | None
    tokens_in: int
    tokens_out: int
    cache_reads: int
    cache_writes: int
    context_tokens: int
    cost_usd: float
    tool_attempts: int
    tool_failures: int
    tool_usage: dict[str, Any]
    tool_errors: list[Any]
    errors: list[str]
    subtasks: int
    messages: int
    api_requests: int
    api_retries: int
    time_to_first_event_s: float | None
    completion: str | None
    check_passed: bool | None
    check_exit_code: int | None
    check_timed_out: bool | None
    check_duration_s: float | None
    check_output_tail: str | None
    tags: list[str]
    events_file: str | None
    host_log: str | None
    host_output_tail: str | None
    host_killed: list[str]
    kept_workspace: str | None
    diff_file: str | None

    @property
    def is_error(self) -> bool:
        """An error, not a result: an infrastructure status, or an ``error_class`` (a harness error, say
        a transcript that could not be written, whatever the check said)."""
        return self.status in _INFRA or self.error_class is not None

    @property
    def outcome(self) -> str:
        """``error``, ``pass`` or ``fail``: the class a compare flip is made of."""
        if self.is_error:
            return "error"
        return "pass" if self.passed else "fail"


_INFRA = frozenset(s.value for s in Status if s.is_infra)


def flat_values(d: Mapping[str, Any]) -> Row:
    """The flat row of a record's JSON form (a results.jsonl line): the one definition of the columns.

    Works on plain dicts so that readers build no pydantic model per line (100,000 lines: ~0.7 s instead
    of ~8 s), and returns a tuple so that the rows transpose into columns in C (``zip(*rows)``)."""
    m = d.get("metrics") or {}
    c = d.get("check")
    t = d.get("timings") or {}
    tools = m.get("tool_usage") or {}
    # tuple.__new__ instead of Row(...): the same row, without a Python-level call of 53 arguments.
    return tuple.__new__(
        Row,
        (
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
            t.get("setup_s"),
            t.get("launch_s"),
            t.get("wait_s"),
            t.get("agent_s"),
            t.get("check_s"),
            t.get("teardown_s"),
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
            d.get("diff_file"),
        ),
    )


def flat_row(d: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row: :func:`flat_values` by column name."""
    return flat_values(d)._asdict()


COLUMNS = list(Row._fields)
"""The columns of :func:`~orchestrator.results.store.load`, in order: the fields of :class:`Row`."""
REQUIRED: tuple[str, ...] = ("run_id", "case_id", "model_id", "repeat", "attempt", "final", "config_hash")
REQUIRED += ("status", "started_at", "ended_at", "duration_s")
"""The fields a results.jsonl line must have to be a record (:func:`flat_values` reads them unguarded);
every other field has a default."""


def final_for(status: Status, tries: int, retries: int) -> bool:
    """Whether a record with this outcome is its key's last. ``tries`` counts the key's real tries, this
    one included; cancelled ones are not tries (the attempt number, which counts every record, is not
    it). Infrastructure failures are retried while ``tries <= retries``; an attempt stopped by the
    orchestrator itself (cancelled) never is final, so resume runs it again."""
    if status is Status.CANCELLED:
        return False
    return not status.is_infra or tries > retries


# ------------------------------------------------------------------------------------ reading
#
# The one reader of results.jsonl, and its one rule for a torn last line. Every reader goes through
# RecordReader: the writer's resume and read_records (models), the summary, report and compare (rows),
# load() and its columnar cache (rows), live() (rows, read again as the file grows); so they agree line
# for line on what the file holds.


class NotARecordError(ValueError):
    """A line that is not a record: not JSON, not an object, or without a field every record has."""


_STATUSES = frozenset(s.value for s in Status)
_REQUIRED = frozenset(REQUIRED)
_CONVERT_ERRORS = (KeyError, TypeError, AttributeError, ValueError)  # pydantic's ValidationError included


def record_data(line: bytes) -> dict[str, Any]:
    """The JSON of a results.jsonl line that is a record: an object with every :data:`REQUIRED` field and
    a known status. Anything else raises :class:`NotARecordError`. Only this decides what a torn line is;
    the field types are left to the reader's conversion (a torn write leaves no whole object)."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise NotARecordError(str(exc)) from None
    if not isinstance(data, dict):
        raise NotARecordError(f"a JSON {type(data).__name__}, not an object")
    if not data.keys() >= _REQUIRED:  # one set comparison in C: this runs for every line
        raise NotARecordError(f"no {', '.join(name for name in REQUIRED if name not in data)}")
    status = data["status"]
    if not isinstance(status, str) or status not in _STATUSES:
        raise NotARecordError(f"unknown status {status!r}")
    return data


class RecordReader:
    """Reads the records of one results.jsonl from where it last stopped.

    The writer appends each record as one whole line (one write, then fsync). A hard kill can leave the
    end of the file torn: a last line without its newline, or a last line that is not a record (garbage,
    zeros after a crash). The rule, the same for every reader:

    - blank lines are skipped;
    - a line without its newline at the end of the file is torn, and so is a line that is not a record
      (:func:`record_data`) when it is the file's last line: both are left unread (:attr:`torn` counts
      them; only the writer's resume cuts them, through ``read_records(repair=True)``);
    - a line that is not a record before the last line is damage: :class:`ResultsError` naming it;
    - a record its reader cannot convert (a model's validation, say) is damage wherever it is.

    A whole-file read is one :meth:`read`; :func:`orchestrator.results.live.live` keeps its reader and
    reads again as the file grows, from :attr:`offset`: a torn end left unread is read again then (it was
    a line being written, or a resume cut it and appended)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        """Bytes read and taken: every line before it was a record or blank."""
        self.torn = 0
        """Bytes after :attr:`offset` left unread by the last :meth:`read` (a torn end, or a line being
        written)."""
        self._lines = 0  # complete lines taken: the next one's number is one more

    def read(self, convert: Callable[[dict[str, Any]], T]) -> Iterator[T]:
        """``convert(data)`` of each record after :attr:`offset`, in file order, up to the file's end as
        it is now; :attr:`offset` moves past each line as it is taken. Nothing is ever written."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 -- closed below; a generator cannot use `with` here
        except FileNotFoundError:
            if self.offset:
                raise ResultsError(
                    f"{self.path} is gone, after {self.offset} bytes of it were read"
                ) from None
            self.torn = 0
            return
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self.offset:
                raise ResultsError(f"{self.path} was cut to {size} bytes, below the {self.offset} read")
            fh.seek(self.offset)
            seen = self.offset
            bad: tuple[int, Exception] | None = None
            for line in fh:
                seen += len(line)
                if not line.endswith(b"\n"):
                    break  # the end of the file: a torn line, or one being written
                number = self._lines + 1
                if bad is not None:
                    raise self._damage(*bad)
                if line.isspace():
                    self._take(line)
                    continue
                try:
                    data = record_data(line)
                except NotARecordError as exc:
                    bad = (number, exc)  # torn if it is the last line; damage if another follows
                    continue
                try:
                    value = convert(data)
                except _CONVERT_ERRORS as exc:
                    raise self._damage(number, exc) from None
                self._take(line)
                yield value
            self.torn = seen - self.offset

    def _take(self, line: bytes) -> None:
        self.offset += len(line)
        self._lines += 1

    def _damage(self, number: int, exc: Exception) -> ResultsError:
        return ResultsError(f"{self.path}:{number}: unreadable record ({exc}); fix or remove the line")

    def warn_torn(self) -> None:
        """Say that a whole-file read left a torn last line unread."""
        if self.torn:
            log.warning(
                "%s: ignoring a torn last line (%d bytes) left by an interrupted run", self.path, self.torn
            )


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Millions of small containers, none of them cyclic: the collector's passes over rows that pile up
    only cost time (~3x the read time on 100,000 records, more in a notebook full of objects)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_records(path: Path, *, repair: bool = False) -> list[AttemptRecord]:
    """Every record of a results.jsonl as models. A torn last line (:class:`RecordReader`) is skipped, and
    cut from the file when ``repair`` (the writer's resume, before it appends)."""
    reader = RecordReader(path)
    records = list(reader.read(AttemptRecord.model_validate))
    reader.warn_torn()
    if reader.torn and repair:
        with open(path, "r+b") as fh:
            fh.truncate(reader.offset)
            fh.flush()
            os.fsync(fh.fileno())
    return records


def iter_rows(path: Path) -> Iterator[Row]:
    """The flat rows of a results.jsonl, every record (retried ones included) in file order, read once
    and only read; says so when a torn last line is left unread."""
    reader = RecordReader(path)
    yield from reader.read(flat_values)
    reader.warn_torn()


def read_rows(path: Path) -> list[Row]:
    """:func:`iter_rows` as a list."""
    with gc_paused():
        return list(iter_rows(path))
