#!/usr/bin/env python
"""Scheduling efficiency of ``orchestrate run`` beside the ideal makespan (issue 5, item 1).

    .venv/bin/python benchmarks/scheduling.py [--attempts 1000] [--duration-ms 100] [--slots 32 8]
        [--workers W] [--status-delay-ms 10] [--process-per-host] [--keep DIR] [--json]

For each slot count it writes a suite of N simulated attempts of D ms each (one case, ``repeats: N``, no
check command, no retries; the simulator plays D minus the status delay, then the completion ask, and
``taskIdle`` a status delay later ends the attempt), runs it through the real pipeline
(``python -m orchestrator run``: scheduler, bridge, worker processes, simulator farm) and reports:

* makespan: first attempt's ``started_at`` to last attempt's ``ended_at`` (records), beside the ideal
  N x D / S; targets 1.25x at 32 slots, 1.1x at 8. The command's wall time (start-up included) is shown too.
* CPU per attempt of the whole process tree (orchestrator + bridge + workers + farm + anything else):
  exact all-in figure from ``getrusage(RUSAGE_CHILDREN)`` (this process is a child subreaper, so even
  orphans are reaped and counted), and the steady-state figure (between the first start and the last
  end) with its split by role, sampled from ``/proc/<pid>/stat``.
* slot-idle time between attempts: with S slots the (S+k)-th start is the refill of the slot freed by the
  k-th end (records' ``slot`` names an attempt, not a slot, so slots are reconstructed this way), p50/p99.
* attempt start rate beside Roo's own controller (it staggers starts 5 s apart: 0.2 starts/s).

A measurement, not a test: it exits 0 whether or not targets are met; 1 means the benchmark failed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.hosts.farm import FORKED_FARM_NAME  # noqa: E402
from orchestrator.results.records import AttemptRecord, read_records  # noqa: E402

TARGET_RATIO = {32: 1.25, 8: 1.1}
ROO_START_RATE = 0.2  # Roo's eval controller: one task start every 5 s when concurrency > 1
SAMPLE_INTERVAL = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIM_SEED = 0


def script_duration_ms(d_ms: float, status_delay_ms: float) -> float:
    """The script ``duration`` whose simulated attempt lasts ``d_ms`` from StartNewTask to taskIdle.

    Mirrors ipc_bridge/simulator/agent.py for a one-turn script with ``jitter: 0`` (every attempt has a
    host seed of its own: with jitter, durations would scatter around the nominal one): before its
    completion ask the agent sleeps 0.25 (request), 0.25 (text, one chunk) and 0.1 (completion) of the
    duration; taskIdle follows after the status delay. The table shows the measured agent phase beside
    D, so a drift from this formula is visible."""
    return (d_ms - status_delay_ms) / (0.25 + 0.25 + 0.1)


ROLES = ("orchestrator", "bridge", "workers", "farm", "hosts", "other")
ORCHESTRATION = ("orchestrator", "bridge", "workers")


def make_suite(
    path: Path,
    *,
    attempts: int,
    duration_ms: float,
    status_delay_ms: float,
    process: bool,
    prelaunch: int | None = None,
) -> None:
    options: dict[str, Any] = {"time_scale": 1.0, "status_delay": status_delay_ms / 1000, "seed": SIM_SEED}
    options["engine_lags"] = False  # the orchestrator's own overhead, not the engine's start-up
    if process:
        options["process_per_host"] = True
    suite = {
        "name": "sched-bench",
        "target": {
            "kind": "simulator",
            "slots": 1,
            "launch_timeout": "60s",
            "options": options,
            **({} if prelaunch is None else {"prelaunch": prelaunch}),
        },
        "defaults": {"timeout": "60s", "retries": 0, "completion_grace": "5s"},
        "repeats": attempts,
        "cases": [
            {
                "id": "noop",
                "prompt": "Say done.",
                "simulate": {
                    "duration": f"{script_duration_ms(duration_ms, status_delay_ms):.3f}ms",
                    "text": "Done.",
                    "files": {},
                    "jitter": 0,
                },
            }
        ],
    }
    path.write_bytes(orjson.dumps(suite))  # JSON is YAML


# ------------------------------------------------------------------------------ process tree CPU


def _become_subreaper() -> bool:
    """Orphans of the run (a farm outliving its worker by a few ms) are re-parented to us: we reap them,
    so ``RUSAGE_CHILDREN`` counts every process of the tree."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER


