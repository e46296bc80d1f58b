"""The result files of a run, ``results/<run-id>/``, and :func:`load` for notebooks.

::

    manifest.json      the resolved suite (secrets redacted), config hash, versions, git, command line
    results.jsonl      one AttemptRecord a line, appended, flushed and fsynced as each attempt ends
    events/<case>__<model>__<repeat>__<attempt>.jsonl   each attempt's transcript (non-partial events)
    events/<case>__<model>__<repeat>__<attempt>.idx     its offset index for the viewer, when it is big
                                                        (orchestrator.results.transcript_index)
    events/<case>__<model>__<repeat>__<attempt>.diff    what the agent changed in its workspace (taken by
                                                        the worker: orchestrator.run.workspace_diff)
    live/<case>__<model>__<repeat>__<attempt>.jsonl     a running attempt's transcript so far, gone once its
                                                        record is written (orchestrator.results.live_transcripts)
    summary.json       pass rate and totals by model and tag, rebuilt from results.jsonl
    results.parquet    a columnar cache of results.jsonl for load(), written when the run ends (optional)
    .lock              flock'd by the run's owner while it lives; names its pid and host

One process (the main one) owns a :class:`ResultsWriter`, and one writer owns a run directory at a time
(:mod:`orchestrator.results.run_lock`: a second one is refused while the first lives); it never writes a second
final record for a key, and on resume it cuts away a torn last line left by a hard kill. Every JSON
file is written whole (temp file, fsync, rename), and everything written passes through the suite's
redactor.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.redaction import Redactor
from orchestrator.results import columnar, live_transcripts
from orchestrator.results.records import (
    EVENTS,
    MANIFEST,
    RESULTS,
    SCHEMA_VERSION,
    SUMMARY,
    AttemptRecord,
    DuplicateRecordError,
    ResultsError,
    ResultsWriteError,
    iter_rows,
    read_records,
)
from orchestrator.results.run_lock import RunInProgressError, RunLock
from orchestrator.results.summary import summarize
from orchestrator.results.transcript_index import SAVE_FROM, index_path, save_index
from orchestrator.status import Status
from orchestrator.suite.plan import AttemptKey

log = logging.getLogger(__name__)

# The record schema lives in records.py; these names stay importable from here (the notebook API).


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ResultsWriteError(path, exc) from exc


# ------------------------------------------------------------------------------- file helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old file or the new one.
    ``sync_dir=False`` leaves the directory's fsync (which makes the rename durable) to the caller, who
    then writes several files and fsyncs their directory once."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk must not also keep a half-written temp file
            tmp.unlink()
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


# ------------------------------------------------------------------------------------ writer


class ResultsWriter:
    """The only writer of one run directory. Use :meth:`create` for a new run, :meth:`resume` for an
    existing one."""

    def __init__(self, run_dir: Path, redactor: Redactor | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.events_dir = self.run_dir / EVENTS
        self.results_path = self.run_dir / RESULTS
        self._redact = redactor or Redactor()
        # What the writer must answer at once, in O(1) per record; the records themselves are on disk
        # (holding them cost ~8.5 kB per attempt in a long run).
        self._cost_usd = 0.0
        self._final: set[AttemptKey] = set()
        self._numbers: dict[tuple[str, str, int], set[int]] = {}
        self._tries: dict[AttemptKey, int] = {}
        self._fd: int | None = None
        self._lock: RunLock | None = None

    @classmethod
    def create(
        cls, run_dir: Path, manifest: Mapping[str, Any], *, redactor: Redactor | None = None
    ) -> ResultsWriter:
        """Make a new run directory with its manifest, owned (locked) by this process until
        :meth:`close`. Refuses a directory that exists (:class:`RunInProgressError` while its owner
        lives); raises :class:`ResultsWriteError` (leaving nothing behind) when it cannot be made or
        written."""
        run_dir = Path(run_dir)
        with _writing(run_dir.parent):
            if not run_dir.parent.is_dir():
                run_dir.parent.mkdir(parents=True)
        try:
            run_dir.mkdir()
        except FileExistsError:
            owner = RunLock.held(run_dir)
            if owner is not None:
                raise RunInProgressError(run_dir, owner) from None
            raise ResultsError(
                f"{run_dir} exists: choose another --run-id, or --resume {run_dir.name} to continue it"
            ) from None
        except OSError as exc:
            raise ResultsWriteError(run_dir, exc) from exc
        writer = cls(run_dir, redactor)
        try:
            with _writing(run_dir):
                # Locked before the manifest exists: a resume racing the start is refused as in progress.
                writer._lock = RunLock(run_dir)
                writer.events_dir.mkdir()
                live_transcripts.live_dir(run_dir).mkdir()
                writer.write_manifest(manifest)
                writer._open()
        except ResultsWriteError:
            # A directory without a manifest is neither a run nor free for a new one: take it away.
            writer.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        # What killed runs beside this one left of their running attempts.
        live_transcripts.sweep(run_dir.parent, keep=run_dir)
        return writer

    @classmethod
    def resume(cls, run_dir: Path, *, redactor: Redactor | None = None) -> ResultsWriter:
        """Reopen a run directory, owned (locked) by this process until :meth:`close`: repairs a torn
        last line and indexes the records already written. Raises :class:`RunInProgressError` at once
        while another process owns it."""
        run_dir = Path(run_dir)
        if not (run_dir / MANIFEST).is_file():
            owner = RunLock.held(run_dir)  # a run that is starting: locked, its manifest not yet written
            if owner is not None:
                raise RunInProgressError(run_dir, owner)
            raise ResultsError(f"{run_dir} is not a run directory (no {MANIFEST})")
        writer = cls(run_dir, redactor)
        with _writing(run_dir):
            writer._lock = RunLock(run_dir)
        try:
            with _writing(run_dir):
                writer.events_dir.mkdir(exist_ok=True)
                # The running attempts of the session that was killed: they have no record, and never will.
                live_transcripts.clear(run_dir)
                live_transcripts.live_dir(run_dir).mkdir()
                for record in read_records(writer.results_path, repair=True):
                    writer._index(record)
                writer._open()
        except BaseException:
            writer.close()
            raise
        return writer

    def _open(self) -> None:
        self._fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fsync_dir(self.run_dir)

    def close(self) -> None:
        """Close results.jsonl and give up the run directory (another process may resume it now); the
        live transcripts go first (no attempt runs any more)."""
        self._close_records()
        if self._lock is not None:
            live_transcripts.clear(self.run_dir)
            self._lock.release()
            self._lock = None

    def _close_records(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------- manifest

    def read_manifest(self) -> dict[str, Any]:
        path = self.run_dir / MANIFEST
        try:
            manifest: dict[str, Any] = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ResultsError(f"{path}: unreadable manifest ({exc})") from None
        return manifest

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        path = self.run_dir / MANIFEST
        with _writing(path):
            atomic_write(path, _json(self._redact(dict(manifest))))

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Set top-level fields of the manifest (``ended_at=...``, ``stopped_by="budget"``)."""
        manifest = {**self.read_manifest(), **fields}
        self.write_manifest(manifest)
        return manifest

    # ---------------------------------------------------------------------------------- records

    @property
    def records(self) -> list[AttemptRecord]:
        """Every record written so far, read back from results.jsonl."""
        return read_records(self.results_path)

    @property
    def cost_usd(self) -> float:
        """Money spent by every recorded attempt, retried ones included (for the budget; a running total:
        the scheduler asks before every start)."""
        return self._cost_usd

    def finished_keys(self) -> set[AttemptKey]:
        """Keys that have a final record: what a resumed run skips."""
        return set(self._final)

    def next_attempt(self, key: AttemptKey) -> int:
        """The attempt number for the next try of ``key`` (counted over every config hash of the same
        case, model and repeat, so transcript names never collide)."""
        used = self._numbers.get((key.case_id, key.model_id, key.repeat), set())
        return max(used, default=0) + 1

    def tries(self, key: AttemptKey) -> int:
        """Real tries of ``key`` recorded so far: what its ``retries`` are counted against. A try the
        orchestrator cancelled (Ctrl-C) is not one: the attempt never had its chance."""
        return self._tries.get(key, 0)

    def _index(self, record: AttemptRecord) -> None:
        self._cost_usd += record.metrics.cost_usd
        if record.status is not Status.CANCELLED:
            self._tries[record.key] = self._tries.get(record.key, 0) + 1
        self._numbers.setdefault((record.case_id, record.model_id, record.repeat), set()).add(record.attempt)
        if record.final:
            self._final.add(record.key)

    def append(self, record: AttemptRecord) -> None:
        """Write one record durably: :meth:`append_many` of one."""
        self.append_many([record])

    def append_many(self, records: Sequence[AttemptRecord]) -> None:
        """Write records durably with one fsync (group commit): none counts as written (indexed, its
        live transcript removed) before that fsync. Refuses a second final record for a key and a reused
        attempt number: the records before the refused one are written, then
        :class:`DuplicateRecordError` is raised. When the write fails (disk full, ...), the records are
        written one by one, as many as fit (a nearly full disk still takes those before the failure), the
        file is cut back to its last complete record, and :class:`ResultsWriteError` says how many were."""
        if self._fd is None:
            raise ResultsError("the writer is closed")
        lines, refused = self._lines(records)
        if lines:
            try:
                self._write_synced(b"".join(lines))
            except ResultsWriteError as failed:
                failed.written = self._write_each(lines) if len(lines) > 1 else 0
                self._index_written(records[: failed.written])
                raise
            self._index_written(records[: len(lines)])
        if refused is not None:
            refused.written = len(lines)
            raise refused

    def _write_each(self, lines: list[bytes]) -> int:
        """Write ``lines`` one synced write each, up to the first that fails; returns how many were."""
        for n, line in enumerate(lines):
            if self._fd is None:  # a cut back that failed closed the file: nothing more is written
                return n
            try:
                self._write_synced(line)
            except ResultsWriteError:
                return n
        return len(lines)

    def _index_written(self, records: Sequence[AttemptRecord]) -> None:
        for record in records:
            self._index(record)
            # The record (and the transcript it names) supersede what the attempt showed while it ran.
            with contextlib.suppress(OSError):
                live_transcripts.remove(self.run_dir, record.key.events_name(record.attempt))

    def _lines(self, records: Sequence[AttemptRecord]) -> tuple[list[bytes], DuplicateRecordError | None]:
        """The lines of ``records`` up to the first one refused, and why it was."""
        final = set(self._final)
        numbers: set[tuple[str, str, int, int]] = set()
        lines: list[bytes] = []
        for record in records:
            key = record.key
            number = (key.case_id, key.model_id, key.repeat, record.attempt)
            if key in final:
                return lines, DuplicateRecordError(
                    f"{key.slug} ({key.config_hash}) already has a final record"
                )
            if number in numbers or record.attempt in self._numbers.get(number[:3], set()):
                return lines, DuplicateRecordError(
                    f"{key.slug}: attempt {record.attempt} is already recorded"
                )
            if record.final:
                final.add(key)
            numbers.add(number)
            lines.append(orjson.dumps(self._redact(record.model_dump(mode="json"))) + b"\n")
        return lines, None

    def _write_synced(self, data: bytes) -> None:
        """Append ``data`` to results.jsonl and fsync it; on failure cut it back and raise."""
        assert self._fd is not None
        with _writing(self.results_path):
            size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            self._cut_back(size)
            raise ResultsWriteError(self.results_path, exc) from exc

    def _cut_back(self, size: int) -> None:
        """Remove a partly written line, so that the file ends with a complete record."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as exc:
            # Resume cuts a torn last line too; but no later record may follow this one.
            log.error("%s: cannot remove a partly written record: %s", self.results_path, exc)
            self._close_records()  # the run stays owned: nobody may resume it while this process lives

    def write_transcript(
        self, key: AttemptKey, attempt: int, rows: Iterable[Mapping[str, Any]], *, sync_dir: bool = True
    ) -> str:
        """Write an attempt's transcript whole, redacted; returns its path relative to the run directory
        (for ``AttemptRecord.events_file``). Each row is a JSON-ready mapping, e.g. ``{"t": seconds,
        "dir": "in", "seq": n, "event": {...}}``, written as given: the worker left partial messages out
        (:mod:`orchestrator.run.slot_events`). ``sync_dir=False``: the caller fsyncs the events directory
        (:meth:`sync_events`) before any record names the transcript."""
        name = key.events_name(attempt)
        data = live_transcripts.encode(rows, self._redact)  # the lines its live file had, redacted alike
        path = self.events_dir / name
        with _writing(path):
            atomic_write(path, data, sync_dir=sync_dir)
        # After the transcript, so a crash between leaves none. The index only speeds the viewer up (it
        # builds its own without one): failing to write it must not stop the run.
        if len(data) >= SAVE_FROM:
            try:
                save_index(path, data)
            except OSError as exc:
                log.warning("%s: cannot save the transcript's index: %s", index_path(path), exc)
        return f"{EVENTS}/{name}"

    def write_diff(self, key: AttemptKey, attempt: int, text: str, *, sync_dir: bool = True) -> str:
        """Write what an attempt's agent changed in its workspace (a unified diff, redacted again here)
        beside its transcript; returns its path relative to the run directory (for
        ``AttemptRecord.diff_file``; ``sync_dir`` as for :meth:`write_transcript`)."""
        name = f"{key.slug}__{attempt}.diff"
        path = self.events_dir / name
        with _writing(path):
            atomic_write(path, self._redact.text(text).encode(), sync_dir=sync_dir)
        return f"{EVENTS}/{name}"

    def sync_events(self) -> None:
        """Make the transcripts and diffs written with ``sync_dir=False`` durable (one directory fsync)."""
        with _writing(self.events_dir):
            _fsync_dir(self.events_dir)

    # ---------------------------------------------------------------------------------- summary

    def summary(self, **extra: Any) -> dict[str, Any]:
        """Totals rebuilt from results.jsonl (``extra`` adds top-level fields, e.g. the stop reason). Read
        as flat rows in one pass: a long run's records never all sit in memory."""
        return {"schema_version": SCHEMA_VERSION, **summarize(iter_rows(self.results_path)), **extra}

    def write_columnar(self) -> Path | None:
        """At the end of a run: results.parquet, the columnar cache that :func:`load` reads instead of
        results.jsonl while it matches it. Never raises: without it, load() parses results.jsonl."""
        return columnar.write_cache(self.run_dir)

    def write_summary(self, summary: Mapping[str, Any] | None = None, **extra: Any) -> Path:
        """Write summary.json: ``summary`` (from :meth:`summary`), or rebuilt here with ``extra``."""
        path = self.run_dir / SUMMARY
        with _writing(path):
            atomic_write(path, _json(self._redact(dict(summary or self.summary(**extra)))))
        return path


