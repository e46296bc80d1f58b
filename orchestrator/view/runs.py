"""Which runs the viewer serves, and what the runs page says of each, from cheap files only.

A run is named in URLs by its directory's name. Every name that comes from a URL is looked up here and
nowhere else: it must be one plain path component naming a run directory directly under one of the
roots the viewer was started with (or one of the run directories it was given), so no URL reaches a
file outside them.

Listing a run reads its manifest.json and summary.json (a few kB each), asks the run lock whether its
owner lives, and estimates the attempts of a run still in progress from the size of results.jsonl: it
never reads a whole results.jsonl (1,000 runs list in a fraction of a second).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.records import MANIFEST, RESULTS, SUMMARY
from orchestrator.results.run_lock import RunLock

log = logging.getLogger(__name__)

_INTERRUPTED_STOPS = frozenset({"interrupted", "killed", "write_error", "bridge_failed", "not_started"})
"""``stop_reason`` values of a run that ended before its plan did (set by ``orchestrate run``)."""


class UnknownRunError(LookupError):
    """A run name from a URL that names no run directory the viewer serves."""


def is_run_dir(path: Path | str) -> bool:
    base = os.fspath(path)
    return os.path.isfile(os.path.join(base, MANIFEST)) or os.path.isfile(os.path.join(base, RESULTS))


@dataclass(frozen=True)
class Sources:
    """What ``orchestrate view`` was given: results directories (each holding run directories) and run
    directories, resolved once."""

    roots: tuple[Path, ...]
    runs: tuple[Path, ...]

    @classmethod
    def from_paths(cls, paths: list[Path]) -> Sources:
        roots: list[Path] = []
        runs: list[Path] = []
        for path in paths:
            resolved = path.resolve()
            (runs if is_run_dir(resolved) else roots).append(resolved)
        return cls(tuple(roots), tuple(runs))

    def run_dirs(self) -> list[Path]:
        """Every run directory, explicit ones first, then each root's in name order."""
        out = list(self.runs)
        for root in self.roots:
            try:
                entries = sorted(os.scandir(root), key=lambda e: e.name)
            except OSError as exc:
                log.warning("%s: cannot list (%s)", root, exc)
                continue
            # Symlinks are not followed: a run must lie in its root, as resolve() demands.
            out.extend(
                Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and is_run_dir(e.path)
            )
        return out

    def resolve(self, name: str) -> Path:
        """The run directory a URL names; :class:`UnknownRunError` for anything else (``..``, a path, a
        directory that is not a run, a symlink leading out of the roots)."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise UnknownRunError(name)
        for run in self.runs:
            if run.name == name:
                return run
        for root in self.roots:
            path = root / name
            candidate = path.resolve()
            if (
                not path.is_symlink()
                and candidate.parent == root
                and candidate.is_dir()
                and is_run_dir(candidate)
            ):
                return candidate
        raise UnknownRunError(name)


def _json_file(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, "rb", buffering=0) as fh:  # one read of the whole file, no buffer in between
            data = orjson.loads(fh.readall())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json as ``orchestrate run`` wrote it at the end of its session (``{}`` if none)."""
    return _json_file(run_dir / SUMMARY)


def summary_choices(summary: dict[str, Any]) -> dict[str, list[str]]:
    """The values the attempts table's filters offer, from a summary (before the index is whole)."""
    totals = summary.get("totals") or {}
    return {
        "status": sorted(totals.get("by_status") or {}),
        "model": sorted(summary.get("by_model") or {}),
        "tag": sorted(summary.get("by_tag") or {}),
    }


def _estimated_lines(path: str) -> int:
    """How many records results.jsonl holds, from its size and its first line's length (records of
    one run are of similar size): a listing must not read every line."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            return 0
        with open(path, "rb") as fh:
            first = fh.readline(65536)
    except OSError:
        return 0
    return max(1, round(size / max(len(first), 1)))


def run_state(owner: str | None, summary: dict[str, Any]) -> str:
    """``running`` while the run lock's owner lives; ``finished`` when the run ended with its plan done;
    ``interrupted`` otherwise (stopped, killed, or its process died before writing summary.json)."""
    if owner is not None:
        return "running"
    if not summary:
        return "interrupted"
    if summary.get("stop_reason") in _INTERRUPTED_STOPS or summary.get("pending"):
        return "interrupted"
    return "finished"


_MANIFEST_FIELDS = ("run_id", "suite_name", "started_at", "ended_at", "attempts_planned")
_SUMMARY_FIELDS = ("stop_reason", "pending")
_TOTALS_FIELDS = ("attempts", "pass_rate", "cost_usd", "cost_usd_all_attempts")
_memo: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def _fields(path: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The named top-level fields of a JSON file (and its ``totals``), parsed again only when the file
    changed: listing 1,000 runs a second time reads no file. Keeps a few fields a run, not the files."""
    try:
        st = os.stat(path)
    except OSError:
        _memo.pop(path, None)
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _memo.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    data = _json_file(path)
    fields = {k: data[k] for k in names if k in data}
    totals = data.get("totals")
    if isinstance(totals, dict):
        fields["totals"] = {k: totals.get(k) for k in _TOTALS_FIELDS}
    _memo[path] = (stamp, fields)
    return fields


def run_info(run_dir: Path) -> dict[str, Any]:
    """One row of the runs page: reads manifest.json and summary.json (only when they changed since
    the last listing), probes the run lock, and of a run without totals the first line of results.jsonl.
    Paths are joined as strings: with 1,000 runs, pathlib's parsing cost more than the reads."""
    base = os.fspath(run_dir)
    manifest = _fields(os.path.join(base, MANIFEST), _MANIFEST_FIELDS)
    owner = RunLock.held(run_dir)
    # A running run's summary.json (if any) is the previous session's: its figures are stale.
    summary = _fields(os.path.join(base, SUMMARY), _SUMMARY_FIELDS) if owner is None else {}
    totals = summary.get("totals") or {}
    estimated = "totals" not in summary
    done = _estimated_lines(os.path.join(base, RESULTS)) if estimated else totals.get("attempts", 0)
    return {
        "name": run_dir.name,
        "run_id": manifest.get("run_id") or run_dir.name,
        "suite": manifest.get("suite_name"),
        "started_at": manifest.get("started_at"),
        "ended_at": manifest.get("ended_at"),
        "state": run_state(owner, summary),
        "owner": owner,
        "stop_reason": summary.get("stop_reason"),
        "attempts_done": done,
        "attempts_estimated": estimated,
        "attempts_planned": manifest.get("attempts_planned"),
        "pass_rate": totals.get("pass_rate"),
        "cost_usd": totals.get("cost_usd_all_attempts", totals.get("cost_usd")),
    }


def list_runs(sources: Sources, first: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The runs page's rows, newest start first, and how many runs there are. With ``first``, only
    that many runs are read, the last by directory name (run ids start with their start time unless
    named otherwise): the page shows them at once and then asks for the rest."""
    dirs = sources.run_dirs()
    picked = dirs if first is None else sorted(dirs, key=lambda d: d.name, reverse=True)[:first]
    rows = [run_info(d) for d in picked]
    # Ties by name, as the first rows were picked: the whole list keeps the first rows' order.
    rows.sort(key=lambda r: (r["started_at"] or "", r["name"]), reverse=True)
    return rows, len(dirs)
