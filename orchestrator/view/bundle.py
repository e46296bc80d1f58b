"""``orchestrate view --bundle OUT RUN_DIR``: one run as a static directory that opens from ``file://``.

A browser does not fetch JSON from ``file://``, so the data are scripts that set a variable: the run
and its attempts table in ``data/run.js``, each attempt's page in ``data/attempt-<n>.js``, loaded when
the page is opened. The pages are the viewer's own (``static/app.js`` answers its requests from these
instead of the server). Only what the viewer serves is copied: the redacted result files' contents.
Search and compare need the server; a transcript is copied up to :data:`MAX_ITEMS` items.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.report import pass_rate_intervals
from orchestrator.view.app import Viewer, attempt_detail
from orchestrator.view.attempts import as_json
from orchestrator.view.runs import Sources, run_info
from orchestrator.view.search import events_path
from orchestrator.view.transcript import page

MAX_ITEMS = 20_000
"""Transcript items copied per attempt (the server pages through any number)."""


def _script(variable: str, data: Any) -> bytes:
    # "</" never appears inside a JSON string here: a transcript line cannot end the script element.
    payload = orjson.dumps(data).replace(b"</", b"<\\/")
    return b"window." + variable.encode() + b" = " + payload + b";\n"


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


def write_bundle(run_dir: Path, out: Path) -> Path:
    """Write the bundle of ``run_dir`` into ``out`` (created; must not exist); returns its index.html."""
    run_dir = run_dir.resolve()
    viewer = Viewer(Sources((), (run_dir,)))
    name = run_dir.name
    index = viewer.index(name)
    out.mkdir(parents=True)
    (out / "data").mkdir()
    static = resources.files("orchestrator.view").joinpath("static")
    (out / "static").mkdir()
    for asset in ("app.js", "style.css"):
        (out / "static" / asset).write_bytes(static.joinpath(asset).read_bytes())
    info = run_info(run_dir)
    summary = index.summary()
    run = {
        "info": info,
        "summary": summary,
        "choices": index.choices(),
        "count": len(index.entries),
        "intervals": pass_rate_intervals(summary),
    }
    rows = [as_json(e) for e in index.entries]
    (out / "data" / "run.js").write_bytes(
        _script("BUNDLE", {"name": name, "runs": [info], "run": run, "rows": rows})
    )
    for entry in index.entries:
        record = index.record(entry.index)
        detail = attempt_detail(viewer, run_dir, entry.index, record)
        detail["items"] = _transcript(viewer, run_dir, record)
        (out / "data" / f"attempt-{entry.index}.js").write_bytes(_script("BUNDLE_ATTEMPT", detail))
    shell = static.joinpath("index.html").read_text()
    shell = shell.replace('href="/static/', 'href="static/').replace(
        '<script src="/static/app.js" defer></script>',
        '<script src="data/run.js"></script>\n<script src="static/app.js" defer></script>',
    )
    (out / "index.html").write_text(shell)
    return out / "index.html"
