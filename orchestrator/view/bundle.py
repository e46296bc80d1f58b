"""``orchestrate view --bundle OUT RUN_DIR...``: runs as one static directory that opens from ``file://``.

A browser does not fetch JSON from ``file://``, so the data are scripts. ``data/runs.js`` sets
``window.BUNDLE`` (the runs page's rows and the runs' names); every other file is loaded when a page
needs it and hands its data to ``window.bundleData(key, data)``: run ``k``'s figures and attempts table
(``data/<k>/run.js``), each attempt's page (``data/<k>/attempt-<n>.js``), its search index
(``data/<k>/search.js``), and the comparison of each ordered pair of runs (``data/compare-<i>-<j>.js``:
the rows of ``orchestrate compare``). The pages are the viewer's own (``static/app.js`` answers its
requests from these instead of the server). Only what the viewer serves is copied: the redacted result
files' contents.

Search has no server to stream the transcripts, so it reads a prebuilt index: the text of every
conversation item the bundle holds (what its attempt pages show), with where the item is, capped at
:data:`MAX_SEARCH_CHARS` a run (beyond the cap, a search says its answer may be incomplete).
"""

from __future__ import annotations

from importlib import resources
from itertools import permutations
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.compare import compare_sorted
from orchestrator.results.report import pass_rate_intervals
from orchestrator.view.app import Viewer, attempt_detail
from orchestrator.view.attempts import AttemptIndex, as_json
from orchestrator.view.runs import Sources, run_info
from orchestrator.view.search import events_path
from orchestrator.view.transcript import page

MAX_ITEMS = 20_000
"""Transcript items copied per attempt (the server pages through any number)."""
MAX_SEARCH_CHARS = 16_000_000
"""Text in a run's search index: a bundle stays a size one can send, and a search in it a fraction of a
second, whatever the transcripts hold."""
MAX_RUNS = 8
"""Runs in one bundle: each ordered pair is compared ahead (8 runs: 56 comparisons)."""
COMPARE_LIMIT = 1000
"""Changed pairs a bundle's comparison lists (the page says how many there are in all)."""


class BundleError(ValueError):
    """Runs that cannot share one bundle."""


def _script(data: Any, key: str | None = None) -> bytes:
    # "</" never appears inside a JSON string here: a transcript line cannot end the script element.
    payload = orjson.dumps(data).replace(b"</", b"<\\/")
    if key is None:
        return b"window.BUNDLE = " + payload + b";\n"
    return b"window.bundleData(" + orjson.dumps(key) + b", " + payload + b");\n"


def _transcript(viewer: Viewer, run_dir: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    path = events_path(run_dir, record.get("events_file"))
    if path is None:
        return []
    index = viewer.transcripts.get(path)
    items: list[dict[str, Any]] = []
    at: int | None = 0
    while at is not None and len(items) < MAX_ITEMS:
        chunk, at = page(index, at, min(500, MAX_ITEMS - len(items)))
        items += chunk
    return items


def searchable(item: dict[str, Any]) -> str:
    """What a person reads of one conversation item: its title, its text, its parameters' values."""
    parts = [str(item.get("title") or ""), str(item.get("text") or "")]
    for value in (item.get("params") or {}).values():
        parts.append(value if isinstance(value, str) else orjson.dumps(value).decode())
    return "\n".join(p for p in parts if p)


class _SearchIndex:
    """``[attempt, offset, text]`` of each item, until :data:`MAX_SEARCH_CHARS` is spent."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, str]] = []
        self.chars = 0
        self.truncated = False

    def add(self, attempt: int, items: list[dict[str, Any]]) -> None:
        for item in items:
            text = searchable(item)
            if not text:
                continue
            if self.chars + len(text) > MAX_SEARCH_CHARS:
                self.truncated = True
                return
            self.chars += len(text)
            self.items.append((attempt, int(item.get("at") or 0), text))

    def data(self) -> dict[str, Any]:
        return {"items": self.items, "truncated": self.truncated}


def _write_run(k: int, run_dir: Path, out: Path) -> tuple[dict[str, Any], AttemptIndex]:
    """Run ``k``'s files under ``out/data/<k>/``; returns its runs-page row and its attempt index."""
    viewer = Viewer(Sources((), (run_dir,)))
    index = viewer.index(run_dir.name)
    data = out / "data" / str(k)
    data.mkdir(parents=True)
    info = run_info(run_dir)
    summary = index.summary()
    run = {
        "info": info,
        "summary": summary,
        "choices": index.choices(),
        "count": index.count,
        "intervals": pass_rate_intervals(summary),
    }
    rows = [as_json(e) for e in index.entries()]
    (data / "run.js").write_bytes(_script({"run": run, "rows": rows}, f"run/{k}"))
    search = _SearchIndex()
    for entry in index.entries():
        record = index.record(entry.index)
        detail = attempt_detail(viewer, run_dir, entry.index, record)
        detail["items"] = _transcript(viewer, run_dir, record)
        search.add(entry.index, detail["items"])
        (data / f"attempt-{entry.index}.js").write_bytes(_script(detail, f"attempt/{k}/{entry.index}"))
    (data / "search.js").write_bytes(_script(search.data(), f"search/{k}"))
    return info, index


def write_bundle(run_dirs: list[Path], out: Path) -> Path:
    """Write the bundle of ``run_dirs`` into ``out`` (created; must not exist); returns its index.html.
    :class:`BundleError` if two runs share a name (URLs name runs by it) or there are too many."""
    dirs = [d.resolve() for d in run_dirs]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise BundleError(f"two runs are named alike ({', '.join(names)}): a bundle names runs by directory")
    if not 1 <= len(dirs) <= MAX_RUNS:
        raise BundleError(f"a bundle holds 1 to {MAX_RUNS} runs, not {len(dirs)}")
    out.mkdir(parents=True)
    static = resources.files("orchestrator.view").joinpath("static")
    (out / "static").mkdir()
    for asset in ("app.js", "style.css"):
        (out / "static" / asset).write_bytes(static.joinpath(asset).read_bytes())
    written = [_write_run(k, d, out) for k, d in enumerate(dirs)]
    for i, j in permutations(range(len(dirs)), 2):
        finals = (written[i][1].finals(), written[j][1].finals())
        compare = {"a": written[i][0], "b": written[j][0], **compare_sorted(*finals, limit=COMPARE_LIMIT)}
        (out / "data" / f"compare-{i}-{j}.js").write_bytes(_script(compare, f"compare/{i}/{j}"))
    runs = [info for info, _ in written]
    (out / "data" / "runs.js").write_bytes(_script({"runs": runs, "names": names}))
    shell = static.joinpath("index.html").read_text()
    shell = shell.replace('href="/static/', 'href="static/').replace(
        '<script src="/static/app.js" defer></script>',
        '<script src="data/runs.js"></script>\n<script src="static/app.js" defer></script>',
    )
    (out / "index.html").write_text(shell)
    return out / "index.html"
