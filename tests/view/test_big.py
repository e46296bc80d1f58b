"""The viewer over synthetic big files: pages, never everything (the figures are in benchmarks/view.py)."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from orchestrator.results.transcript_index import build_index
from orchestrator.view.app import PAGE_LIMIT, build_app
from orchestrator.view.attempts import AttemptIndex
from orchestrator.view.runs import Sources
from orchestrator.view.transcript import page
from tests.view.synthetic import write_run, write_transcript


def test_a_first_page_reads_only_the_lines_it_shows(tmp_path: Path) -> None:
    run = write_run(tmp_path / "big", 5000)
    index = AttemptIndex(run)
    index.refresh(until=100)
    assert index.count == 100 and not index.complete
    assert 4500 <= index.estimated_total() <= 5500  # from the bytes per record read so far
    index.refresh()
    assert index.complete and index.estimated_total() == index.count == 5000
    assert index.record(4999)["case_id"] == "case001666"


def test_the_run_page_pages_and_filters_a_big_run(tmp_path: Path) -> None:
    write_run(tmp_path / "results" / "big", 5000)
    c = TestClient(build_app(Sources.from_paths([tmp_path / "results"]), loopback_only=False))
    run = c.get("/api/runs/big").json()
    assert run["summary"]["totals"]["attempts"] == 5000
    assert run["choices"]["model"] == ["model-0", "model-1", "model-2"]
    first = c.get("/api/runs/big/attempts?limit=100").json()
    assert [r["index"] for r in first["rows"]] == list(range(100))
    everything = c.get("/api/runs/big/attempts?limit=100000").json()
    assert len(everything["rows"]) == PAGE_LIMIT  # never every row at once
    filtered = c.get("/api/runs/big/attempts?model=model-1&passed=false&start=10&limit=5").json()
    assert filtered["total"] == sum(1 for i in range(5000) if i % 3 == 1 and (i % 6 == 5 or i % 3 == 0))
    assert all(r["model_id"] == "model-1" and not r["passed"] for r in filtered["rows"])
    last = c.get("/api/runs/big/attempts?start=4990&limit=100").json()
    assert last["total"] == 5000 and not last["estimated"] and len(last["rows"]) == 10


def test_a_big_transcript_collapses_updates_and_pages_by_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    turns = write_transcript(path, 3 * 1024 * 1024)
    index = build_index(path)
    items, after = page(index, 0, 4)
    assert [i["kind"] for i in items] == ["prompt", "assistant", "tool", "output"]
    # The streamed text (three states of one message) shows once, in its last state.
    assert items[1]["text"].startswith("turn 0: ") and items[1]["text"].endswith("about the code ")
    assert (
        after is not None
        and after == items[3]["at"] + len(path.read_bytes()[items[3]["at"] :].split(b"\n")[0]) + 1
    )
    # Every page, one after the other: each turn once (text, tool, output), nothing else, to the end.
    kinds: list[str] = []
    at: int | None = 0
    while at is not None:
        chunk, at = page(index, at, 500)
        kinds += [i["kind"] for i in chunk]
    assert kinds == ["prompt"] + ["assistant", "tool", "output"] * turns
    # A page may start anywhere: it begins at the next whole line.
    middle, _ = page(index, index.size // 2, 3)
    assert len(middle) == 3 and all(i["at"] >= index.size // 2 for i in middle)
    last, end = page(index, middle[0]["at"], 10**6)
    assert end is None and last[-1]["kind"] == "output"
