"""A running attempt in the viewer, over HTTP from a real ``orchestrate view`` beside a real run: listed
as running, its messages streamed (redacted, merged) before it ends, then its record instead."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.results.run_lock import RunLock
from tests.runs import SECRET, poll_until
from tests.view.browser import serving
from tests.view.cdp import browser
from tests.view.slow_run import DONE, SHOWN, SLOW, slow_run


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.loads(res.read())


def events(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Server-sent events, as they come."""
    with urllib.request.urlopen(url, timeout=150) as res:
        name = ""
        for raw in res:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                yield name, json.loads(line[6:])
                name = ""


def test_a_running_attempt_streams_its_messages_then_becomes_its_record(tmp_path: Path) -> None:
    with slow_run(tmp_path) as run:
        run.wait_said()
        poll_until(lambda: run.recorded("quick"), 120, "the quick attempt's record")
        with serving(tmp_path / "results") as url:
            assert RunLock.held(run.run_dir) is not None
            rows = get(url + "api/runs/r/running")["rows"]
            assert [(r["name"], r["case_id"], r["status"]) for r in rows] == [(SLOW, "slow", "running")]
            assert get(url + f"api/runs/r/running/{SLOW}")["index"] is None
            # The finished attempt is a record, never also a running one.
            recorded = get(url + "api/runs/r/attempts")["rows"]
            assert [r["case_id"] for r in recorded] == ["quick"]

            stream = events(url + f"api/runs/r/running/{SLOW}/stream")
            seen: dict[str, dict[str, Any]] = {}
            for name, data in stream:
                assert name == "items"
                for item in data["items"]:
                    seen[item.get("key") or str(item["at"])] = item
                if any(i["text"] == SHOWN for i in seen.values()) and any(
                    i["kind"] == "command" for i in seen.values()
                ):
                    break
            # Before it ends: no record yet, and what was shown is the final text of each message.
            assert not run.recorded("slow") and run.proc.poll() is None
            texts = [i["text"] for i in seen.values()]
            assert "Implement two_fer." in texts and next(iter(seen.values()))["kind"] == "prompt"
            assert SECRET not in json.dumps(seen) and SECRET.encode() not in run.live_file.read_bytes()
            assert SHOWN in texts and not any(t and t != SHOWN and SHOWN.startswith(t) for t in texts)

            run.release()
            for name, data in stream:
                if name == "ended":
                    index = data["index"]
                    break
                assert name == "items"
            detail = get(url + f"api/runs/r/attempts/{index}")
            assert detail["record"]["case_id"] == "slow" and detail["record"]["status"] == "completed"
            items = get(url + f"api/runs/r/attempts/{index}/transcript?limit=500")["items"]
            assert DONE in [i["text"] for i in items]
            assert not run.live_file.exists()
            assert run.wait_ended() == 0
            poll_until(lambda: get(url + "api/runs/r")["info"]["state"] != "running", 60, "the run's end")
            assert get(url + "api/runs/r/running")["rows"] == []
        assert not (run.run_dir / "live").exists()  # nothing of the live view outlives the run


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_running_attempt_s_page_grows_then_becomes_the_attempt_in_chromium(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with slow_run(tmp_path) as run:
        run.wait_said()
        poll_until(lambda: run.recorded("quick"), 120, "the quick attempt's record")
        with serving(tmp_path / "results") as url, browser(CHROMIUM) as page:
            # The run page: the finished attempt, and the running one above it.
            page.open(url + "run/r")
            page.wait_for("!!document.querySelector('tr.running a')", 60, "the running attempt's row")
            row = page.evaluate("document.querySelector('tr.running').innerText")
            assert "slow" in row and "running" in row
            assert page.evaluate("document.querySelectorAll('#attempts a[href*=\"/attempt/\"]').length") == 1
            page.screenshot(shots / "run-with-a-running-attempt.png")

            # Its page, opened from the table: its conversation so far, while it still runs.
            page.evaluate("document.querySelector('tr.running a').click()")
            page.wait_for(
                f"document.getElementById('transcript')?.innerText.includes({json.dumps(SHOWN)})",
                60,
                "the message",
            )
            page.wait_for("!!document.querySelector('#transcript .item.command')", 60, "the command it runs")
            shown = page.text()
            assert page.evaluate("location.pathname") == f"/run/r/running/{SLOW}"
            assert "Implement two_fer." in shown and SECRET not in shown
            assert not run.recorded("slow") and run.proc.poll() is None  # still running while shown
            assert DONE not in shown
            page.screenshot(shots / "running-attempt.png")

            # It ends: the same page becomes the attempt's own, from its transcript and record.
            run.release()
            page.wait_for("location.pathname.includes('/attempt/')", 60, "the page to switch to the record")
            page.wait_for(f"document.body.innerText.includes({json.dumps(DONE)})", 60, "the completion")
            final = page.text()
            assert "completed" in final and "released-ok" in final and SHOWN in final and SECRET not in final
            assert page.evaluate("document.getElementById('live').hidden") is True
            page.screenshot(shots / "ended-attempt.png")
    assert all(p.stat().st_size > 10_000 for p in shots.iterdir())
