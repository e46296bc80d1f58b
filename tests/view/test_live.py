"""A running attempt in the viewer, over HTTP from a real ``orchestrate view`` beside a real run: listed
as running, its messages streamed (redacted, merged) before it ends, then its record instead."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from orchestrator.results import live_transcripts
from orchestrator.results.run_lock import RunLock
from orchestrator.results.store import ResultsWriter
from orchestrator.view.app import build_app
from orchestrator.view.runs import Sources
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


def test_only_a_running_run_s_own_live_files_are_served(tmp_path: Path) -> None:
    results = tmp_path / "results"
    writer = ResultsWriter.create(results / "r", {"run_id": "r", "attempts_planned": 1})
    head = live_transcripts.header(
        "c", "m", 0, 1, config_hash="h", started_at="2026-01-01T00:00:00+00:00", slot="w0-1", node=None
    )
    (writer.run_dir / "live" / "c__m__0__1.jsonl").write_bytes(orjson.dumps(head) + b"\n")
    outside = tmp_path / "secret.jsonl"
    outside.write_bytes(orjson.dumps({**head, "case_id": SECRET}) + b"\n")
    (writer.run_dir / "live" / "x__m__0__1.jsonl").symlink_to(outside)
    c = TestClient(build_app(Sources.from_paths([results]), loopback_only=False))
    try:
        assert [r["name"] for r in c.get("/api/runs/r/running").json()["rows"]] == ["c__m__0__1.jsonl"]
        assert c.get("/api/runs/r/running/c__m__0__1.jsonl").json()["header"]["case_id"] == "c"
        for bad in (
            "x__m__0__1.jsonl",
            "..%2Fmanifest.json",
            "..%2F..%2Fsecret.jsonl",
            ".lock",
            "nope.jsonl",
        ):
            for path in (f"/api/runs/r/running/{bad}", f"/api/runs/r/running/{bad}/stream"):
                res = c.get(path)
                assert res.status_code == 404 and SECRET not in res.text, path
    finally:
        writer.close()
    # A run whose owner is gone (killed, or ended) has no running attempt, whatever its live/ holds.
    (results / "r" / "live").mkdir()
    (results / "r" / "live" / "c__m__0__1.jsonl").write_bytes(orjson.dumps(head) + b"\n")
    assert c.get("/api/runs/r/running").json()["rows"] == []
    assert c.get("/api/runs/r/running/c__m__0__1.jsonl").status_code == 404
