"""The transcript index the run's writer saves beside each transcript: written with it, equal to the index
built from the file, and never used once the transcript no longer matches it (stale, torn, other format)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.results.store import ResultsWriter
from orchestrator.results.transcript_index import (
    SAVE_FROM,
    TranscriptIndex,
    build_index,
    index_path,
    load_index,
    save_index,
)
from orchestrator.suite.plan import AttemptKey


def _message(task: str, ts: int, action: str, text: str) -> dict[str, Any]:
    m = {"ts": ts, "type": "say", "say": "text", "text": text}
    return {"eventName": "message", "payload": [{"taskId": task, "action": action, "message": m}]}


def _rows() -> list[dict[str, Any]]:
    """A root task and a spawned subtask, messages updated several times, token usage: over 1 MiB, so
    the writer saves its index (:data:`SAVE_FROM`)."""
    rows: list[dict[str, Any]] = [
        {"t": 0.0, "dir": "in", "event": {"eventName": "taskCreated", "payload": ["r"]}}
    ]
    rows.append({"t": 0.1, "dir": "in", "event": _message("r", 1, "created", "the prompt")})
    for ts in range(2, 40):
        for k in range(1, 4):
            rows.append(
                {"t": ts + k / 10, "dir": "in", "event": _message("r", ts, "updated", "word " * (1000 * k))}
            )
        usage = {"totalCost": ts / 100, "totalTokensIn": ts * 10, "totalTokensOut": ts}
        rows.append(
            {
                "t": ts + 0.5,
                "dir": "in",
                "event": {"eventName": "taskTokenUsageUpdated", "payload": ["r", usage]},
            }
        )
    rows.append({"t": 50.0, "dir": "in", "event": {"eventName": "taskSpawned", "payload": ["r", "c"]}})
    rows.append({"t": 50.1, "dir": "in", "event": {"eventName": "taskCreated", "payload": ["c"]}})
    rows.append({"t": 50.2, "dir": "in", "event": _message("c", 100, "created", "the subtask's prompt")})
    rows.append({"t": 50.3, "dir": "in", "event": _message("c", 101, "updated", "sub")})
    rows.append({"t": 50.4, "dir": "in", "event": _message("c", 101, "updated", "sub done")})
    return rows


def _same(a: TranscriptIndex, b: TranscriptIndex) -> None:
    assert (a.path, a.size, a.mtime_ns) == (b.path, b.size, b.mtime_ns)
    assert a.last == b.last
    assert a.prompts == b.prompts
    assert a.parents == b.parents
    assert a.usage == b.usage


@pytest.fixture
def transcript(tmp_path: Path) -> Iterator[Path]:
    writer = ResultsWriter.create(tmp_path / "results" / "run-1", {"run_id": "run-1"})
    try:
        yield writer.run_dir / writer.write_transcript(AttemptKey("c1", "m1", 0, "h" * 16), 1, _rows())
    finally:
        writer.close()


def _load(path: Path) -> TranscriptIndex | None:
    st = path.stat()
    return load_index(path, st.st_size, st.st_mtime_ns)


def test_the_writer_saves_an_index_equal_to_the_one_built_from_the_file(transcript: Path) -> None:
    assert index_path(transcript) == transcript.with_suffix(".idx")
    assert transcript.stat().st_size >= SAVE_FROM
    saved = _load(transcript)
    assert saved is not None
    built = build_index(transcript)
    _same(saved, built)
    # Not trivially equal: it holds updated messages, both prompts, the subtask and the usage chart.
    assert len(built.last) == 39 and len(built.prompts) == 2
    assert built.parents == {"c": "r"} and len(built.usage) == 38


def test_a_small_transcript_has_no_saved_index(tmp_path: Path) -> None:
    """Below :data:`SAVE_FROM` the viewer's own index costs it less than saving one costs the writer."""
    writer = ResultsWriter.create(tmp_path / "results" / "run-1", {"run_id": "run-1"})
    try:
        rows = _rows()[:40]
        path = writer.run_dir / writer.write_transcript(AttemptKey("c1", "m1", 0, "h" * 16), 1, rows)
    finally:
        writer.close()
    assert 0 < path.stat().st_size < SAVE_FROM
    assert not index_path(path).exists()


def test_an_index_of_a_transcript_that_grew_is_ignored(transcript: Path) -> None:
    with transcript.open("ab") as fh:
        fh.write(
            orjson.dumps({"t": 60.0, "dir": "in", "event": _message("r", 2, "updated", "later")}) + b"\n"
        )
    assert _load(transcript) is None


def test_an_index_of_a_transcript_rewritten_in_place_is_ignored(transcript: Path) -> None:
    """Same size, same mtime (restored), one byte changed near its end: the hash of its ends says so."""
    st = transcript.stat()
    data = bytearray(transcript.read_bytes())
    at = data.rindex(b"sub done")
    data[at : at + 8] = b"SUB DONE"
    transcript.write_bytes(bytes(data))
    os.utime(transcript, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (transcript.stat().st_size, transcript.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert _load(transcript) is None


def test_an_index_of_a_touched_transcript_is_ignored(transcript: Path) -> None:
    st = transcript.stat()
    os.utime(transcript, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _load(transcript) is None


@pytest.mark.parametrize("keep", [0, 1, 100, -1])
def test_a_torn_index_is_ignored(transcript: Path, keep: int) -> None:
    saved = index_path(transcript)
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[: len(data) // 2])
    assert _load(transcript) is None


def test_an_index_of_another_format_is_ignored(transcript: Path) -> None:
    saved = index_path(transcript)
    obj = orjson.loads(saved.read_bytes())
    obj["v"] = 999
    saved.write_bytes(orjson.dumps(obj))
    assert _load(transcript) is None


def test_save_index_on_its_own_matches_the_build(tmp_path: Path) -> None:
    """What benchmarks and tests use on transcripts written without a ResultsWriter."""
    path = tmp_path / "t.jsonl"
    data = b"".join(orjson.dumps(r) + b"\n" for r in _rows())
    path.write_bytes(data)
    save_index(path, data)
    saved = _load(path)
    assert saved is not None
    _same(saved, build_index(path))
