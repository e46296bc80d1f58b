"""Running attempts' transcripts as they grow: ``results/<run>/live/<case>__<model>__<repeat>__<attempt>.jsonl``.

A transcript (``events/*.jsonl``) is written whole when its attempt ends; until then, the process that
runs the attempt (a local worker, or a Ray run's event hub for its nodes) appends the same rows to a live
file, redacted as the transcript will be, a few times a second (see
:mod:`orchestrator.run.live_transcript`). ``orchestrate view`` tails these files by offset. Layout of one
live file: a header line (:func:`header`: the attempt it is, when it started, where it runs), then
transcript rows, each line written whole by one ``write`` to a file opened ``O_APPEND``.

A live file never outlives its attempt's record: :class:`~orchestrator.results.store.ResultsWriter`
removes it once the record is written (whatever the record says, a worker's death included), removes the
whole directory when it closes, and a resume removes what a killed run left, as the next run in the same
results directory does for every run whose owner is gone (:func:`sweep`). A reader trusts a live file only
while the run's lock is held and its attempt has no record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.redaction import MIN_SECRET_LEN, SECRET_KEY, Redactor
from orchestrator.results.run_lock import RunLock

log = logging.getLogger(__name__)

LIVE = "live"
"""The directory of a run's live transcripts."""
HEADER = "live_attempt"
"""The key that marks a live file's header line."""


def live_dir(run_dir: Path) -> Path:
    return Path(run_dir) / LIVE


def valid_name(name: str) -> bool:
    """Whether ``name`` can be a live file's name (an attempt's transcript name: one plain file name)."""
    return (
        name.endswith(".jsonl")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def header(
    case_id: str,
    model_id: str,
    repeat: int,
    attempt: int,
    *,
    config_hash: str,
    started_at: str,
    slot: str,
    node: str | None,
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    """A live file's first line: which attempt it is (the record's key fields) and where it runs."""
    return {
        HEADER: 1,
        "case_id": case_id,
        "model_id": model_id,
        "repeat": repeat,
        "attempt": attempt,
        "config_hash": config_hash,
        "started_at": started_at,
        "slot": slot,
        "node": node,
        "tags": list(tags),
    }


_KEY_END = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*":"')
"""The rest of a JSON key up to its closing quote, followed by a string value (compact JSON)."""
_WORDS = ("key", "token", "secret", "password")
_WORD = re.compile("|".join(_WORDS))
assert SECRET_KEY.pattern == _WORD.pattern, "the words of the redactor's secret-looking keys"
_MAX_LOOKS = 8


def _secret_keyed(text: str) -> bool:
    """Whether a row's JSON may have a secret-looking key with a string value (the redactor replaces
    those whatever they hold): a word of :data:`SECRET_KEY` that ends a key so. Looked for in the
    case-folded text (every letter the redactor's case-insensitive match takes for one of the words
    folds to it; quotes and backslashes stay), with plain substring searches first, as the regex
    module's case-insensitive alternation costs ~20x. Anything unsure says yes: the slow path."""
    folded = text.casefold()
    if not any(word in folded for word in _WORDS):
        return False
    for n, word in enumerate(_WORD.finditer(folded)):
        if n >= _MAX_LOOKS or _KEY_END.match(folded, word.end()):
            return True
    return False


def _searchable(redactor: Redactor) -> bool:
    """Whether every secret of ``redactor`` appears in JSON text as in the value (no escaped character)
    and is searched for inside text (not only matched whole): then the JSON of a row shows whether it
    holds one."""
    return all(
        len(v) >= MIN_SECRET_LEN and '"' not in v and "\\" not in v and not any(ord(c) < 0x20 for c in v)
        for v in redactor.values
    )


def encode(rows: Iterable[Mapping[str, Any]], redactor: Redactor) -> bytes:
    """Rows as JSON lines, redacted: ``orjson.dumps(redactor(row))`` each. Most rows hold no secret and
    no secret-looking key: their JSON, written once and searched (in C), is already the line; only the
    others are redacted value by value (in Python, ~10x the cost)."""
    fast = _searchable(redactor)
    out = []
    for row in rows:
        if fast:
            data = orjson.dumps(row)
            text = data.decode()
            if not _secret_keyed(text) and redactor.text(text) == text:
                out.append(data + b"\n")
                continue
        out.append(orjson.dumps(redactor(dict(row))) + b"\n")
    return b"".join(out)


def append(path: Path, data: bytes, fd: int | None = None) -> int:
    """Append ``data`` to ``path`` (opened, made if need be, when ``fd`` is None); returns the open fd."""
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        raise
    return fd


def remove(run_dir: Path, name: str) -> None:
    """An attempt's live file is done with (its record is written): gone, if it was there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(live_dir(run_dir) / name)


def clear(run_dir: Path) -> None:
    """Every live file of the run: for a run that starts, resumes or ends."""
    shutil.rmtree(live_dir(run_dir), ignore_errors=True)


def sweep(results_root: Path, *, keep: Path | None = None) -> int:
    """Remove the live files that runs under ``results_root`` left when they were killed (their lock is
    not held); returns how many runs had some. One ``stat`` per run directory."""
    swept = 0
    try:
        entries = list(os.scandir(results_root))
    except OSError:
        return 0
    for entry in entries:
        run_dir = Path(entry.path)
        if run_dir == keep or not entry.is_dir(follow_symlinks=False):
            continue
        if not live_dir(run_dir).is_dir() or RunLock.held(run_dir) is not None:
            continue
        clear(run_dir)
        swept += 1
    if swept:
        log.info("removed the live transcripts of %d run(s) that ended without removing them", swept)
    return swept
