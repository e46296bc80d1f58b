"""Synthetic run directories in the real files' formats, of any size: many runs, a run of many attempts,
a big transcript. Used by the viewer's tests (small) and by benchmarks/view.py (big)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

STATUSES = ("completed", "completed", "completed", "aborted", "timeout", "infra_error")


def record(run_id: str, i: int, *, models: int = 3, events_file: str | None = None) -> dict[str, Any]:
    """The ``i``-th attempt record of a synthetic run, every field of a real one."""
    status = STATUSES[i % len(STATUSES)]
    passed = None if status == "infra_error" else (i % 3 != 0)
    return {
        "schema_version": 1,
        "run_id": run_id,
        "case_id": f"case{i // models:06d}",
        "model_id": f"model-{i % models}",
        "repeat": 0,
        "config_hash": "0123456789abcdef",
        "attempt": 1,
        "final": True,
        "status": status,
        "passed": passed,
        "reason": f"reason {status}",
        "error_class": "infra" if status == "infra_error" else None,
        "error": "host died" if status == "infra_error" else None,
        "task_id": f"task-{i}",
        "slot": "w1-1",
        "node": None,
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:01:00Z",
        "duration_s": 10.0 + i % 50,
        "timings": {"setup_s": 0.1, "launch_s": 0.2, "wait_s": None, "agent_s": 8.0, "check_s": 1.0},
        "metrics": {
            "tokens_in": 1000 + i % 7,
            "tokens_out": 100,
            "cache_reads": 0,
            "cache_writes": 0,
            "context_tokens": 900,
            "cost_usd": 0.01,
            "tool_usage": {"write_to_file": {"attempts": 1, "failures": 0}},
            "tool_failures": [],
            "errors": [],
            "subtasks": 0,
            "messages": 6,
            "api_requests": 2,
            "api_retries": 0,
            "time_to_first_event_s": 0.05,
            "completion": "Task completed.",
        },
        "check": {
            "passed": bool(passed),
            "exit_code": 0 if passed else 1,
            "duration": 1.0,
            "timed_out": False,
        }
        | {"output_tail": "Ran 2 tests\n\nOK\n"},
        "tags": ["python", "easy" if i % 2 else "hard"],
        "events_file": events_file,
    }


def write_run(
    run_dir: Path, attempts: int, *, planned: int | None = None, summary: bool = True, models: int = 3
) -> Path:
    """A finished run of ``attempts`` records (its summary.json as ``orchestrate run`` writes it)."""
    from orchestrator.results.records import RESULTS, read_rows
    from orchestrator.results.summary import summarize

    run_dir.mkdir(parents=True)
    (run_dir / "events").mkdir()
    manifest = {
        "schema_version": 1,
        "run_id": run_dir.name,
        "suite_name": "synthetic",
        "attempts_planned": attempts if planned is None else planned,
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:00:00+00:00",
        "suite": {"cases": []},
    }
    (run_dir / "manifest.json").write_bytes(orjson.dumps(manifest))
    with (run_dir / "results.jsonl").open("wb") as fh:
        for i in range(attempts):
            fh.write(orjson.dumps(record(run_dir.name, i, models=models)) + b"\n")
    if summary:
        totals = summarize(read_rows(run_dir / RESULTS))
        data = {"schema_version": 1, **totals, "stop_reason": "finished", "pending": 0}
        (run_dir / "summary.json").write_text(json.dumps(data))
    return run_dir


def _message(task: str, ts: int, action: str, t: float, **message: Any) -> bytes:
    event = {
        "eventName": "message",
        "payload": [{"taskId": task, "action": action, "message": {"ts": ts, **message}}],
    }
    return orjson.dumps({"t": t, "dir": "in", "event": event}) + b"\n"


def write_transcript(path: Path, size: int, *, task: str = "root") -> int:
    """A transcript of about ``size`` bytes: the prompt, then turns of streamed assistant text (each
    message updated three times, so that collapsing shows a third of them), tool calls and command
    output. Returns the number of turns written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = 1_000
    turns = 0
    with path.open("wb", buffering=1 << 20) as fh:
        fh.write(_message(task, ts, "created", 0.0, type="say", say="text", text="Implement the big task."))
        written = fh.tell()
        while written < size:
            ts += 1
            text = f"turn {turns}: " + "thinking about the code " * 20
            for k in (1, 2, 3):
                fh.write(
                    _message(
                        task, ts, "updated", turns, type="say", say="text", text=text[: len(text) * k // 3]
                    )
                )
            ts += 1
            tool = json.dumps(
                {"tool": "editedExistingFile", "path": f"f{turns}.py", "content": "x = 1\n" * 20}
            )
            fh.write(_message(task, ts, "created", turns + 0.5, type="ask", ask="tool", text=tool))
            ts += 1
            fh.write(
                _message(task, ts, "created", turns + 0.7, type="say", say="command_output", text="ok\n" * 10)
            )
            turns += 1
            written = fh.tell()
    os.utime(path)
    return turns
