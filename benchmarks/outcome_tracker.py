#!/usr/bin/env python
"""CPU of the outcome tracker per attempt, driven as ``AttemptRunner`` drives it: for each event of a
recording (after its StartNewTask), ``next_deadline``, ``feed_raw`` and ``tick``; then ``result()``.

    .venv/bin/python benchmarks/outcome_tracker.py [--recording complete-3.52.1.jsonl ...] [--samples 15]
        [--attempts 300] [--json]

Each sample replays the recording ``--attempts`` times (``time.process_time``); the median and the
minimum of the samples are reported, per attempt and per event. To compare two trees on a loaded
machine, copy this script into both and run them at the same time (both then see the same load): its
own tree comes first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.outcome import OutcomeTracker  # noqa: E402
from orchestrator.status import OutcomeLimits  # noqa: E402

RECORDINGS = ROOT / "tests" / "fixtures" / "recordings"


def task_events(name: str) -> list[tuple[float, dict[str, Any]]]:
    """(seconds, raw TaskEvent) of every event the extension sent after the recording's last StartNewTask."""
    rows = [orjson.loads(line) for line in (RECORDINGS / name).read_bytes().splitlines() if line.strip()]
    starts = [
        i
        for i, r in enumerate(rows)
        if r["dir"] == "out" and r["msg"]["data"].get("commandName") == "StartNewTask"
    ]
    first = starts[-1] + 1 if starts else 0
    return [
        (r["t"] / 1000, r["msg"]["data"])
        for r in rows[first:]
        if r["dir"] == "in" and r["msg"]["type"] == "TaskEvent"
    ]


def one_attempt(events: list[tuple[float, dict[str, Any]]], limits: OutcomeLimits) -> None:
    tracker = OutcomeTracker(events[0][0] - 0.01, limits)
    for now, event in events:
        tracker.next_deadline()
        tracker.feed_raw(event, now)
        tracker.tick(now)
    tracker.tick(events[-1][0] + 600)
    tracker.result()


def measure(name: str, samples: int, attempts: int) -> dict[str, Any]:
    events = task_events(name)
    limits = OutcomeLimits()
    per_attempt = []
    for _ in range(samples):
        start = time.process_time()
        for _ in range(attempts):
            one_attempt(events, limits)
        per_attempt.append((time.process_time() - start) / attempts * 1e6)
    median, least = statistics.median(per_attempt), min(per_attempt)
    return {
        "recording": name,
        "events": len(events),
        "us_per_attempt_median": round(median, 1),
        "us_per_attempt_min": round(least, 1),
        "us_per_event_median": round(median / len(events), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recording", nargs="+", default=["complete-3.52.1.jsonl", "long-stream-3.52.1.jsonl"]
    )
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--attempts", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(name, args.samples, args.attempts) for name in args.recording]
    for result in results:
        if args.json:
            print(orjson.dumps(result).decode())
        else:
            print(
                f"{result['recording']}: {result['events']} events, {result['us_per_attempt_median']} us "
                f"per attempt (min {result['us_per_attempt_min']}), {result['us_per_event_median']} us per event"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
