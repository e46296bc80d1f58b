"""The pool's pipes (orchestrator.run.channel) and what the pool makes of them: every message whole, in
order, once; a sender that never waits for its reader; a reader that never waits for the rest of a
message whose writer was killed; and a result written just before its worker died counted as a result."""

from __future__ import annotations

import os
import queue
import random
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any

import multiprocess as mp

from orchestrator.run.channel import Receiver, Sender
from orchestrator.run.executor import Assign, Done, Finished, Lost, Stop
from orchestrator.run.jobs import Job, JobResult
from orchestrator.run.pool import Pool, receive, send
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan

WAIT = 60.0  # generous: the machine is shared


def _pipe() -> tuple[Receiver, Sender]:
    reader, writer = mp.get_context("spawn").Pipe(duplex=False)
    return Receiver(reader), Sender(writer)


def _read_all(receiver: Receiver, count: int) -> list[bytes]:
    """``count`` messages, waiting for the pipe to be readable (never for longer than WAIT at once)."""
    out: list[bytes] = []
    while len(out) < count:
        readable, _, _ = select.select([receiver.fileno()], [], [], WAIT)
        assert readable, f"nothing more after {len(out)} of {count} messages"
        out.extend(receiver.read())
    return out


def test_messages_cross_whole_in_order_once_whatever_their_size() -> None:
    receiver, sender = _pipe()
    rng = random.Random(7)
    sizes = [0, 1, 7, 8, 9, 4096, 65_535, 65_536, 65_537, 3 << 20] + [
        rng.randrange(0, 200_000) for _ in range(60)
    ]
    sent = [rng.randbytes(size) for size in sizes]
    try:
        for message in sent:  # far more than the pipe holds: the rest waits in the feeder
            sender.put(message)
        assert _read_all(receiver, len(sent)) == sent
        assert receiver.read() == []
    finally:
        sender.close()
        receiver.close()


def test_put_returns_while_nobody_reads() -> None:
    """``Queue.put`` never blocked, and neither does this: a process whose reader is stopped must not
    stop with it (the main process writing to a frozen worker, a worker's loop writing its result)."""
    receiver, sender = _pipe()
    sent = [bytes([n]) * 1_000_000 for n in range(12)]  # 12 MB: ~190 times what a pipe holds
    done = threading.Event()

    def put_all() -> None:
        for message in sent:
            sender.put(message)
        done.set()

    putter = threading.Thread(target=put_all)
    putter.start()
    try:
        assert done.wait(WAIT), "put waited for the reader"
        assert _read_all(receiver, len(sent)) == sent
    finally:
        putter.join()
        sender.close()
        receiver.close()


def _write_then_hang(writer: Any, big: int) -> None:
    """A child: one small message, one that the pipe cannot hold, then waits to be killed."""
    sender = Sender(writer)
    sender.put(b"whole")
    sender.put(b"x" * big)
    signal.pause()


def test_a_writer_killed_inside_a_message_leaves_what_was_whole_and_an_end() -> None:
    ctx = mp.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_write_then_hang, args=(writer, 16 << 20), daemon=True)
    child.start()
    writer.close()  # the child's copy is the only writer now
    receiver = Receiver(reader)
    try:
        got = _read_all(receiver, 1)  # the big one cannot be whole: nobody reads what the pipe holds
        os.kill(child.pid, signal.SIGKILL)
        child.join(WAIT)
        deadline = time.monotonic() + WAIT
        while not receiver.ended:
            assert time.monotonic() < deadline, "the pipe never ended"
            select.select([receiver.fileno()], [], [], WAIT)
            got.extend(receiver.read())
        assert got == [b"whole"]
        assert receiver.read() == []
    finally:
        if child.is_alive():
            child.kill()
            child.join(WAIT)
        receiver.close()


def _answer_then_die(wid: int, inbox: Any, outbox: Any, config: Any, gated: bool) -> None:
    """A worker that writes its job's result and dies at once, before the main process can have read it."""
    receiver, sender = Receiver(inbox), Sender(outbox)
    while True:
        select.select([receiver.fileno()], [], [])
        for raw in receiver.read():
            match receive(raw):
                case Assign(job_id, _):
                    sender.put(_done(wid, job_id))
                    os._exit(3)
                case Stop():
                    return
        if receiver.ended:
            return


def _done(wid: int, job_id: str) -> bytes:
    pickled: queue.Queue[bytes] = queue.Queue()
    send(pickled, Done(wid, job_id, JobResult({"status": "completed"})))
    return pickled.get_nowait()


def test_a_result_written_just_before_its_worker_died_is_a_result_not_a_loss(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\ntarget: {kind: simulator, slots: 1}\ncases: [{id: a, prompt: x}]\n")
    job = Job(build_plan(load_suite(suite)).attempts[0], 1)
    pool = Pool(f"{__name__}:_answer_then_die", None, workers=1, slots=1)
    try:
        pool.submit("a#1", job)
        results: list[Finished | Lost] = []
        deadline = time.monotonic() + WAIT
        while not results:
            assert time.monotonic() < deadline, "no result"
            results = pool.poll(1.0)
        assert results == [Finished("a#1", job, JobResult({"status": "completed"}))]
        assert pool.poll(0.0) == []
        assert pool.in_flight == 0
    finally:
        pool.close(timeout=WAIT)
