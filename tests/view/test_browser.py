"""What a person sees, in a real headless Chromium (Debian's ``chromium``; skipped without it): the page's
DOM after its scripts ran, and a screenshot of each page under the test's temp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator.results.run_lock import RunLock
from tests.runs import SECRET, poll_until, run_argv, simulator_suite
from tests.view.browser import dom, screenshot, serving

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def _attempt(results: Path, case: str, model: str) -> int:
    lines = (results / "r1" / "results.jsonl").read_text().splitlines()
    return next(
        i
        for i, line in enumerate(lines)
        if json.loads(line)["case_id"] == case and json.loads(line)["model_id"] == model
    )


def test_each_page_shows_the_run_in_chromium(sim_results: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    rich = _attempt(sim_results, "rich", "m1")
    with serving(sim_results) as url:
        runs = dom(CHROMIUM, url)
        assert 'href="/run/r1"' in runs and "finished" in runs and "50.0%" in runs

        run = dom(CHROMIUM, url + "run/r1")
        assert "Pass rate by model" in run and "Pass rate by tag" in run
        assert run.count('href="/run/r1/attempt/') == 4 and ">broken<" in run and ">rich<" in run

        attempt = dom(CHROMIUM, url + f"run/r1/attempt/{rich}")
        assert "I will implement two_fer now, carefully. The key is ***." in attempt
        assert "echo zebra-crossing" in attempt and "zebra-crossing 42" in attempt
        assert "Write the README for two_fer" in attempt and "Implemented two_fer; the tests pass." in attempt
        assert "python3 -m unittest -q" in attempt and "Cost over time" in attempt
        assert "What the agent changed" in attempt and '<pre class="out diff" id="diff">' in attempt
        assert '<span class="add">+key=***</span>' in attempt and SECRET not in attempt
        assert '<span class="del">-    raise NotImplementedError("implement two_fer")</span>' in attempt

        for name, path in (("runs", ""), ("run", "run/r1"), ("attempt", f"run/r1/attempt/{rich}")):
            out = tmp_path / f"{name}.png"
            screenshot(CHROMIUM, url + path, out, size="1400,2400" if name == "attempt" else "1400,1000")
            assert out.stat().st_size > 10_000, name  # a page drawn, not a blank one


def test_a_run_in_progress_updates_in_chromium_without_a_reload(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    # 1.75 s of agent work each at time_scale 0.05 (one final turn: duration is all its work)
    cases = "".join(
        f"\n- id: c{i}\n  prompt: Implement two_fer.\n  simulate: {{duration: 35s, cost: 0.1}}\n"
        for i in range(6)
    )
    suite = simulator_suite(tmp_path, cases, slots=1)
    results = tmp_path / "results"
    run = subprocess.Popen(
        run_argv(suite, results, "live"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TEST_KEY": SECRET},
    )
    try:
        records = results / "live" / "results.jsonl"
        poll_until(lambda: records.is_file() and records.stat().st_size > 0, 120, "the run's first record")
        with serving(results) as url:
            opened = datetime.now(timezone.utc)
            assert RunLock.held(results / "live") is not None  # still running as the page opens
            page = dom(CHROMIUM, url + "run/live", budget_ms=120_000)
        ended = json.loads((results / "live" / "manifest.json").read_text())["ended_at"]
        assert ended is not None and datetime.fromisoformat(ended) > opened  # it ended while shown
        # Every attempt reached the page over its live stream, and the end of the run closed it.
        assert page.count('href="/run/live/attempt/') == 6 and "1\u20136 of 6" in page
        assert '<span id="live" class="live" hidden=""' in page
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
