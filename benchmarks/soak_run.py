"""The soak's run: its suite, ``orchestrate run --json`` as a subprocess with the bridge SIGKILLed at seeded
points, and what the checks need of it (see benchmarks/soak.py)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.soak_procs import Sample, Sampler, alive, bridges, cmdline, role
from orchestrator.results.records import AttemptRecord, read_records

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "soak"
SERVED_BEFORE_KILL = 3
"""Attempts started on the current bridge and completed before it may be killed: it serves (a bridge
killed while it starts is a different fault, and one the supervisor counts as another death)."""


@dataclass
class SoakOptions:
    attempts: int = 2000
    slots: int = 32
    crash: float = 0.01
    freeze: float = 0.01
    bridge_kills: int | None = None
    """SIGKILLs of the bridge over the run; attempts // 100 when None."""
    seed: int = 1
    """Seeds the simulator hosts (``target.options.seed``) and where the bridge kills fall."""
    time_scale: float = 0.05
    duration: str = "3s"
    """Scripted agent time (x time_scale: 150 ms), plus status_delay: an attempt takes ~200-300 ms."""
    status_delay: float = 0.05
    timeout: str = "2s"
    cancel_timeout: str = "500ms"
    close_grace: str = "200ms"
    retries: int = 6
    retry_backoff: str = "50ms"
    workers: int | None = None
    sample_interval: float = 0.2
    run_timeout: float = 1200.0
    keep: Path | None = None
    """Keep the suite, results and logs here instead of a temporary directory."""

    @property
    def kills(self) -> int:
        return self.attempts // 100 if self.bridge_kills is None else self.bridge_kills


@dataclass
class Kill:
    t: float
    pid: int
    records_seen: int
    wall: datetime
    """When, in the records' clock (UTC)."""


@dataclass
class SoakRun:
    options: SoakOptions
    returncode: int
    records: list[AttemptRecord]
    stdout_records: int
    summary: dict[str, Any]
    kills: list[Kill]
    samples: list[Sample]
    bridge_rss: dict[int, list[tuple[float, int, float]]]
    wall_s: float
    leftover_processes: list[str]
    leftover_dirs: list[str]
    stderr_tail: str
    timed_out: bool


def _matrix(attempts: int) -> tuple[int, int]:
    """(cases, repeats) with cases x repeats == attempts, cases at most 20."""
    cases = max(d for d in range(1, min(20, attempts) + 1) if attempts % d == 0)
    return cases, attempts // cases


