"""The viewer's ASGI app: four pages (one HTML shell, our own JS renders each) and the JSON they read.

Every handler that touches files is a plain function (Starlette runs it in a worker thread); every
run or attempt named in a URL goes through :meth:`Sources.resolve` and :func:`events_path`, so nothing
outside the served run directories is ever read. Only the run's own result files are served, and those
were redacted when they were written; the hosts' raw logs are not served.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.results.compare import compare_sorted
from orchestrator.results.report import pass_rate_intervals, read_manifest
from orchestrator.view.attempts import AttemptIndex, Filters, as_json
from orchestrator.view.auth import AccessMiddleware
from orchestrator.view.live import LiveAttempts, Tail, live_path, read_header
from orchestrator.view.runs import (
    Sources,
    UnknownRunError,
    list_runs,
    read_summary,
    run_info,
    summary_choices,
)
from orchestrator.view.search import MAX_HITS, events_path, search_file
from orchestrator.view.transcript import TranscriptCache, page

log = logging.getLogger(__name__)

PAGE_LIMIT = 500
MAX_DIFF = (1 << 20) + 4096
"""The most of a workspace diff an attempt page shows: the writer's cap and its "diff truncated" line."""
_STEP = 2000
"""Records the background indexer reads at a time."""
LIVE_POLL_S = 0.25
"""How often the live stream looks at a run's results.jsonl: well within the 1 s a new attempt may take
to appear."""
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class NotFound(Exception):
    pass


class Viewer:
    """The state behind the routes: what is served, and the indexes built so far (a few, reused)."""

    def __init__(self, sources: Sources, *, max_runs: int = 6) -> None:
        # An index is a file on disk; open, it holds SQLite's page cache (a few MB at most): few are
        # kept open, the least recent closed when the last request using it is done.
        self.sources = sources
        self._indexes: OrderedDict[Path, AttemptIndex] = OrderedDict()
        self._max_runs = max_runs
        self._lock = threading.Lock()
        self._building: set[Path] = set()
        self.transcripts = TranscriptCache()
        self.live = LiveAttempts()

    def running(self, name: str) -> list[dict[str, Any]]:
        """The run's attempts running now (none unless the run is)."""
        run_dir = self.run_dir(name)
        index = self.index(name)
        return self.live.running(run_dir, index, run_running=run_info(run_dir)["state"] == "running")

    def run_dir(self, name: str) -> Path:
        try:
            return self.sources.resolve(name)
        except UnknownRunError:
            raise NotFound(f"no run {name!r}") from None

    def index(self, name: str, until: int | None = None, *, background: bool = True) -> AttemptIndex:
        """The run's attempt index, brought up to date with results.jsonl; with ``until``, only as far
        as ``until`` entries, the rest read by a background thread (a first page waits for no more)
        unless ``background`` is False (an attempt page needs its own record only)."""
        run_dir = self.run_dir(name)
        with self._lock:
            index = self._indexes.get(run_dir)
            if index is None:
                index = self._indexes[run_dir] = AttemptIndex(run_dir)
            self._indexes.move_to_end(run_dir)
            while len(self._indexes) > self._max_runs:
                self._indexes.popitem(last=False)
        if until is None or not index.opened or index.count < until:
            index.refresh(until)
        if until is not None and background and not index.complete:
            with self._lock:
                if run_dir not in self._building:
                    self._building.add(run_dir)
                    threading.Thread(target=self._complete, args=(run_dir, index), daemon=True).start()
        return index

    def _complete(self, run_dir: Path, index: AttemptIndex) -> None:
        try:
            # In steps, so that a page's request waits for one step at most, not for the whole file.
            while index.refresh(until=index.count + _STEP):
                pass
        finally:
            with self._lock:
                self._building.discard(run_dir)


def _int(request: Request, name: str, default: int, low: int = 0, high: int = 1 << 62) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        value = default
    return min(max(value, low), high)


