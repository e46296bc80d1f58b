#!/usr/bin/env python
"""CPU per pool message: multiprocess's ``Queue`` (what the pool used) against the pool's own pipe
(``orchestrator.run.channel``), both carrying the same stdlib pickles that ``orchestrator.run.pool.send``
makes.

    .venv/bin/python benchmarks/pool_pipe.py [--messages 20000] [--json]

One process, a writer thread and the reading main thread, so the CPU counted (``time.process_time``) is
both ends of each message: the put, the feeder thread if one runs, the read and the unpickling. Messages
are a small one (a ``Go``) and an attempt's ``Done`` with a 12-row transcript, alternately.
"""

from __future__ import annotations

import argparse
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any

import multiprocess as mp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.run.channel import Receiver, Sender
from orchestrator.run.executor import Done, Go
from orchestrator.run.jobs import JobResult
from orchestrator.run.pool import receive, send


def _messages(count: int) -> list[Go | Done]:
    rows = [
        {"t": 0.01 * n, "dir": "in", "seq": n, "event": {"eventName": "message", "n": n}} for n in range(12)
    ]
    result = JobResult({"status": "completed", "attempt_id": "case#1", "cost": 0.01}, rows)
    return [Go(f"case#{n}") if n % 2 else Done(0, f"case#{n}", result) for n in range(count)]


def _queue(messages: list[Go | Done]) -> float:
    q = mp.get_context("spawn").Queue()
    start = time.process_time()
    writer = threading.Thread(target=lambda: [send(q, m) for m in messages])
    writer.start()
    for _ in messages:
        receive(q.get())
    writer.join()
    spent = time.process_time() - start
    q.close()
    q.join_thread()
    return spent


def _pipe(messages: list[Go | Done]) -> float:
    reader, writer_end = mp.get_context("spawn").Pipe(duplex=False)
    receiver, sender = Receiver(reader), Sender(writer_end)
    start = time.process_time()
    writer = threading.Thread(target=lambda: [send(sender, m) for m in messages])
    writer.start()
    got = 0
    while got < len(messages):
        select.select([receiver.fileno()], [], [])
        for raw in receiver.read():
            receive(raw)
            got += 1
    writer.join()
    spent = time.process_time() - start
    sender.close()
    receiver.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    messages = _messages(args.messages)
    out: dict[str, Any] = {"messages": args.messages, "queue_us": [], "pipe_us": []}
    for _ in range(args.rounds):  # alternately, so that the machine's load falls on both alike
        out["queue_us"].append(round(_queue(messages) / args.messages * 1e6, 2))
        out["pipe_us"].append(round(_pipe(messages) / args.messages * 1e6, 2))
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        print(
            f"CPU per message, both ends: multiprocess Queue {out['queue_us']} us, pool pipe {out['pipe_us']} us"
        )


if __name__ == "__main__":
    main()
