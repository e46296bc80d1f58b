"""``orchestrate view --bundle OUT RUN_DIR``: a static copy of one run that opens from file://."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.runs import SECRET, orchestrate
from tests.view.browser import dom, screenshot
from tests.view.test_browser import _attempt


def test_the_bundle_opens_from_file_with_no_server(sim_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    res = orchestrate("view", "--bundle", str(out), str(sim_results / "r1"))
    assert res.returncode == 0, res.stderr
    assert (out / "index.html").as_uri() in res.stdout
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "style.css", "run.js", "attempt-0.js"}
    assert all(SECRET not in p.read_text() for p in files)
    # A second bundle never overwrites a directory, and a bundle is of one run.
    assert orchestrate("view", "--bundle", str(out), str(sim_results / "r1")).returncode == 2
    assert orchestrate("view", "--bundle", str(tmp_path / "b2"), str(sim_results)).returncode == 2

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: the bundle was written, not opened")
    url = (out / "index.html").as_uri()
    assert 'href="#/run/r1"' in dom(chromium, url)
    run = dom(chromium, url + "#/run/r1")
    assert run.count('href="#/run/r1/attempt/') == 4 and "Pass rate by model" in run
    rich = _attempt(sim_results, "rich", "m1")
    attempt = dom(chromium, url + f"#/run/r1/attempt/{rich}")
    assert "zebra-crossing 42" in attempt and "Write the README for two_fer" in attempt
    assert "python3 -m unittest -q" in attempt
    assert '<span class="add">+key=***</span>' in attempt  # the diff, from file:// too
    screenshot(chromium, url + f"#/run/r1/attempt/{rich}", tmp_path / "bundle-attempt.png")
