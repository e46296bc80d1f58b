"""``orchestrate view --bundle OUT RUN_DIR...``: a static copy of runs that opens from file://, with its
search and, for several runs, its comparisons."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from orchestrator.view import bundle
from tests.runs import SECRET, orchestrate
from tests.view.browser import dom, screenshot
from tests.view.test_browser import _attempt


def _chromium() -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: the bundle was written, not opened")
    return chromium


def test_the_bundle_opens_from_file_with_no_server(sim_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    res = orchestrate("view", "--bundle", str(out), str(sim_results / "r1"))
    assert res.returncode == 0, res.stderr
    assert (out / "index.html").as_uri() in res.stdout
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert names >= {"index.html", "app.js", "style.css", "runs.js", "run.js", "attempt-0.js", "search.js"}
    assert all(SECRET not in p.read_text() for p in files)
    # A second bundle never overwrites a directory, and a bundle is of run directories.
    assert orchestrate("view", "--bundle", str(out), str(sim_results / "r1")).returncode == 2
    assert orchestrate("view", "--bundle", str(tmp_path / "b2"), str(sim_results)).returncode == 2

    chromium = _chromium()
    url = (out / "index.html").as_uri()
    runs = dom(chromium, url)
    assert 'href="#/run/r1"' in runs and "Compare 2 selected" not in runs  # one run: nothing to compare
    run = dom(chromium, url + "#/run/r1")
    assert run.count('href="#/run/r1/attempt/') == 4 and "Pass rate by model" in run
    rich = _attempt(sim_results, "rich", "m1")
    attempt = dom(chromium, url + f"#/run/r1/attempt/{rich}")
    assert "zebra-crossing 42" in attempt and "Write the README for two_fer" in attempt
    assert "python3 -m unittest -q" in attempt
    assert '<span class="add">+key=***</span>' in attempt  # the diff, from file:// too
    screenshot(chromium, url + f"#/run/r1/attempt/{rich}", tmp_path / "bundle-attempt.png")


def _flipped_copy(sim_results: Path, results: Path) -> None:
    """``results/r1`` (the simulator run) and ``results/r2``, where ``broken`` passes for m1."""
    shutil.copytree(sim_results / "r1", results / "r1")
    shutil.copytree(sim_results / "r1", results / "r2")
    lines = []
    for line in (results / "r2" / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["case_id"] == "broken" and rec["model_id"] == "m1":
            rec.update(passed=True)
        lines.append(json.dumps(rec))
    (results / "r2" / "results.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def two_runs(sim_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of r1 and r2 (where ``broken`` passes for m1); returns its directory."""
    results = tmp_path_factory.mktemp("bundle-two") / "results"
    _flipped_copy(sim_results, results)
    out = results.parent / "bundle"
    res = orchestrate("view", "--bundle", str(out), str(results / "r1"), str(results / "r2"))
    assert res.returncode == 0, res.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"compare-0-1.js", "compare-1-0.js", "search.js"} <= {p.name for p in files}
    assert all(SECRET not in p.read_text() for p in files)  # the search index too
    return out


def test_the_bundle_searches_its_transcripts_from_file(
    sim_results: Path, two_runs: Path, tmp_path: Path
) -> None:
    chromium = _chromium()
    url = (two_runs / "index.html").as_uri()
    # A search in the URL runs when the page opens: its hit names the attempt, quotes the text, and
    # links to the item in the attempt's transcript.
    found = dom(chromium, url + "#/run/r1?q=ZEBRA-crossing")
    rich = _attempt(sim_results, "rich", "m1")
    assert "match(es) for “ZEBRA-crossing”" in found
    hit = re.search(rf'<a href="(#/run/r1/attempt/{rich}\?at=(\d+))">rich · m1 · #0/1</a>', found)
    assert hit is not None, found
    assert re.search(r"<code>[^<]*zebra-crossing 42[^<]*</code>", found)
    # The hit opens its attempt with the item it found marked (and scrolled to).
    attempt = dom(chromium, url + hit.group(1))
    item = rf'class="item [a-z ]*found" data-at="{hit.group(2)}">(?:(?!class="item ).)*zebra-crossing'
    assert re.search(item, attempt, re.S), attempt
    screenshot(chromium, url + "#/run/r1?q=zebra", tmp_path / "bundle-search.png")
    screenshot(chromium, url + hit.group(1), tmp_path / "bundle-hit.png", size="1400,2400")


def test_the_bundle_compares_its_runs_from_file(two_runs: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    url = (two_runs / "index.html").as_uri()
    assert "Compare 2 selected" in dom(chromium, url)
    # The rows orchestrate compare prints, from file://.
    compared = dom(chromium, url + "#/compare?a=r1&b=r2")
    row = re.search(r"<tr><td>broken</td><td>m1</td><td[^>]*>0</td><td>fail-&gt;pass</td>", compared)
    assert row is not None, compared
    # Runs are named by their directories: r2 is a copy of r1, whose manifest still says r1.
    assert re.search(r">r2</a><span[^>]*> \(run id r1\)</span>", compared), compared
    screenshot(chromium, url + "#/compare?a=r1&b=r2", tmp_path / "bundle-compare.png")


def test_the_search_index_is_capped_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_SEARCH_CHARS", 30)
    index = bundle._SearchIndex()
    items = [{"at": 0, "title": "tool", "text": "a" * 20}, {"at": 9, "text": "b" * 20, "params": {"x": 1}}]
    index.add(3, items)
    assert index.data() == {"items": [(3, 0, "tool\n" + "a" * 20)], "truncated": True}
    index = bundle._SearchIndex()
    index.add(4, [{"at": 9, "text": "hello", "params": {"path": "f.py", "n": [1]}}])
    assert index.data()["items"] == [(4, 9, "hello\nf.py\n[1]")] and not index.truncated


def test_runs_named_alike_or_too_many_runs_make_no_bundle(tmp_path: Path) -> None:
    from tests.view.synthetic import write_run

    a, b = write_run(tmp_path / "a" / "r", 2), write_run(tmp_path / "b" / "r", 2)
    with pytest.raises(bundle.BundleError, match="named alike"):
        bundle.write_bundle([a, b], tmp_path / "out")
    many = [write_run(tmp_path / "many" / f"r{i}", 1) for i in range(bundle.MAX_RUNS + 1)]
    with pytest.raises(bundle.BundleError, match="1 to 8 runs"):
        bundle.write_bundle(many, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    res = orchestrate("view", "--bundle", str(tmp_path / "out"), str(a), str(b))
    assert res.returncode == 2 and "named alike" in res.stderr
