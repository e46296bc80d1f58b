"""One process owns a run directory at a time (``results/<run>/.lock``): the writer's side. The runs'
side (a resume or --run-id of a run in progress) is in ``tests/faults/test_process_faults.py``."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from orchestrator.results.run_lock import LOCK, RunInProgressError, RunLock
from orchestrator.results.store import ResultsWriter
from tests.results.test_results import key, record

pytestmark = pytest.mark.timeout(180)

HOST = os.uname()[1]
HOLDER = """
import sys
from pathlib import Path
from orchestrator.results.store import ResultsWriter
w = ResultsWriter.resume(Path(sys.argv[1]))
print("owned", flush=True)
sys.stdin.read()  # until killed
"""


def test_one_process_owns_a_run_and_a_killed_owner_frees_it_at_once(tmp_path: Path) -> None:
    writer = ResultsWriter.create(tmp_path / "run-1", {"run_id": "run-1"})
    writer.append(record(key("a")))
    writer.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(writer.run_dir)],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "owned\n"
        before = writer.results_path.read_bytes()
        with open(writer.results_path, "ab") as fh:
            fh.write(b'{"torn')  # what the owner may be writing right now: not the resumer's to cut
        for attempt in (
            lambda: ResultsWriter.resume(writer.run_dir),
            lambda: ResultsWriter.create(writer.run_dir, {}),
        ):
            with pytest.raises(RunInProgressError) as refused:
                attempt()
            assert str(refused.value) == f"run run-1 is in progress (pid {holder.pid} on host {HOST})"
        assert writer.results_path.read_bytes() == before + b'{"torn'
        holder.kill()  # SIGKILL: nothing of the owner's runs, the kernel drops its lock
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    resumed = ResultsWriter.resume(writer.run_dir)
    try:
        assert resumed.finished_keys() == {key("a")}
        assert writer.results_path.read_bytes() == before  # the torn line was now the resumer's to cut
    finally:
        resumed.close()


def test_a_probe_of_the_lock_never_refuses_a_run_that_starts_meanwhile(tmp_path: Path) -> None:
    """``RunLock.held`` (what ``orchestrate view`` asks every second) takes a shared lock for a moment; a
    run or resume that locks at that moment waits it out instead of being refused as "in progress"."""
    tmp_path.joinpath(LOCK).touch()
    probe = os.open(tmp_path / LOCK, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe caught in the middle
    released = threading.Timer(0.05, os.close, (probe,))
    released.start()
    try:
        lock = RunLock(tmp_path)
    finally:
        released.join()
    try:
        assert RunLock.held(tmp_path) is not None
        with pytest.raises(RunInProgressError):  # a real owner is still refused
            RunLock(tmp_path)
    finally:
        lock.release()
    assert RunLock.held(tmp_path) is None