# --------------------------------------------------------------------------------------- load


def _run_dirs(source: str | Path | Iterable[str | Path]) -> list[Path]:
    items: list[str | Path] = [source] if isinstance(source, (str, Path)) else list(source)
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            hits = sorted(glob.glob(text))
            if not hits:
                raise ResultsError(f"no run matches {text!r}")
            paths.extend(Path(h) for h in hits)
        else:
            paths.append(Path(item))
    out: list[Path] = []
    for path in paths:
        run_dir = path.parent if path.name == RESULTS else path
        if not (run_dir / RESULTS).is_file() and not (run_dir / MANIFEST).is_file():
            raise ResultsError(f"{path} is not a run directory (no {RESULTS})")
        if run_dir not in out:
            out.append(run_dir)
    return out


def load(source: str | Path | Iterable[str | Path], *, all_attempts: bool = False) -> Any:
    """Load one run, several runs or a glob of runs as a ``pandas.DataFrame``, one row per attempt.

    ``source``: a run directory, its results.jsonl, a glob (``"results/*"``), or a list of those.
    By default only final records (one per case, model, repeat and config hash); ``all_attempts=True``
    adds the retried ones. Columns: :data:`COLUMNS` (``started_at``/``ended_at`` as UTC datetimes;
    ``tool_usage``, ``tool_errors``, ``errors``, ``tags`` and ``host_killed`` hold Python objects). A run's
    results.parquet (:mod:`orchestrator.results.columnar`) is read instead of its results.jsonl when it was built
    from results.jsonl as it is now; the frame is the same. The files are only read, never repaired.
    Needs pandas (``pip install 'roo-eval-orchestrator[notebook]'``)."""
    try:
        importlib.import_module("pandas")
    except ImportError:
        raise ImportError(
            "orchestrator.results.store.load needs pandas: pip install 'roo-eval-orchestrator[notebook]'"
        ) from None
    return columnar.frame(_run_dirs(source), all_attempts=all_attempts)
