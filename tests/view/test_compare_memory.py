"""The viewer's compare: each run's final rows streamed out of its index in pairing order, the same
answer as ``orchestrate compare``, a page of the changed pairs at a time, and a server whose memory does
not grow with the runs it compares."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from orchestrator.results.compare import build_comparison, compare_sorted, sorted_finals
from orchestrator.results.records import RESULTS, read_rows
from orchestrator.view.attempt_db import COLUMNS
from orchestrator.view.attempts import AttemptIndex
from tests.results.compare_reference import expected_comparison, varied_records, write_records
from tests.view.browser import dom, screenshot, serving
from tests.view.synthetic import record
from tests.view.test_api import client

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")


def _indexed(run: Path) -> AttemptIndex:
    index = AttemptIndex(run)
    index.refresh()
    return index


def test_the_index_streams_the_finals_compare_pairs(tmp_path: Path) -> None:
    records_a, records_b = varied_records("a", 120, seed=7), varied_records("b", 120, seed=8)
    run_a, run_b = write_records(tmp_path / "a", records_a), write_records(tmp_path / "b", records_b)
    index_a, index_b = _indexed(run_a), _indexed(run_b)
    # The last final of each key (forced resumes wrote two), in the order Python sorts the keys (case
    # ids with non-ASCII letters among them).
    kept = [[getattr(r, c) for c in COLUMNS] for r in sorted_finals(read_rows(run_a / RESULTS))]
    assert [[getattr(r, c) for c in COLUMNS] for r in index_a.finals()] == kept
    assert compare_sorted(index_a.finals(), index_b.finals()) == expected_comparison(records_a, records_b)


def test_the_compare_page_gets_a_page_of_the_changes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_records(results / "r1", varied_records("r1", 120, seed=7))
    write_records(results / "r2", varied_records("r2", 120, seed=8))
    full = build_comparison(results / "r1", results / "r2")
    c = client(results)
    first = c.get("/api/compare?a=r1&b=r2&limit=20").json()
    later = c.get("/api/compare?a=r1&b=r2&start=30&limit=20").json()
    assert len(full["changes"]) > 50
    assert first["changes"] == full["changes"][:20] and later["changes"] == full["changes"][30:50]
    assert first["changes_count"] == len(full["changes"]) and first["only_a"] == full["only_a"][:20]
    assert (first["only_a_count"], first["only_b_count"]) == (len(full["only_a"]), len(full["only_b"]))
    for k in ("totals", "by_model", "tests"):
        assert orjson.dumps(first[k]) == orjson.dumps(full[k])


def _two_runs(base: Path, n: int) -> tuple[Path, Path]:
    """Two runs of ``n`` attempts on the same keys (ten repeats of each case and model: the bootstrap's
    cost goes with the cases), the second with every attempt's check gone the other way: every graded
    pair changes."""
    runs = []
    for name, flip in (("a", False), ("b", True)):
        run = base / name
        (run / "events").mkdir(parents=True)
        (run / "manifest.json").write_bytes(orjson.dumps({"schema_version": 1, "run_id": name}))
        with (run / RESULTS).open("wb") as fh:
            for i in range(n):
                r = record(name, i)
                r.update(case_id=f"case{i // 30:06d}", repeat=i // 3 % 10)
                if flip and r["passed"] is not None:
                    r["passed"] = not r["passed"]
                fh.write(orjson.dumps(r) + b"\n")
        runs.append(run)
    return runs[0], runs[1]


_INDEX = """
import sys
from pathlib import Path
from orchestrator.view.attempts import AttemptIndex
for run in sys.argv[1:]:
    AttemptIndex(Path(run)).refresh()
"""

# What the server does for GET /api/compare, in a process that did nothing else (the indexes were built
# by another: building them has a peak of its own, which would hide the compare's).
_MEASURE = """
import json, resource, sys
from pathlib import Path
from orchestrator.results.compare import compare_sorted
from orchestrator.view.attempts import AttemptIndex
a, b = (AttemptIndex(Path(p)) for p in sys.argv[1:])
cmp = compare_sorted(a.finals(), b.finals(), limit=500)
json.dumps(cmp)
out = {"paired": cmp["totals"]["paired"], "changes": cmp["changes_count"], "shipped": len(cmp["changes"])}
print(json.dumps({**out, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _python(script: str, *args: Path) -> str:
    run = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(run, capture_output=True, text=True, timeout=900, cwd=ROOT, check=True).stdout


@pytest.mark.timeout(900)  # 240,000 records written and indexed, two compares: minutes on a busy machine
def test_comparing_runs_of_100000_attempts_peaks_near_runs_of_20000(tmp_path: Path) -> None:
    """Compare of two runs of 100,000 attempts each (every graded pair changed) peaks within a few MB of
    two runs of 20,000 (measured: +7 MB). Holding every final row of both runs grew ~2.6 kB a pair: +206 MB."""
    peaks = {}
    for n in (20_000, 100_000):
        base = tmp_path / str(n)
        a, b = _two_runs(base, n)
        try:
            _python(_INDEX, a, b)
            got = json.loads(_python(_MEASURE, a, b))
        finally:
            shutil.rmtree(base)
        assert (got["paired"], got["shipped"]) == (n, 500) and got["changes"] > n // 2
        peaks[n] = got["peak_kb"]
    growth_mb = (peaks[100_000] - peaks[20_000]) / 1024
    assert growth_mb < 20, f"peak RSS {peaks[20_000] / 1024:.0f} MB -> {peaks[100_000] / 1024:.0f} MB"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_compare_page_shows_its_changes_a_page_at_a_time(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    results = tmp_path / "results"
    _two_runs(results, 1500)
    count = len(build_comparison(results / "a", results / "b")["changes"])
    assert count > 1000
    with serving(results) as url:
        first = dom(CHROMIUM, url + "compare?a=a&b=b")
        assert f"{count:,} changed outcome(s)" in first and f"1\u2013500 of {count:,}" in first
        assert len(re.findall(r"<tr><td>case\d+</td>", first)) == 500  # the first page only
        assert "\u2039 prev" not in first and 'href="/compare?a=a&amp;b=b&amp;start=500"' in first
        second = dom(CHROMIUM, url + "compare?a=a&b=b&start=500")
        assert (
            f"501\u20131,000 of {count:,}" in second and "\u2039 prev" in second and "next \u203a" in second
        )
        out = tmp_path / "compare.png"
        screenshot(CHROMIUM, url + "compare?a=a&b=b&start=500", out)
        assert out.stat().st_size > 10_000


def test_a_refresh_need_not_wait_for_a_compare_that_is_streaming(tmp_path: Path) -> None:
    """A live run's index is refreshed while a compare reads its finals: the refresh commits (it would
    wait for the read lock, then fail, if the stream held the index file read-locked)."""
    records = varied_records("a", 600, seed=3)  # more finals than a batch of the stream
    run = write_records(tmp_path / "a", records)
    index = _indexed(run)
    stream = index.finals()
    first = next(stream)
    with (run / RESULTS).open("ab") as fh:
        fh.write(orjson.dumps({**records[0], "case_id": "zz-late", "final": True}) + b"\n")
    assert index.refresh() == 1
    rest = [first, *stream]  # the finals as they were when the stream began
    assert len(rest) == len(sorted_finals(read_rows(run / RESULTS))) - 1
