"""A Ray run's running attempt in the viewer: its node sends the live transcript to the run's hub, which
writes it into the driver's results directory, where ``orchestrate view`` tails it as a local run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.runs import SECRET, poll_until
from tests.view.browser import serving
from tests.view.slow_run import DONE, SHOWN, SLOW, slow_run
from tests.view.test_live import events, get

pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[ray]'")
pytestmark = [pytest.mark.timeout(300)]


def test_a_ray_node_s_running_attempt_streams_to_the_viewer(tmp_path: Path) -> None:
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's socket paths live below it
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": ray_tmp}
    try:
        with slow_run(tmp_path, "--ray", "local", env=env) as run:
            run.wait_said(timeout=240)
            head = json.loads(run.live_file.read_text().splitlines()[0])
            assert head["node"]  # written on the driver's machine, for an attempt on a Ray node
            with serving(tmp_path / "results") as url:
                rows = get(url + "api/runs/r/running")["rows"]
                assert [(r["name"], r["node"]) for r in rows] == [(SLOW, head["node"])]
                texts: list[str] = []
                stream = events(url + f"api/runs/r/running/{SLOW}/stream")
                for name, data in stream:
                    assert name == "items"
                    texts += [i["text"] for i in data["items"]]
                    if SHOWN in texts:
                        break
                assert not run.recorded("slow") and SECRET not in run.live_file.read_text()
                run.release()
                index = next(data["index"] for name, data in stream if name == "ended")
                detail = get(url + f"api/runs/r/attempts/{index}")
                assert detail["record"]["node"] == head["node"] and detail["record"]["status"] == "completed"
                items = get(url + f"api/runs/r/attempts/{index}/transcript?limit=500")["items"]
                assert DONE in [i["text"] for i in items]
            assert run.wait_ended(120) == 0
            poll_until(lambda: not (run.run_dir / "live").exists(), 30, "the live directory's removal")
    finally:
        out = subprocess.run(["pgrep", "-af", ray_tmp], capture_output=True, text=True).stdout
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert [line for line in out.splitlines() if "pgrep" not in line] == []