def _filters(request: Request) -> Filters:
    q = request.query_params
    passed = q.get("passed")
    return Filters(
        status=q.get("status") or None,
        model=q.get("model") or None,
        tag=q.get("tag") or None,
        passed=None if passed in (None, "") else passed == "true",
        final_only=q.get("final") == "true",
    )


def _attempt(viewer: Viewer, request: Request) -> tuple[Path, AttemptIndex, int, dict[str, Any]]:
    name = request.path_params["run"]
    number = int(request.path_params["attempt"])
    # Read as far as this attempt's line, no further: a 100,000-attempt run's attempt opens at once.
    index = viewer.index(name, until=number + 1, background=False)
    try:
        record = index.record(number)
    except IndexError:
        raise NotFound(f"no attempt {number} in run {name!r}") from None
    return viewer.run_dir(name), index, number, record


def attempt_detail(viewer: Viewer, run_dir: Path, number: int, record: dict[str, Any]) -> dict[str, Any]:
    """The attempt page's head: the record, the case's prompt and check command, the transcript's size
    and token usage over time."""
    path = events_path(run_dir, record.get("events_file"))
    transcript = None
    if path is not None:
        t = viewer.transcripts.get(path)
        transcript = {"usage": t.usage, "bytes": t.size}
    diff = _diff(events_path(run_dir, record.get("diff_file")))
    cases = (read_manifest(run_dir).get("suite") or {}).get("cases") or []
    case = next((c for c in cases if isinstance(c, dict) and c.get("id") == record.get("case_id")), {})
    check = {"command": case.get("check"), **(record.get("check") or {})}
    return {
        "index": number,
        "record": record,
        "prompt": case.get("prompt"),
        "check": check,
        "transcript": transcript,
        "diff": diff,
    }


def _diff(path: Path | None) -> dict[str, Any] | None:
    """What the agent changed (a record's ``diff_file``), read up to :data:`MAX_DIFF`: the writer caps it
    at 1 MiB, but the file is data, and a page must stay small whatever it holds."""
    if path is None:
        return None
    with path.open("rb") as fh:
        data = fh.read(MAX_DIFF + 1)
    return {"text": data[:MAX_DIFF].decode("utf-8", "replace"), "cut": len(data) > MAX_DIFF}


