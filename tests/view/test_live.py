"""A running attempt in the viewer, over HTTP from a real ``orchestrate view`` beside a real run: listed
as running, its messages streamed (redacted, merged) before it ends, then its record instead."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.results.run_lock import RunLock
from tests.runs import SECRET, poll_until
from tests.view.browser import serving
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