def _stat(pid: int) -> tuple[float, list[int]] | None:
    """CPU seconds (user + system) and child pids of a live process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        children: list[int] = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                children += [int(c) for c in fh.read().split()]
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, children


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "orchestrator"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "other"
    if "--farm" in cmd or name == FORKED_FARM_NAME:  # a forked farm has its worker's command line
        return "farm"
    if " simulate" in cmd:
        return "hosts"
    if "ipc_bridge.server.cli" in cmd:
        return "bridge"
    if "spawn_main" in cmd and "resource_tracker" not in cmd:
        return "workers"
    return "other"


@dataclass
class TreeSampler:
    """Samples the CPU of every process under ``root`` (short-lived ones may be missed between samples)."""

    root: int
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _last: dict[int, float] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL)

    def sample(self) -> None:
        todo = [self.root]
        while todo:
            pid = todo.pop()
            got = _stat(pid)
            if got is None:
                continue
            cpu, children = got
            # Every time: seen between fork and exec, a child still shows its parent's command line.
            self._roles[pid] = _role(pid, self.root)
            self._last[pid] = cpu
            todo += children
        by_role = dict.fromkeys(ROLES, 0.0)
        for pid, cpu in self._last.items():  # dead processes keep their last sample
            by_role[self._roles[pid]] += cpu
        self.samples.append((time.time(), by_role))

    def at(self, t: float) -> dict[str, float]:
        """CPU by role at wall time ``t`` (linear between samples)."""
        if not self.samples:
            return dict.fromkeys(ROLES, 0.0)
        prev = self.samples[0]
        for cur in self.samples:
            if cur[0] >= t:
                span = cur[0] - prev[0]
                w = 0.0 if span <= 0 else (t - prev[0]) / span
                return {r: prev[1][r] + w * (cur[1][r] - prev[1][r]) for r in ROLES}
            prev = cur
        return dict(prev[1])


def _reap_orphans(timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                for child in _children(os.getpid()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.01)  # orphans end on their own (a farm stops once its worker is gone)


def _children(pid: int) -> list[int]:
    got = _stat(pid)
    return got[1] if got else []


# ------------------------------------------------------------------------------------ one run


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


PHASES = ("setup_s", "launch_s", "wait_s", "agent_s", "teardown_s")


def _task_start(r: AttemptRecord) -> float:
    t = r.timings
    return r.started_at.timestamp() + (t.setup_s or 0.0) + (t.launch_s or 0.0) + (t.wait_s or 0.0)


def run_once(args: argparse.Namespace, slots: int, tmp: Path) -> dict[str, Any]:
    work = tmp / f"s{slots}"
    work.mkdir()
    suite = work / "suite.yaml"
    make_suite(
        suite,
        attempts=args.attempts,
        duration_ms=args.duration_ms,
        status_delay_ms=args.status_delay_ms,
        process=args.process_per_host,
        prelaunch=args.prelaunch,
    )
    argv = [sys.executable, "-m", "orchestrator", "run", str(suite), "--slots", str(slots)]
    argv += ["--results", str(work / "results"), "--run-id", "r", "--quiet"]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(work / "run.log", "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    sampler = TreeSampler(proc.pid)
    thread = sampler.start()
    try:
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sampler.stop()
        thread.join()
        _reap_orphans()
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"orchestrate run exited {rc}: {(work / 'run.log').read_text()[-2000:]}")
    records = read_records(work / "results" / "r" / "results.jsonl")
    return analyse(args, slots, records, sampler, wall=wall, t0=t0, cpu_total=_cpu(after) - _cpu(before))


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def analyse(
    args: argparse.Namespace,
    slots: int,
    records: list[AttemptRecord],
    sampler: TreeSampler,
    *,
    wall: float,
    t0: float,
    cpu_total: float,
) -> dict[str, Any]:
    n = len(records)
    starts = sorted(r.started_at.timestamp() for r in records)
    ends = sorted(r.ended_at.timestamp() for r in records)
    makespan = ends[-1] - starts[0]
    ideal = n * args.duration_ms / 1000 / slots
    # A slot is busy while a task runs (StartNewTask to its outcome): readied attempts (prelaunch) are
    # set up and attached before their slot frees, and tear down after it is given back.
    task_starts = sorted(_task_start(r) for r in records)
    task_ends = sorted(_task_start(r) + (r.timings.agent_s or 0.0) for r in records)
    idle = sorted(max(0.0, task_starts[slots + k] - task_ends[k]) for k in range(max(0, n - slots)))
    lo, hi = sampler.at(starts[0]), sampler.at(ends[-1])
    steady = {role: (hi[role] - lo[role]) / n * 1000 for role in ROLES}
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status.value] = statuses.get(r.status.value, 0) + 1

    def phase(name: str) -> float:
        return (
            _mean([getattr(r.timings, name) for r in records if getattr(r.timings, name) is not None]) * 1000
        )

    target = TARGET_RATIO.get(slots)
    return {
        "slots": slots,
        "attempts": n,
        "duration_ms": args.duration_ms,
        "hosts": "process per host" if args.process_per_host else "farm",
        "prelaunch": "slots (default)" if args.prelaunch is None else args.prelaunch,
        "statuses": statuses,
        "makespan_s": round(makespan, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(makespan / ideal, 3),
        "target_ratio": target,
        "met": None if target is None else makespan / ideal <= target,
        "wall_s": round(wall, 3),
        "startup_s": round(starts[0] - t0, 3),
        "cpu_ms_per_attempt_all_in": round(cpu_total / n * 1000, 3),
        "cpu_ms_per_attempt_steady": round(sum(steady.values()), 3),
        "cpu_ms_per_attempt_orchestration": round(sum(steady[r] for r in ORCHESTRATION), 3),
        "cpu_bound_makespan_s": round(sum(steady.values()) * n / 1000 / (os.cpu_count() or 1), 3),
        "cpu_ms_per_attempt_steady_by_role": {k: round(v, 3) for k, v in steady.items()},
        "slot_idle_ms_p50": round(_percentile(idle, 0.5) * 1000, 2),
        "slot_idle_ms_p99": round(_percentile(idle, 0.99) * 1000, 2),
        "phases_ms_mean": {p: round(phase(p), 2) for p in PHASES},
        "start_rate_per_s": round(n / makespan, 1),
        "anchor_start_rate_per_s": ROO_START_RATE,
    }


# ---------------------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"scheduling: {rows[0]['attempts']} attempts x {rows[0]['duration_ms']:g} ms, {rows[0]['hosts']}, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, prelaunch {rows[0]['prelaunch']}"
    ]

    def add(label: str, cells: list[str]) -> None:
        lines.append(f"{label:<34}" + "".join(f"{c:>26}" for c in cells))

    add("", [f"{r['slots']} slots" for r in rows])
    add("makespan (s)  [target]", [f"{r['makespan_s']:.2f} [<= {_fmt_target(r)}]" for r in rows])
    add("  ideal N x D / S (s)", [f"{r['ideal_s']:.2f}" for r in rows])
    add(
        "  ratio to ideal  [target]",
        [f"{r['ratio']:.3f}x [{_fmt_ratio(r)}] {_verdict(r)}" for r in rows],
    )
    add("  CPU floor: CPU x N / cores (s)", [f"{r['cpu_bound_makespan_s']:.2f}" for r in rows])
    add("wall of orchestrate run (s)", [f"{r['wall_s']:.2f}" for r in rows])
    add("  start-up to first attempt (s)", [f"{r['startup_s']:.2f}" for r in rows])
    add("CPU/attempt, all-in (ms)", [f"{r['cpu_ms_per_attempt_all_in']:.2f}" for r in rows])
    add("CPU/attempt, steady (ms)", [f"{r['cpu_ms_per_attempt_steady']:.2f}" for r in rows])
    add(
        "  orchestration: orch+bridge+workers", [f"{r['cpu_ms_per_attempt_orchestration']:.2f}" for r in rows]
    )
    for role in ROLES:
        add(f"  {role}", [f"{r['cpu_ms_per_attempt_steady_by_role'][role]:.2f}" for r in rows])
    add(
        "slot idle p50 / p99 (ms)",
        [f"{r['slot_idle_ms_p50']:.1f} / {r['slot_idle_ms_p99']:.1f}" for r in rows],
    )
    for p in PHASES:
        suffix = f" [D = {rows[0]['duration_ms']:g}]" if p == "agent_s" else ""
        add(f"  mean {p[:-2]} (ms){suffix}", [f"{r['phases_ms_mean'][p]:.1f}" for r in rows])
    add(
        "start rate (/s)  [Roo anchor 0.2]",
        [f"{r['start_rate_per_s']:.1f} ({r['start_rate_per_s'] / ROO_START_RATE:.0f}x)" for r in rows],
    )
    add("statuses", [",".join(f"{k}={v}" for k, v in r["statuses"].items()) for r in rows])
    return "\n".join(lines)


def _fmt_target(r: dict[str, Any]) -> str:
    return "-" if r["target_ratio"] is None else f"{r['ideal_s'] * r['target_ratio']:.2f}"


def _fmt_ratio(r: dict[str, Any]) -> str:
    return "-" if r["target_ratio"] is None else f"<= {r['target_ratio']:.2f}x"


def _verdict(r: dict[str, Any]) -> str:
    return "" if r["met"] is None else ("PASS" if r["met"] else "MISS")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--duration-ms", type=float, default=100.0)
    parser.add_argument("--slots", type=int, nargs="+", default=[32, 8])
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: the orchestrator's)"
    )
    parser.add_argument(
        "--status-delay-ms",
        type=float,
        default=10.0,
        help="taskIdle lag behind the completion ask (part of D)",
    )
    parser.add_argument("--process-per-host", action="store_true", help="one simulator process per attempt")
    parser.add_argument(
        "--prelaunch",
        type=int,
        default=None,
        help="target.prelaunch: attempts readied ahead (default: the simulator's, = slots)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep suites, logs and results in this directory"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per slot count instead of the table"
    )
    args = parser.parse_args()
    if args.attempts < 1 or args.duration_ms <= args.status_delay_ms:
        parser.error("--attempts must be >= 1 and --duration-ms > --status-delay-ms")
    _become_subreaper()
    tmp = Path(tempfile.mkdtemp(prefix="sched-", dir=args.keep))
    rows = []
    try:
        for slots in args.slots:
            rows.append(run_once(args, slots, tmp))
    except (RuntimeError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
    else:
        print(table(rows))
        if args.keep is not None:
            print(f"runs kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
