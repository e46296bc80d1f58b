#!/usr/bin/env python
"""Scale curves and memory of ``orchestrate run`` (issue 5, items 2 and 4).

    .venv/bin/python benchmarks/scale.py [--quick] [--slot-attempts N] [--attempts 100 1000 10000]
        [--slots 1 4 16 64] [--fixed-slots 32] [--duration-ms 100] [--keep DIR] [--json]

Every run is one ``python -m orchestrator run`` of N simulated attempts of D ms each (one case, no check
command, no retries, the simulator farm), started and analysed by ``scheduling.run_once``, so its
figures are computed exactly as item 1's are. Two sweeps:

* slots 1, 4, 16, 64 at a fixed number of attempts (1,000; 100 with ``--quick``);
* 100, 1,000, 10,000 attempts at 32 slots (100, 1,000 and 3,000 with ``--quick``).

Each row: makespan beside the ideal N x D / S and their ratio; CPU per attempt of the orchestration
(orchestrator + bridge + workers) in the steady state (first start to last end) and all-in (the whole
process tree, start-up and the simulator farm included); the marginal all-in cost between two runs of
the same sweep, (CPU(N2) - CPU(N1)) / (N2 - N1), which start-up cost cannot distort. Flatness is the
ratio of steady CPU per attempt between the largest and the smallest run of the attempts sweep, and
between the last and the first quarter of the largest run: a scan of results, events or queues that
grows with the run would push both above 1.

Memory (item 4): a thread samples every process under this one (``/proc``: VmRSS, VmHWM, and PSS from
``smaps_rollup``), by role. The figure is the orchestration's (orchestrator + bridge + workers +
multiprocess's resource tracker) with the simulator farm excluded, as real extension hosts would be:
the peak of the summed RSS, the same for PSS (shared pages counted once), and, for the largest run,
the peak in its first and its last quarter. Target: <= 400 MB at 32 slots, flat over the run.

A measurement, not a test: exits 0 whether or not targets are met; 1 means the benchmark failed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduling
from _common import filesystem, loadavg, memory_kb, proc_children, proc_cmdline

from orchestrator.results.records import read_records

MEMORY_TARGET_MB = 400.0
MEMORY_INTERVAL = 0.25
HOST_ROLES = ("farm", "hosts")
MEMORY_ROLES = tuple(r for r in scheduling.ROLES if r not in HOST_ROLES)
"""Orchestrator, bridge, workers and "other" (multiprocess's resource tracker): hosts excluded."""


@dataclass
class MemorySample:
    t: float
    rss_kb: dict[str, int]
    pss_kb: dict[str, int]
    cpu_s: dict[str, float]


@dataclass
class TreeMemory:
    """Samples memory and CPU of every process below this one, by role, on a thread.

    The orchestrator is this process's child running ``orchestrator run``; roles come from
    ``scheduling._role`` against it. A dead process keeps its last CPU figure and counts no memory."""

    interval: float = MEMORY_INTERVAL
    samples: list[MemorySample] = field(default_factory=list)
    hwm_kb: dict[int, tuple[str, int]] = field(default_factory=dict)
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        roots = [pid for pid in proc_children(os.getpid()) if "orchestrator run" in proc_cmdline(pid)]
        if not roots:
            return
        root = roots[0]
        rss = dict.fromkeys(scheduling.ROLES, 0)
        pss = dict.fromkeys(scheduling.ROLES, 0)
        todo = [root]
        while todo:
            pid = todo.pop()
            got = scheduling._stat(pid)
            if got is None:
                continue
            cpu, children = got
            todo += children
            role = scheduling._role(pid, root)
            self._cpu[pid] = (role, cpu)
            # PSS walks the page tables: only for the processes the figure is about.
            mem = memory_kb(pid, pss=role not in HOST_ROLES)
            if mem is None:
                continue
            rss[role] += mem["rss"]
            pss[role] += mem["pss"]
            self.hwm_kb[pid] = (role, max(mem["hwm"], self.hwm_kb.get(pid, ("", 0))[1]))
        cpu_by_role = dict.fromkeys(scheduling.ROLES, 0.0)
        for role, seconds in self._cpu.values():
            cpu_by_role[role] += seconds
        self.samples.append(MemorySample(time.time(), rss, pss, cpu_by_role))

    # ------------------------------------------------------------------------------- figures

    def peak_mb(self, lo: float = float("-inf"), hi: float = float("inf")) -> dict[str, float]:
        """Peak of the orchestration's summed RSS and PSS over the samples taken in [lo, hi]."""
        window = [s for s in self.samples if lo <= s.t <= hi]
        if not window:
            return {"rss": float("nan"), "pss": float("nan")}
        return {
            "rss": max(sum(s.rss_kb[r] for r in MEMORY_ROLES) for s in window) / 1024,
            "pss": max(sum(s.pss_kb[r] for r in MEMORY_ROLES) for s in window) / 1024,
        }

    def peak_by_role_mb(self, lo: float = float("-inf"), hi: float = float("inf")) -> dict[str, float]:
        window = [s for s in self.samples if lo <= s.t <= hi]
        return {role: max((s.rss_kb[role] for s in window), default=0) / 1024 for role in scheduling.ROLES}

    def hwm_sum_mb(self) -> float:
        """Sum of each orchestration process's own peak RSS (an upper bound on the peak of the sum)."""
        return sum(kb for role, kb in self.hwm_kb.values() if role in MEMORY_ROLES) / 1024

    def orchestration_cpu_at(self, t: float) -> float:
        """CPU seconds of the orchestration roles at wall time ``t`` (linear between samples)."""
        points = [(s.t, sum(s.cpu_s[r] for r in scheduling.ORCHESTRATION)) for s in self.samples]
        if not points:
            return float("nan")
        prev = points[0]
        for cur in points:
            if cur[0] >= t:
                span = cur[0] - prev[0]
                w = 0.0 if span <= 0 else (t - prev[0]) / span
                return prev[1] + w * (cur[1] - prev[1])
            prev = cur
        return prev[1]


# ------------------------------------------------------------------------------------ one run


def run_row(opts: argparse.Namespace, sweep: str, slots: int, attempts: int, tmp: Path) -> dict[str, Any]:
    work = tmp / f"{sweep}-s{slots}-n{attempts}"
    work.mkdir()
    args = argparse.Namespace(
        attempts=attempts,
        duration_ms=opts.duration_ms,
        status_delay_ms=opts.status_delay_ms,
        process_per_host=False,
        workers=opts.workers,
        prelaunch=None,  # the simulator's default: one readied attempt per slot
    )
    memory = TreeMemory()
    memory.start()
    try:
        row = scheduling.run_once(args, slots, work)
    finally:
        memory.stop()
    records = read_records(work / f"s{slots}" / "results" / "r" / "results.jsonl")
    starts = sorted(r.started_at.timestamp() for r in records)
    ends = sorted(r.ended_at.timestamp() for r in records)
    first, last = starts[0], ends[-1]
    peak = memory.peak_mb(first, last)
    row |= {
        "sweep": sweep,
        "rss_peak_mb": round(peak["rss"], 1),
        "pss_peak_mb": round(peak["pss"], 1),
        "rss_hwm_sum_mb": round(memory.hwm_sum_mb(), 1),
        "rss_peak_by_role_mb": {k: round(v, 1) for k, v in memory.peak_by_role_mb().items()},
        "quarters": quarters(memory, ends, first, last),
    }
    return row


def quarters(memory: TreeMemory, ends: list[float], first: float, last: float) -> list[dict[str, Any]]:
    """Per quarter of [first start, last end]: attempts ended, orchestration CPU per attempt, peaks."""
    out = []
    q = (last - first) / 4
    for k in range(4):
        lo, hi = first + k * q, first + (k + 1) * q
        ended = sum(1 for e in ends if lo < e <= hi)  # every end is > first, the first start
        cpu = memory.orchestration_cpu_at(hi) - memory.orchestration_cpu_at(lo)
        peak = memory.peak_mb(lo, hi)
        out.append(
            {
                "ended": ended,
                "cpu_ms_per_attempt_orchestration": round(cpu / ended * 1000, 3) if ended else None,
                "rss_peak_mb": round(peak["rss"], 1),
                "pss_peak_mb": round(peak["pss"], 1),
                "rss_peak_by_role_mb": {
                    k: round(v, 1) for k, v in memory.peak_by_role_mb(lo, hi).items() if k not in HOST_ROLES
                },
            }
        )
    return out


# ---------------------------------------------------------------------------------------- output


def marginal(rows: list[dict[str, Any]]) -> list[float | None]:
    """All-in CPU per extra attempt between consecutive rows of the attempts sweep (ms)."""
    out: list[float | None] = [None]
    for a, b in itertools.pairwise(rows):
        cpu_a = a["cpu_ms_per_attempt_all_in"] * a["attempts"]
        cpu_b = b["cpu_ms_per_attempt_all_in"] * b["attempts"]
        out.append(round((cpu_b - cpu_a) / (b["attempts"] - a["attempts"]), 3))
    return out


def table(opts: argparse.Namespace, rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = [
        f"scale: simulated attempts of {opts.duration_ms:g} ms, simulator farm, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, load before {summary['load_before']}, results on {summary['results_fs']}"
    ]
    head = (
        f"{'sweep':<9}{'slots':>6}{'attempts':>9}{'makespan s':>11}{'ideal s':>9}{'ratio':>7}"
        f"{'CPU ms/att':>11}{'all-in':>8}{'marginal':>9}{'idle p50/p99 ms':>17}{'start/s':>8}"
        f"{'RSS MB':>8}{'PSS MB':>8}"
    )
    lines.append(head)
    lines.append(
        f"{'':<9}{'':>6}{'':>9}{'':>11}{'N x D / S':>9}{'':>7}{'orch':>11}{'tree':>8}{'tree':>9}"
        f"{'':>17}{'':>8}{'peak':>8}{'peak':>8}"
    )
    for r in rows:
        m = r.get("marginal_ms")
        lines.append(
            f"{r['sweep']:<9}{r['slots']:>6}{r['attempts']:>9,}{r['makespan_s']:>11.2f}{r['ideal_s']:>9.2f}"
            f"{r['ratio']:>7.2f}{r['cpu_ms_per_attempt_orchestration']:>11.2f}"
            f"{r['cpu_ms_per_attempt_all_in']:>8.2f}{'-' if m is None else f'{m:.2f}':>9}"
            f"{r['slot_idle_ms_p50']:>8.1f} /{r['slot_idle_ms_p99']:>7.1f}{r['start_rate_per_s']:>8.1f}"
            f"{r['rss_peak_mb']:>8.0f}{r['pss_peak_mb']:>8.0f}"
        )
    lines.append(
        "statuses: " + "; ".join(f"{r['sweep']} {r['slots']}/{r['attempts']}: {r['statuses']}" for r in rows)
    )
    lines.append("")
    flat = summary["flatness"]
    lines.append(
        f"flatness, steady orchestration CPU/attempt: {flat['largest_attempts']:,} vs {flat['smallest_attempts']:,} "
        f"attempts = {flat['runs_ratio']:.2f}x; last vs first quarter of the {flat['largest_attempts']:,}-attempt "
        f"run = {flat['quarter_ratio']:.2f}x (ideal 1.00)"
    )
    big = summary["largest"]
    lines.append(
        "largest run by quarter (ended, CPU ms/att orch, RSS peak MB, PSS peak MB): "
        + "  ".join(
            f"Q{k + 1} {q['ended']} {q['cpu_ms_per_attempt_orchestration']} {q['rss_peak_mb']:.0f} {q['pss_peak_mb']:.0f}"
            for k, q in enumerate(big["quarters"])
        )
    )
    mem = summary["memory"]
    verdict = "PASS" if mem["rss_peak_mb"] <= MEMORY_TARGET_MB else "MISS"
    lines.append(
        f"memory at {mem['slots']} slots (orchestrator + bridge + workers, hosts excluded): peak RSS "
        f"{mem['rss_peak_mb']:.0f} MB (PSS {mem['pss_peak_mb']:.0f} MB, sum of per-process peaks "
        f"{mem['rss_hwm_sum_mb']:.0f} MB) [target <= {MEMORY_TARGET_MB:.0f} MB] {verdict}; by role "
        + ", ".join(f"{k} {v:.0f}" for k, v in mem["by_role_mb"].items() if v)
    )
    return "\n".join(lines)


def summarize(opts: argparse.Namespace, rows: list[dict[str, Any]], load_before: Any) -> dict[str, Any]:
    sweep = [r for r in rows if r["sweep"] == "attempts"] or rows
    small = min(sweep, key=lambda r: r["attempts"])
    large = max(sweep, key=lambda r: r["attempts"])
    q = large["quarters"]
    q1, q4 = q[0]["cpu_ms_per_attempt_orchestration"], q[-1]["cpu_ms_per_attempt_orchestration"]
    at_fixed = [r for r in rows if r["slots"] == opts.fixed_slots] or rows
    worst = max(at_fixed, key=lambda r: r["rss_peak_mb"])
    return {
        "load_before": load_before,
        "results_fs": opts.results_fs,
        "flatness": {
            "smallest_attempts": small["attempts"],
            "largest_attempts": large["attempts"],
            "runs_ratio": round(
                large["cpu_ms_per_attempt_orchestration"] / small["cpu_ms_per_attempt_orchestration"], 3
            ),
            "quarter_ratio": round(q4 / q1, 3) if q1 and q4 else float("nan"),
        },
        "largest": {"attempts": large["attempts"], "quarters": q},
        "memory": {
            "slots": worst["slots"],
            "attempts": worst["attempts"],
            "rss_peak_mb": worst["rss_peak_mb"],
            "pss_peak_mb": worst["pss_peak_mb"],
            "rss_hwm_sum_mb": worst["rss_hwm_sum_mb"],
            "by_role_mb": worst["rss_peak_by_role_mb"],
            "target_mb": MEMORY_TARGET_MB,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sweeps: about 1-2 minutes")
    parser.add_argument("--slots", type=int, nargs="*", default=None, help="slot sweep (default 1 4 16 64)")
    parser.add_argument("--slot-attempts", type=int, default=None, help="attempts per slot-sweep run")
    parser.add_argument("--attempts", type=int, nargs="*", default=None, help="attempts sweep")
    parser.add_argument("--fixed-slots", type=int, default=32, help="slots of the attempts sweep")
    parser.add_argument("--duration-ms", type=float, default=100.0)
    parser.add_argument("--status-delay-ms", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep suites, logs and results here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the runs' temp dir (results.jsonl, transcripts) goes, e.g. /dev/shm to take fsync "
        "out of the run (default: the system temp dir)",
    )
    parser.add_argument("--json", action="store_true", help="rows and summary as JSON lines")
    opts = parser.parse_args()
    slot_sweep = [1, 4, 16, 64] if opts.slots is None else opts.slots
    slot_attempts = opts.slot_attempts or (100 if opts.quick else 1000)
    attempt_sweep = opts.attempts or ([100, 1000, 3000] if opts.quick else [100, 1000, 10_000])
    if not attempt_sweep or min([*attempt_sweep, slot_attempts]) < 1:
        parser.error("attempts must be >= 1")
    scheduling._become_subreaper()
    opts.results_fs = filesystem(opts.keep or opts.workdir or Path(tempfile.gettempdir()))
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="scale-", dir=opts.keep or opts.workdir))
    rows: list[dict[str, Any]] = []
    try:
        for slots in slot_sweep:
            rows.append(run_row(opts, "slots", slots, slot_attempts, tmp))
        sweep_rows = []
        for attempts in sorted(attempt_sweep):
            sweep_rows.append(run_row(opts, "attempts", opts.fixed_slots, attempts, tmp))
        for r, m in zip(sweep_rows, marginal(sweep_rows), strict=True):
            r["marginal_ms"] = m
        rows += sweep_rows
    except (RuntimeError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if opts.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(opts, rows, load_before)
    if opts.json:
        for row in rows:
            print(orjson.dumps(row).decode())
        print(orjson.dumps({"summary": summary}).decode())
    else:
        print(table(opts, rows, summary))
        if opts.keep is not None:
            print(f"runs kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
