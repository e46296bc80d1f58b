"""Full-text search over a run's transcripts: each events file streamed line by line, so memory stays
bounded by one line and the hits kept, whatever the size of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import EVENTS

MAX_HITS = 200
_SNIPPET = 80


def events_path(run_dir: Path, events_file: str | None) -> Path | None:
    """A file of an attempt named by its record (its transcript, ``events_file``; its workspace diff,
    ``diff_file``), only if it lies inside the run's events/ directory (a record's paths are data, not
    paths to trust)."""
    if not events_file:
        return None
    events = (run_dir / EVENTS).resolve()
    path = (run_dir / events_file).resolve()
    if not path.is_relative_to(events) or not path.is_file():
        return None
    return path


def _needles(query: str) -> tuple[bytes, ...]:
    """The query as it appears in a JSON line: raw, JSON-escaped (quotes, backslashes, newlines), and
    escaped twice (inside a message text that is JSON itself, as tool calls are)."""
    raw = query.lower().encode()
    escaped = orjson.dumps(query.lower())[1:-1]
    twice = orjson.dumps(escaped.decode())[1:-1]
    return tuple(dict.fromkeys((raw, escaped, twice)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        nested = None
        if value.startswith("{") and value.endswith("}"):
            # A message's text is often JSON itself (tool calls): its values are what a reader sees.
            try:
                nested = orjson.loads(value)
            except orjson.JSONDecodeError:
                nested = None
        if isinstance(nested, dict):
            yield from _strings(nested)
        else:
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def snippet(line: bytes, query: str) -> str | None:
    """The text around the first match of ``query`` in the strings of one JSON line, or None when the
    match was only in the JSON syntax (a key name)."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    q = query.lower()
    for text in _strings(row):
        at = text.lower().find(q)
        if at >= 0:
            lo = max(0, at - _SNIPPET)
            hi = min(len(text), at + len(q) + _SNIPPET)
            return ("…" if lo else "") + text[lo:hi] + ("…" if hi < len(text) else "")
    return None


def search_file(path: Path, query: str, limit: int) -> Iterator[dict[str, Any]]:
    """Hits in one transcript: line number (0-based, of the file), offset and a snippet."""
    needles = _needles(query)
    found = 0
    offset = 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh):
            start = offset
            offset += len(line)
            lowered = line.lower()
            if not any(n in lowered for n in needles):
                continue
            text = snippet(line, query)
            if text is None:
                continue
            yield {"line": number, "offset": start, "snippet": text}
            found += 1
            if found >= limit:
                return
