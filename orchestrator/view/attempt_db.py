"""Where a run's attempt index lives on disk, and whether it still describes the run's results.jsonl.

The index (:mod:`orchestrator.view.attempts`) is an SQLite file the viewer owns: ``.view/attempts.sqlite``
in the run directory (deleted with the run), or, when the run directory cannot be written (a read-only
mount, a bundle's source), a file in a private directory under the system's temp dir, named by a hash of
the run directory's real path. It is a cache: whatever is wrong with it (another version, a damaged file,
a results.jsonl that is no longer the one it indexed) is answered by building it again from
results.jsonl, never by trusting it.

What it indexed is pinned by results.jsonl's device and inode, the offset read up to, and a hash of the
bytes just before that offset and at the file's start: a file replaced (renamed over), cut short or
rewritten is indexed again from its first line; a file only appended to is read on from the offset.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 2
"""The schema's version: a file of another is dropped and built again."""
_WINDOW = 4096
"""How many bytes at results.jsonl's start, and before the offset read up to, the pin hashes."""

COLUMNS = (
    "run_id",
    "case_id",
    "model_id",
    "repeat",
    "attempt",
    "final",
    "config_hash",
    "status",
    "passed",
    "error_class",
    "error",
    "duration_s",
    "tokens_in",
    "tokens_out",
    "cache_reads",
    "cache_writes",
    "cost_usd",
    "tags",
    "events_file",
)
"""The fields of a record's :class:`~orchestrator.results.records.Row` the index keeps: what the table
shows and filters on, and what ``summarize`` and ``compare_rows`` read. ``tags`` as JSON text."""

# Columns without a declared type keep each value as the reader gave it (an int stays an int, a float a
# float): rows read back give summarize and compare exactly the numbers the record held.
_SCHEMA = f"""
CREATE TABLE meta (one INTEGER PRIMARY KEY CHECK (one = 1), version, dev, ino, offset, pin, count);
CREATE TABLE attempts (
    idx INTEGER PRIMARY KEY, offset, reason, live_name, {", ".join(COLUMNS)}
);
CREATE TABLE tags (idx, tag);
CREATE TABLE choices (kind, value, PRIMARY KEY (kind, value)) WITHOUT ROWID;
CREATE INDEX tags_by_tag ON tags (tag, idx);
CREATE INDEX attempts_by_live_name ON attempts (live_name);
"""


@dataclass(frozen=True)
class Pin:
    """What the index was read from: results.jsonl's identity and how far it was read."""

    dev: int
    ino: int
    offset: int
    pin: str
    count: int


def _private_dir() -> Path:
    """A directory under the temp dir that only this user can reach (a fresh one if the usual one is
    not ours: another user could have made it first)."""
    base = Path(tempfile.gettempdir()) / f"orchestrate-view-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    st = os.lstat(base)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
        return base
    return Path(tempfile.mkdtemp(prefix="orchestrate-view-"))


def fallback_path(run_dir: Path) -> Path:
    """The index of a run whose directory cannot be written."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:32]
    return _private_dir() / f"{digest}.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    """An open index at ``path`` with the current schema, writable (else sqlite3.Error or OSError)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    # One connection per index, used under the index's lock from the server's worker threads.
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        # A cache: a crash may lose it (it is built again), so no fsync and no journal file on disk.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA journal_mode = MEMORY")
        conn.execute("BEGIN IMMEDIATE")  # fails here, not later, where the file cannot be written
        try:
            row = conn.execute("SELECT version FROM meta").fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is None or row[0] != VERSION:
            for table in ("meta", "attempts", "tags", "choices"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES (1, ?, 0, 0, 0, '', 0)", (VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def open_index(run_dir: Path) -> tuple[sqlite3.Connection, Path]:
    """The run's index, opened (created if need be): in the run directory, else in the fallback place.
    A file SQLite cannot read as a database is removed and made again."""
    for path in (run_dir / ".view" / "attempts.sqlite", fallback_path(run_dir)):
        if path.parent.is_symlink() or path.is_symlink():
            continue  # results are data: a link in them must not choose what the viewer writes
        for _ in range(2):
            try:
                return _connect(path), path
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) or not path.is_file():
                    log.debug("attempt index %s not writable (%s)", path, exc)
                    break
                log.warning("attempt index %s is damaged (%s): building it again", path, exc)
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.debug("attempt index %s not writable (%s)", path, exc)
                break
    raise OSError(f"no place to keep the attempt index of {run_dir}")


def read_pin(conn: sqlite3.Connection) -> Pin:
    dev, ino, offset, pin, count = conn.execute("SELECT dev, ino, offset, pin, count FROM meta").fetchone()
    return Pin(dev, ino, offset, pin, count)


def write_pin(conn: sqlite3.Connection, p: Pin) -> None:
    conn.execute(
        "UPDATE meta SET dev = ?, ino = ?, offset = ?, pin = ?, count = ?",
        (p.dev, p.ino, p.offset, p.pin, p.count),
    )


def pin_of(fd: int, offset: int) -> str:
    """A hash of results.jsonl's first bytes and of the bytes just before ``offset``."""
    head = os.pread(fd, min(offset, _WINDOW), 0)
    tail = os.pread(fd, min(offset, _WINDOW), max(0, offset - _WINDOW))
    return hashlib.sha256(head + b"\0" + tail).hexdigest()


def still_valid(p: Pin, st: os.stat_result, fd: int) -> bool:
    """Whether the index read from ``p`` describes the file open as ``fd`` (stat ``st``): the same
    file, at least as long, with the same bytes where the pin looked."""
    if p.offset == 0:
        return True
    return (
        (p.dev, p.ino) == (st.st_dev, st.st_ino) and st.st_size >= p.offset and pin_of(fd, p.offset) == p.pin
    )


def clear(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM attempts")
    conn.execute("DELETE FROM tags")
    conn.execute("DELETE FROM choices")
    write_pin(conn, Pin(0, 0, 0, "", 0))