def build_app(sources: Sources, *, token: str | None = None, loopback_only: bool = True) -> Starlette:
    """The app serving ``sources``. ``token``: required on every request when set;
    ``loopback_only``: refuse requests whose Host header is not a loopback name."""
    viewer = Viewer(sources)
    shell = resources.files("orchestrator.view").joinpath("static/index.html").read_bytes()

    def html(request: Request) -> Response:
        return Response(shell, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)

    def api_runs(request: Request) -> JSON:
        first = request.query_params.get("first")
        rows, total = list_runs(viewer.sources, _int(request, "first", 0, 1) if first else None)
        return JSON({"runs": rows, "total": total})

    def api_run(request: Request) -> JSON:
        name = request.path_params["run"]
        run_dir = viewer.run_dir(name)
        info = run_info(run_dir)
        written = read_summary(run_dir) if info["state"] != "running" else {}
        if written.get("totals"):
            # An ended run's summary.json has the figures already (the same definitions): the page
            # needs no read of results.jsonl, whose index is built in the background for the filters.
            index = viewer.index(name, until=0)
            summary = written
            choices = index.choices() if index.complete else summary_choices(written)
        else:
            index = viewer.index(name)
            summary = index.summary()
            choices = index.choices()
        return JSON(
            {
                "info": info,
                "summary": summary,
                "choices": choices,
                "count": index.estimated_total(),
                # The report's 95% Wilson intervals, of the graded attempts (infrastructure errors out).
                "intervals": pass_rate_intervals(summary),
            }
        )

    def api_attempts(request: Request) -> JSON:
        start = _int(request, "start", 0)
        limit = _int(request, "limit", 100, 1, PAGE_LIMIT)
        filters = _filters(request)
        unfiltered = filters == Filters()
        index = viewer.index(request.path_params["run"], until=start + limit if unfiltered else None)
        total, entries = index.page(filters, start, limit)
        if unfiltered:
            total = index.estimated_total()
        rows = [as_json(e) for e in entries]
        return JSON({"total": total, "estimated": not index.complete, "start": start, "rows": rows})

    def api_attempt(request: Request) -> JSON:
        run_dir, _, number, record = _attempt(viewer, request)
        return JSON(attempt_detail(viewer, run_dir, number, record))

    def api_transcript(request: Request) -> JSON:
        run_dir, _, _, record = _attempt(viewer, request)
        path = events_path(run_dir, record.get("events_file"))
        if path is None:
            return JSON({"items": [], "next": None, "bytes": 0})
        t = viewer.transcripts.get(path)
        items, after = page(t, _int(request, "at", 0), _int(request, "limit", 200, 1, PAGE_LIMIT))
        return JSON({"items": items, "next": after, "bytes": t.size})

    def api_search(request: Request) -> JSON:
        name = request.path_params["run"]
        query = request.query_params.get("q", "")
        if len(query) < 2:
            return JSON({"hits": [], "truncated": False, "query": query})
        run_dir = viewer.run_dir(name)
        index = viewer.index(name)
        limit = _int(request, "limit", 100, 1, MAX_HITS)
        hits: list[dict[str, Any]] = []
        for entry in index.entries(events_only=True):
            path = events_path(run_dir, entry.events_file)
            if path is None:
                continue
            for hit in search_file(path, query, limit - len(hits)):
                r = entry.row
                hits.append({"index": entry.index, "case_id": r.case_id, "model_id": r.model_id, **hit})
                hits[-1].update(repeat=r.repeat, attempt=r.attempt)
            if len(hits) >= limit:
                break
        return JSON({"hits": hits, "truncated": len(hits) >= limit, "query": query})

    def api_compare(request: Request) -> JSON:
        a = request.query_params.get("a", "")
        b = request.query_params.get("b", "")
        finals = [viewer.index(n).finals() for n in (a, b)]
        start = _int(request, "start", 0)
        compared = compare_sorted(
            *finals, changes_from=start, limit=_int(request, "limit", 100, 1, PAGE_LIMIT)
        )
        return JSON({"a": run_info(viewer.run_dir(a)), "b": run_info(viewer.run_dir(b)), **compared})

    async def api_live(request: Request) -> StreamingResponse:
        name = request.path_params["run"]
        index = await run_in_threadpool(viewer.index, name)
        since = _int(request, "from", index.count)
        return StreamingResponse(
            _live(request, viewer, name, since),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", **_SECURITY_HEADERS},
        )

    def api_running(request: Request) -> JSON:
        return JSON({"rows": viewer.running(request.path_params["run"])})

    def running_attempt(request: Request) -> tuple[Path, int | None, dict[str, Any] | None]:
        """The live file a URL names, and its record's index once it has one; NotFound unless it is
        a running attempt of a running run, or a finished one."""
        name = request.path_params["run"]
        run_dir = viewer.run_dir(name)
        attempt = request.path_params["name"]
        path = live_path(run_dir, attempt)
        if path is None:
            raise NotFound(f"no attempt {attempt!r} in run {name!r}")
        index = viewer.index(name).recorded(attempt)
        head = read_header(path)
        if index is None and (head is None or run_info(run_dir)["state"] != "running"):
            raise NotFound(f"attempt {attempt!r} of run {name!r} is not running")
        return path, index, head

    def api_running_attempt(request: Request) -> JSON:
        _, index, head = running_attempt(request)
        return JSON({"name": request.path_params["name"], "index": index, "header": head})

    async def api_running_stream(request: Request) -> StreamingResponse:
        path, _, _ = await run_in_threadpool(running_attempt, request)
        name = request.path_params["run"]
        return StreamingResponse(
            _follow(request, viewer, name, path),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", **_SECURITY_HEADERS},
        )

    routes = [
        Route("/", html),
        Route("/run/{run}", html),
        Route("/run/{run}/attempt/{attempt:int}", html),
        Route("/run/{run}/running/{name}", html),
        Route("/compare", html),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run}", api_run),
        Route("/api/runs/{run}/attempts", api_attempts),
        Route("/api/runs/{run}/attempts/{attempt:int}", api_attempt),
        Route("/api/runs/{run}/attempts/{attempt:int}/transcript", api_transcript),
        Route("/api/runs/{run}/search", api_search),
        Route("/api/runs/{run}/live", api_live),
        Route("/api/runs/{run}/running", api_running),
        Route("/api/runs/{run}/running/{name}", api_running_attempt),
        Route("/api/runs/{run}/running/{name}/stream", api_running_stream),
        Route("/api/compare", api_compare),
        Mount("/static", StaticFiles(packages=[("orchestrator.view", "static")])),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSON({"error": str(exc)}, status_code=404)

    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessMiddleware, token=token, loopback_only=loopback_only)],
        exception_handlers={NotFound: not_found},
    )


