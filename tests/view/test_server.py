"""``orchestrate view`` for real (uvicorn on a socket): the token rule, the loopback Host rule, and a run
in progress updating live over SSE."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.runs import SECRET, poll_until, run_argv, simulator_suite
from tests.view.browser import serving
from tests.view.synthetic import write_run


def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read().decode()
    finally:
        conn.close()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_run(tmp_path / "results" / "run-a", 5)
    return tmp_path / "results"


def test_loopback_needs_no_token_but_a_loopback_host_name(results: Path) -> None:
    with serving(results) as url:
        assert "token" not in url and urlsplit(url).hostname == "127.0.0.1"
        status, _, body = get(url, "/api/runs")
        assert status == 200 and json.loads(body)["runs"][0]["run_id"] == "run-a"
        assert get(url, "/api/runs", {"Host": f"localhost:{urlsplit(url).port}"})[0] == 200
        # A DNS name rebound to 127.0.0.1 by a web page elsewhere is refused.
        assert get(url, "/api/runs", {"Host": "attacker.example"})[0] == 403


def test_any_other_address_requires_the_printed_token_on_every_request(results: Path) -> None:
    printed: list[str] = []
    with serving(results, args=("--host", "0.0.0.0"), printed=printed) as url:
        assert any("not loopback" in line for line in printed)
        token = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))["token"]
        assert len(token) >= 32
        for path in ("/", "/api/runs", "/api/runs/run-a/attempts", "/api/runs/run-a/live", "/static/app.js"):
            assert get(url, path)[0] == 403, path
            assert get(url, path + "?token=" + token[:-1] + "x")[0] == 403, path
        status, headers, body = get(url, "/api/runs?token=" + token)
        assert status == 200 and "run-a" in body
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert "HttpOnly" in headers["set-cookie"]
        # The cookie the token gave lets the page's own requests (fetch, EventSource) through.
        assert get(url, "/api/runs/run-a/attempts", {"Cookie": cookie})[0] == 200
        assert get(url, "/api/runs", {"Authorization": f"token {token}"})[0] == 200
        assert get(url, "/api/runs", {"Cookie": "orchestrate_view_token=wrong"})[0] == 403


def sse_events(url: str, path: str) -> Iterator[tuple[str, dict[str, object]]]:
    """The events of a server-sent event stream, as they come."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=120)
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream"})
        res = conn.getresponse()
        assert res.status == 200 and res.getheader("content-type", "").startswith("text/event-stream")
        name = ""
        while True:
            line = res.readline().decode()
            if not line:
                return
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])
    finally:
        conn.close()


def test_a_run_in_progress_updates_live(tmp_path: Path) -> None:
    # 0.35 s of agent work each at time_scale 0.05 (one final turn: duration is all its work)
    cases = "".join(
        f"""
- id: c{i}
  prompt: Implement two_fer.
  simulate: {{duration: 7s, cost: 0.1}}
"""
        for i in range(4)
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
        poll_until(lambda: (results / "live" / "manifest.json").is_file(), 60, "the run's manifest")
        with serving(results) as url:
            (listed,) = json.loads(get(url, "/api/runs")[2])["runs"]
            assert listed["state"] == "running" and listed["attempts_planned"] == 4
            seen: list[str] = []
            states: list[str] = []
            for name, data in sse_events(url, "/api/runs/live/live?from=0"):
                if name == "attempts":
                    seen += [str(r["case_id"]) for r in data["rows"]]  # type: ignore[attr-defined]
                    assert data["count"] == len(seen)
                elif name == "state":
                    states.append(str(data["state"]))
                    if data["state"] != "running":
                        break
            # Every attempt arrived while the viewer watched, one batch at a time, then the end.
            assert sorted(seen) == ["c0", "c1", "c2", "c3"]
            assert states[0] == "running" and states[-1] == "finished"
            assert json.loads(get(url, "/api/runs")[2])["runs"][0]["state"] == "finished"
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()


def test_without_the_view_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    # The interpreter without Starlette and uvicorn: importing either fails, as in a plain install.
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from orchestrator.cli.main import main; main(['view', '--no-open', sys.argv[1]])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "pip install 'roo-eval-orchestrator[view]'" in res.stderr
