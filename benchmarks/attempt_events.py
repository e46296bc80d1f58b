"""What following a task costs a worker, per event, and what its result weighs on the way to the main
process: ``AttemptRunner`` against the tests' fake bridge client (tests/run/fake_bridge.py), which hands
it a long streamed answer (mostly partial ``message`` updates, as a real model's stream is) all at once.

    .venv/bin/python benchmarks/attempt_events.py [--events 20000] [--partial-every 20] [--repeat 5] [--json]

Reported: the runner's CPU per event (best of ``--repeat``; the fake's own work of building the events
included, the bridge and the host excluded), the transcript rows kept, and the bytes and CPU of pickling
the JobResult there and back (what the local pool's queue does with it).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from orchestrator.run.attempt import AttemptRunner  # noqa: E402
from orchestrator.run.jobs import Job, JobResult, WorkerConfig  # noqa: E402
from orchestrator.suite.config import load_suite  # noqa: E402
from orchestrator.suite.plan import build_plan  # noqa: E402
from tests.run.fake_bridge import FakeBridge, HostScript  # noqa: E402


def _message(task: str, ts: int, kind: str, name: str, text: str, partial: bool) -> dict[str, Any]:
    body = {"ts": ts, "type": kind, kind: name, "text": text, "partial": partial}
    return {"eventName": "message", "payload": [{"taskId": task, "action": "updated", "message": body}]}


def script(events: int, partial_every: int) -> HostScript:
    """taskCreated, ``events`` text updates (each ``partial_every``-th one final), completion, taskIdle."""
    task = "01a20da4-b12c-7000-8000-000000000001"
    out: list[tuple[float, dict[str, Any]]] = [(0.0, {"eventName": "taskCreated", "payload": [task]})]
    text = ""
    for i in range(events):
        text += "word "
        final = (i + 1) % partial_every == 0
        out.append((0.0, _message(task, 1000 + i // partial_every, "say", "text", text[-400:], not final)))
    out.append((0.0, _message(task, 10**9, "ask", "completion_result", "", False)))
    out.append((0.0, {"eventName": "taskIdle", "payload": [task]}))
    return HostScript(after_start=out)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="attempt-events-") as name:
        return _measure(args, Path(name))


def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    (tmp / "host.sock").touch()
    (tmp / "suite.yaml").write_text(
        "name: t\ntarget: {kind: socket, sockets: [host.sock]}\ncases: [{id: a, prompt: x}]\n"
    )
    suite = load_suite(tmp / "suite.yaml")
    job = Job(build_plan(suite).attempts[0], number=1, socket=str(tmp / "host.sock"))
    work = tmp / "work"
    work.mkdir()
    config = WorkerConfig("r", "", str(work), str(work), suite.target, results_dir=str(tmp / "results"))
    host = script(args.events, args.partial_every)

    async def once() -> tuple[float, JobResult]:
        fake = FakeBridge(copy.deepcopy(host))
        runner = AttemptRunner(fake, config, 1)
        start = time.process_time()
        result = await runner.run(job)
        return time.process_time() - start, result

    best, result = min((asyncio.run(once()) for _ in range(args.repeat)), key=lambda r: r[0])
    assert result.record.get("status") == "completed", result.record
    start = time.process_time()
    data = pickle.dumps(result)
    pickle.loads(data)
    pickled_cpu = time.process_time() - start
    return {
        "events": args.events + 3,
        "partial_every": args.partial_every,
        "runner_cpu_s": round(best, 4),
        "runner_cpu_per_event_us": round(best / (args.events + 3) * 1e6, 2),
        "transcript_rows": len(result.transcript),
        "pickled_bytes": len(data),
        "pickle_roundtrip_cpu_ms": round(pickled_cpu * 1e3, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partial-every", type=int, default=20, help="one final update per this many")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(figures) + b"\n")
        return
    print(
        f"{figures['events']} events ({figures['transcript_rows']} kept in the transcript): runner "
        f"{figures['runner_cpu_s'] * 1e3:.0f} ms CPU, {figures['runner_cpu_per_event_us']:.1f} us/event; "
        f"result {figures['pickled_bytes'] / 1e6:.2f} MB pickled, pickle and unpickle "
        f"{figures['pickle_roundtrip_cpu_ms']:.1f} ms CPU"
    )


if __name__ == "__main__":
    main()