def write_suite(directory: Path, opts: SoakOptions) -> Path:
    n_cases, repeats = _matrix(opts.attempts)
    chaos = f"{{crash: {opts.crash!r}, freeze: {opts.freeze!r}}}"
    cases = "".join(
        f"""
- id: c{i:03d}
  prompt: Write out{i}.txt.
  simulate:
    chaos: {chaos}
    duration: {opts.duration}
    files: {{out{i}.txt: "soak {i}\\n"}}
    completion: Wrote out{i}.txt.
"""
        for i in range(n_cases)
    )
    target = (
        f"{{kind: simulator, slots: {opts.slots}, close_grace: {opts.close_grace}, launch_timeout: 30s, "
        f"options: {{time_scale: {opts.time_scale!r}, status_delay: {opts.status_delay!r}, seed: {opts.seed}}}}}"
    )
    defaults = (
        f"{{timeout: {opts.timeout}, retries: {opts.retries}, retry_backoff: {opts.retry_backoff}, "
        f"retry_backoff_max: 1s, cancel_timeout: {opts.cancel_timeout}, ask_timeout: 1s, "
        f"completion_grace: 1s}}"
    )
    path = directory / "suite.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: soak
            target: {target}
            defaults: {defaults}
            repeats: {repeats}
            cases:"""
        )
        + cases
    )
    return path


# ------------------------------------------------------------------------------------ the run


def run_soak(opts: SoakOptions) -> SoakRun:
    """Run the soak (blocking) and collect what the checks need."""
    base = opts.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    base.mkdir(parents=True, exist_ok=True)
    # Host sockets live below $TMPDIR: keep the path short, private, and ours to inspect afterwards.
    tmpdir = Path(tempfile.mkdtemp(prefix="sk-", dir="/tmp"))
    tmpdir.chmod(0o700)
    try:
        return _run(opts, base, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if opts.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def _run(opts: SoakOptions, base: Path, tmpdir: Path) -> SoakRun:
    suite = write_suite(base, opts)
    results = base / "results"
    shutil.rmtree(results / RUN_ID, ignore_errors=True)
    argv = [sys.executable, "-m", "orchestrator", "run", str(suite), "--results", str(results)]
    argv += ["--run-id", RUN_ID, "--json", "--max-bridge-restarts", str(opts.kills + 10)]
    if opts.workers:
        argv += ["--workers", str(opts.workers)]
    rng = random.Random(f"soak-kills:{opts.seed}")
    lo, hi = max(1, opts.attempts // 20), max(2, opts.attempts * 9 // 10)
    points = sorted(rng.sample(range(lo, hi), min(opts.kills, hi - lo)))
    kills: list[Kill] = []
    served = SERVED_BEFORE_KILL
    bridge_seen: datetime | None = None
    seen = 0
    summary: dict[str, Any] = {}
    t_last = math.inf
    stderr_path = base / "orchestrate.stderr"
    t0 = time.monotonic()
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "TMPDIR": str(tmpdir)},
            cwd=str(ROOT),
        )
    sampler = Sampler(proc.pid, opts.sample_interval, t0)
    sampler.start()
    timed_out = threading.Event()

    def overtime() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(opts.run_timeout, overtime)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = json.loads(raw)
            if line.get("type") == "summary":
                summary = line
                continue
            # The run's last quarter ends with its last record: the summary that follows reads the
            # whole results file once, a peak that says nothing about growth.
            t_last = time.monotonic() - t0
            seen += 1
            if not points:
                continue
            if bridge_seen is None and [p for p in bridges(proc.pid) if p not in {k.pid for k in kills}]:
                bridge_seen = datetime.now(timezone.utc)
            if (
                bridge_seen is not None
                and line.get("status") == "completed"
                and datetime.fromisoformat(line["started_at"].replace("Z", "+00:00")) > bridge_seen
            ):
                served += 1
            if seen >= points[0] and served >= SERVED_BEFORE_KILL:
                current = [p for p in bridges(proc.pid) if p not in {k.pid for k in kills}]
                if len(current) == 1:
                    os.kill(current[0], signal.SIGKILL)
                    kills.append(Kill(time.monotonic() - t0, current[0], seen, datetime.now(timezone.utc)))
                    points.pop(0)
                    served, bridge_seen = 0, None
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        sampler.stop()
    wall = time.monotonic() - t0
    records = read_records(results / RUN_ID / "results.jsonl")
    return SoakRun(
        options=opts,
        returncode=proc.returncode,
        records=records,
        stdout_records=seen,
        summary=summary,
        kills=kills,
        samples=[s for s in sampler.samples if s.t <= t_last],
        bridge_rss=dict(sampler.bridge_rss),
        wall_s=wall,
        leftover_processes=_leftovers(sampler.seen),
        leftover_dirs=sorted(p.name for p in tmpdir.iterdir()),
        stderr_tail=stderr_path.read_text(errors="replace")[-3000:],
        timed_out=timed_out.is_set(),
    )


def _leftovers(seen: dict[int, bytes], wait: float = 10.0) -> list[str]:
    """Processes of the run still alive (same pid, same command line) once it ended."""
    deadline = time.monotonic() + wait
    while True:
        left = [pid for pid, cmd in seen.items() if alive(pid) and cmdline(pid) == cmd]
        if not left or time.monotonic() > deadline:
            return [f"{pid} {role(seen[pid])}" for pid in left]
        time.sleep(0.1)  # they die of PR_SET_PDEATHSIG, a signal nothing here can wait on
