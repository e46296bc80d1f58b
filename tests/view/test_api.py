"""The viewer's JSON API and pages over a real simulator run (Starlette's TestClient: the app's handlers,
middleware and routing as served, without a socket)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from orchestrator.results.compare import build_comparison
from orchestrator.results.report import build_report
from orchestrator.stats import wilson_interval
from orchestrator.view.app import build_app
from orchestrator.view.runs import Sources
from tests.runs import SECRET


def client(*paths: Path) -> TestClient:
    # TestClient's Host is "testserver": the loopback Host check is the token tests' business.
    return TestClient(build_app(Sources.from_paths(list(paths)), loopback_only=False))


def transcript(c: TestClient, run: str, index: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    at = 0
    while True:  # small pages: the items come whole across page boundaries
        page = c.get(f"/api/runs/{run}/attempts/{index}/transcript?at={at}&limit=7").json()
        items += page["items"]
        if page["next"] is None:
            return items
        at = page["next"]


def attempt_index(c: TestClient, case: str, model: str) -> int:
    rows = c.get("/api/runs/r1/attempts?limit=100").json()["rows"]
    return next(r["index"] for r in rows if r["case_id"] == case and r["model_id"] == model and r["final"])


def test_the_runs_page_lists_the_run_with_its_figures(sim_results: Path) -> None:
    c = client(sim_results)
    assert "<script" in c.get("/").text
    (run,) = c.get("/api/runs").json()["runs"]
    summary = json.loads((sim_results / "r1" / "summary.json").read_text())
    assert run["run_id"] == "r1" and run["suite"] == "t" and run["state"] == "finished"
    assert run["attempts_done"] == 4 and run["attempts_planned"] == 4 and not run["attempts_estimated"]
    assert run["pass_rate"] == summary["totals"]["pass_rate"] == 0.5
    assert run["started_at"] and run["ended_at"]


def test_the_run_page_has_summary_json_s_figures_and_pages_the_attempts(sim_results: Path) -> None:
    c = client(sim_results)
    run = c.get("/api/runs/r1").json()
    written = json.loads((sim_results / "r1" / "summary.json").read_text())
    for key in ("totals", "by_model", "by_tag"):
        for group, figures in written[key].items() if key != "totals" else [("", written[key])]:
            got = run["summary"][key][group] if group else run["summary"][key]
            assert {k: got[k] for k in ("attempts", "passed", "pass_rate", "cost_usd", "duration_s")} == {
                k: figures[k] for k in ("attempts", "passed", "pass_rate", "cost_usd", "duration_s")
            }
    assert set(run["summary"]["by_model"]) == {"m1", "m2"}
    assert run["choices"]["model"] == ["m1", "m2"] and "rich" in run["choices"]["tag"]
    # The 95% intervals are orchestrate report's (Wilson, infrastructure errors out), for each group.
    report = build_report(sim_results / "r1")["pass_rate_ci"]
    assert run["intervals"] == report
    for group in [run["intervals"]["totals"], *run["intervals"]["by_model"].values()]:
        if group["graded"]:
            assert group["ci_low"] <= group["rate"] <= group["ci_high"]
            assert (group["ci_low"], group["ci_high"]) == pytest.approx(
                wilson_interval(group["passed"], group["graded"])
            )
    page = c.get("/api/runs/r1/attempts?limit=3").json()
    assert page["total"] == 4 and len(page["rows"]) == 3
    rest = c.get("/api/runs/r1/attempts?limit=3&start=3").json()["rows"]
    assert len(rest) == 1 and rest[0]["index"] == 3
    passed = c.get("/api/runs/r1/attempts?passed=true").json()["rows"]
    assert {r["case_id"] for r in passed} == {"rich"}
    failed = c.get("/api/runs/r1/attempts?passed=false&model=m2").json()["rows"]
    assert [(r["case_id"], r["model_id"]) for r in failed] == [("broken", "m2")]
    assert c.get("/api/runs/r1/attempts?tag=rich").json()["total"] == 2
    assert c.get("/api/runs/r1/attempts?status=completed").json()["total"] == 4
    assert c.get("/api/runs/r1/attempts?limit=100000").json()["rows"].__len__() == 4  # capped, not refused


def test_the_attempt_page_reads_as_a_conversation(sim_results: Path) -> None:
    c = client(sim_results)
    index = attempt_index(c, "rich", "m1")
    items = transcript(c, "r1", index)
    kinds = [i["kind"] for i in items]
    assert items[0]["kind"] == "prompt" and items[0]["text"] == "Implement two_fer."
    # The streamed text (3 chunks) shows once, whole; the key the agent echoed is redacted.
    said = [i["text"] for i in items if i["kind"] == "assistant" and i["depth"] == 0]
    assert said == ["I will implement two_fer now, carefully. The key is ***."]
    tool = next(i for i in items if i["kind"] == "tool" and i["params"].get("path") == "two_fer.py")
    assert "One for {name}" in tool["params"]["content"]
    assert any(i["kind"] == "command" and "echo zebra-crossing" in i["text"] for i in items)
    assert any(i["kind"] == "output" and "zebra-crossing 42" in i["text"] for i in items)
    # The subtask's messages sit under it: its prompt and its file, one level deeper.
    sub = [i for i in items if i["depth"] == 1]
    assert any(i["kind"] == "prompt" and i["text"] == "Write the README for two_fer" for i in sub)
    assert any(i["kind"] == "tool" and i["params"].get("path") == "README.md" for i in sub)
    assert kinds.count("completion") >= 1
    assert any(
        i["kind"] == "completion" and i["text"] == "Implemented two_fer; the tests pass." for i in items
    )
    detail = c.get(f"/api/runs/r1/attempts/{index}").json()
    assert detail["check"]["command"] == "python3 -m unittest -q"
    assert detail["check"]["exit_code"] == 0 and "OK" in detail["check"]["output_tail"]
    assert detail["prompt"] == "Implement two_fer." and detail["transcript"]["usage"]
    broken = c.get(f"/api/runs/r1/attempts/{attempt_index(c, 'broken', 'm1')}").json()
    assert broken["check"]["exit_code"] != 0 and broken["record"]["passed"] is False


def test_the_attempt_page_has_what_the_agent_changed(sim_results: Path) -> None:
    c = client(sim_results)
    detail = c.get(f"/api/runs/r1/attempts/{attempt_index(c, 'rich', 'm1')}").json()
    diff = detail["diff"]["text"]
    assert detail["record"]["diff_file"].startswith("events/rich__m1__0__")
    assert '-    raise NotImplementedError("implement two_fer")' in diff
    assert '+    return f"One for {name}, one for me."' in diff
    assert "--- /dev/null\n+++ b/README.md\n" in diff  # the subtask's file
    assert "+++ b/notes/key.txt\n@@ -0,0 +1 @@\n+key=***\n" in diff
    assert detail["diff"]["cut"] is False
    broken = c.get(f"/api/runs/r1/attempts/{attempt_index(c, 'broken', 'm1')}").json()
    assert broken["diff"] is None and broken["record"]["diff_file"] is None  # it wrote nothing


def test_search_finds_text_in_the_transcripts_and_opens_where_it_is(sim_results: Path) -> None:
    c = client(sim_results)
    hits = c.get("/api/runs/r1/search?q=Zebra-Crossing").json()["hits"]
    assert {h["case_id"] for h in hits} == {"rich"} and {h["model_id"] for h in hits} == {"m1", "m2"}
    assert all("zebra-crossing" in h["snippet"] for h in hits)
    hit = hits[0]
    page = c.get(f"/api/runs/r1/attempts/{hit['index']}/transcript?at={hit['offset']}&limit=1").json()
    assert "zebra-crossing" in json.dumps(page["items"][0])
    quoted = c.get("/api/runs/r1/search", params={"q": 'f"One for {name}'}).json()["hits"]
    assert quoted and all(h["case_id"] == "rich" for h in quoted)
    assert c.get("/api/runs/r1/search?q=no-such-words-anywhere").json()["hits"] == []


def test_compare_shows_orchestrate_compare_s_rows(sim_results: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(sim_results / "r1", results / "r1")
    shutil.copytree(sim_results / "r1", results / "r2")
    lines = (results / "r2" / "results.jsonl").read_text().splitlines()
    flipped = []
    for line in lines:
        rec = json.loads(line)
        if rec["case_id"] == "broken" and rec["model_id"] == "m1":
            rec.update(passed=True, cost_usd=0.0)
        flipped.append(json.dumps(rec))
    (results / "r2" / "results.jsonl").write_text("\n".join(flipped) + "\n")
    got = client(results).get("/api/compare?a=r1&b=r2").json()
    expected = build_comparison(results / "r1", results / "r2")
    assert got["changes"] == expected["changes"] and got["totals"] == expected["totals"]
    assert [(x["case_id"], x["change"]) for x in got["changes"]] == [("broken", "fail->pass")]


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/..",
        "/api/runs/%2E%2E",
        "/api/runs/..%2F..%2Fetc",
        "/api/runs/%2Fetc",
        "/api/runs/r1%2F..%2F..",
        "/api/runs/nope/attempts",
        "/api/runs/r1/attempts/999/transcript",
        "/api/runs/r1/attempts/-1",
        "/run/..%2F..%2Fetc%2Fpasswd",
        "/static/..%2F..%2Fapp.py",
        "/static/../app.py",
    ],
)
def test_no_url_escapes_the_results_directory(sim_results: Path, path: str) -> None:
    res = client(sim_results / "r1").get(path)
    assert res.status_code == 404 or (path.startswith("/run/") and "<script" in res.text), res.text
    assert "root:" not in res.text and "def build_app" not in res.text


def test_a_record_s_files_outside_the_run_are_not_read(tmp_path: Path) -> None:
    from tests.view.synthetic import write_run

    run = write_run(tmp_path / "results" / "x", 1)
    (tmp_path / "secret.jsonl").write_text('{"t": 0, "event": {"eventName": "message", "payload": []}}\n')
    rec = json.loads((run / "results.jsonl").read_text())
    rec["events_file"] = "events/../../../secret.jsonl"
    rec["diff_file"] = "events/../../../secret.jsonl"
    (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
    c = client(tmp_path / "results")
    assert c.get("/api/runs/x/attempts/0").json()["transcript"] is None
    assert c.get("/api/runs/x/attempts/0").json()["diff"] is None
    # Inside the run but not among its attempts' files: not served either.
    rec["diff_file"] = "manifest.json"
    (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
    assert client(tmp_path / "results").get("/api/runs/x/attempts/0").json()["diff"] is None
    assert c.get("/api/runs/x/attempts/0/transcript").json()["items"] == []
    assert c.get("/api/runs/x/search?q=eventName").json()["hits"] == []


def test_nothing_served_shows_the_secret(sim_results: Path) -> None:
    c = client(sim_results)
    bodies = [c.get("/api/runs").text, c.get("/api/runs/r1").text, c.get("/api/runs/r1/attempts").text]
    for row in c.get("/api/runs/r1/attempts").json()["rows"]:
        bodies.append(c.get(f"/api/runs/r1/attempts/{row['index']}").text)
        bodies.append(c.get(f"/api/runs/r1/attempts/{row['index']}/transcript?limit=500").text)
    assert any("***" in b for b in bodies)  # the echoes are there, redacted
    assert all(SECRET not in b for b in bodies)
    assert c.get(f"/api/runs/r1/search?q={SECRET}").json()["hits"] == []