async def _live(request: Request, viewer: Viewer, name: str, since: int) -> AsyncIterator[bytes]:
    """Server-sent events: ``attempts`` with each batch of records appended after ``since`` (and the
    run's figures), ``running`` when the attempts running change, ``state`` when the run's state
    changes. Tails results.jsonl from its last offset."""
    sent = since
    state = None
    running: list[str] | None = None
    yield b"retry: 1000\n\n"
    while not await request.is_disconnected():
        index = await run_in_threadpool(viewer.index, name)
        entries = list(islice(index.entries(sent), PAGE_LIMIT))  # a batch an event, whatever arrived
        if entries:
            sent = entries[-1].index + 1
            data = {"rows": [as_json(e) for e in entries], "count": sent, "summary": index.summary()}
            yield b"event: attempts\ndata: " + orjson.dumps(data) + b"\n\n"
        info = await run_in_threadpool(run_info, viewer.run_dir(name))
        rows = await run_in_threadpool(
            viewer.live.running, viewer.run_dir(name), index, run_running=info["state"] == "running"
        )
        if [r["name"] for r in rows] != running:
            running = [r["name"] for r in rows]
            yield b"event: running\ndata: " + orjson.dumps({"rows": rows}) + b"\n\n"
        if info["state"] != state:
            state = info["state"]
            yield b"event: state\ndata: " + orjson.dumps(info) + b"\n\n"
        await asyncio.sleep(LIVE_POLL_S)


async def _follow(request: Request, viewer: Viewer, name: str, path: Path) -> AsyncIterator[bytes]:
    """Server-sent events of one running attempt: ``items`` as its live file grows (each message with
    its ``key``: a later state replaces the one shown), then ``ended`` with the index of its record once
    it has one (its page then shows the transcript), or ``gone`` when the run stopped without one."""
    tail = Tail(path)
    yield b"retry: 1000\n\n"
    while not await request.is_disconnected():
        event, data = await run_in_threadpool(_follow_step, viewer, name, tail)
        if event:
            yield b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
            if event != "items":
                return
        await asyncio.sleep(LIVE_POLL_S)


def _follow_step(viewer: Viewer, name: str, tail: Tail) -> tuple[str, dict[str, Any]]:
    """One look at a running attempt: its record first (then its live file is done with), else what
    its live file gained."""
    run_dir = viewer.run_dir(name)
    recorded = viewer.index(name).recorded(tail.path.name)
    if recorded is not None:
        return "ended", {"index": recorded}
    items = tail.read()
    if items:
        return "items", {"items": items}
    if not tail.path.exists() and run_info(run_dir)["state"] != "running":
        return "gone", {}
    return "", {}
