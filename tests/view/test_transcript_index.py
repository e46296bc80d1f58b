"""The attempt page over a transcript with the index its run's writer saved equals the page over the same
transcript without one (the viewer then builds it), for every protocol recording and a synthetic
transcript of many partial updates; an index that no longer matches its transcript is not used."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from orchestrator.results.transcript_index import index_path, load_index, save_index
from orchestrator.view.transcript import TranscriptCache, page
from tests.view.synthetic import write_transcript

RECORDINGS = sorted((Path(__file__).parents[1] / "fixtures" / "recordings").rglob("*.jsonl"))
"""The engine's protocol recordings (a copy of the shared protocol docs' ones)."""


def _pages(path: Path, limit: int = 50) -> list[tuple[list[dict[str, Any]], int | None]]:
    """Every page of the transcript, as a fresh viewer serves it, with the index's chart and tree."""
    index = TranscriptCache().get(path)
    out: list[tuple[list[dict[str, Any]], int | None]] = [
        ([{"usage": index.usage, "parents": index.parents}], 0)
    ]
    offset: int | None = 0
    while offset is not None:
        items, offset = page(index, offset, limit)
        out.append((items, offset))
    return out


def _indexed_and_not(source: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``source`` copied twice: once with its index saved beside it, once without."""
    indexed = tmp_path / "indexed" / "t.jsonl"
    plain = tmp_path / "plain" / "t.jsonl"
    for path in (indexed, plain):
        path.parent.mkdir(parents=True)
        shutil.copyfile(source, path)
    save_index(indexed, indexed.read_bytes())
    st = indexed.stat()
    assert load_index(indexed, st.st_size, st.st_mtime_ns) is not None  # the page below uses it
    assert not index_path(plain).exists()
    return indexed, plain


def test_the_page_of_every_recording_is_the_same_with_its_index(tmp_path: Path) -> None:
    assert len(RECORDINGS) >= 20
    updated = 0
    for n, recording in enumerate(RECORDINGS):
        indexed, plain = _indexed_and_not(recording, tmp_path / str(n))
        assert _pages(indexed) == _pages(plain), recording
        updated += len(TranscriptCache().get(indexed).last)
    assert updated > 0  # the recordings do update messages: the index has lines to hide


def test_the_page_of_many_partial_updates_is_the_same_with_its_index(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    write_transcript(source, 5 << 20)  # past one 4 MiB chunk of the viewer's own build
    indexed, plain = _indexed_and_not(source, tmp_path)
    pages = _pages(indexed, limit=500)
    assert pages == _pages(plain, limit=500)
    texts = [i["text"] for items, _ in pages[1:] for i in items if i.get("kind") == "assistant"]
    assert texts and all(t.count("thinking about the code") == 20 for t in texts)  # last states only


def test_a_stale_index_is_not_used(tmp_path: Path) -> None:
    """A transcript rewritten after its index was saved (a later update of its first turn): the page
    shows the new last state, as the viewer's own index does."""
    source = tmp_path / "src.jsonl"
    write_transcript(source, 64 << 10)
    indexed, plain = _indexed_and_not(source, tmp_path)
    first = indexed.read_bytes().split(b"\n")[1]  # turn 0's first state
    later = first.replace(b"turn 0:", b"TURN 0!")
    for path in (indexed, plain):
        with path.open("ab") as fh:
            fh.write(later + b"\n")
    pages = _pages(indexed)
    assert pages == _pages(plain)
    texts = [i["text"] for items, _ in pages[1:] for i in items]
    assert not any("turn 0:" in t for t in texts) and any("TURN 0!" in t for t in texts)


def test_the_viewer_reads_a_matching_saved_index_instead_of_the_transcript(tmp_path: Path) -> None:
    """A saved index that matches its transcript is what the viewer uses: one edited to hold no prompt
    (its header left as the writer wrote it) shows the prompt as plain assistant text."""
    path = tmp_path / "t.jsonl"
    write_transcript(path, 64 << 10)
    save_index(path, path.read_bytes())
    saved = index_path(path)
    obj = orjson.loads(saved.read_bytes())
    assert obj["prompts"]
    obj["prompts"] = {}
    saved.write_bytes(orjson.dumps(obj))
    first = page(TranscriptCache().get(path), 0, 1)[0][0]
    assert first["text"] == "Implement the big task." and first["kind"] == "assistant"
    saved.unlink()
    assert page(TranscriptCache().get(path), 0, 1)[0][0]["kind"] == "prompt"
