#!/usr/bin/env python
"""Soak test of ``orchestrate run`` under injected faults (issue 4).

    .venv/bin/python benchmarks/soak.py [--attempts 2000] [--slots 32] [--crash 0.01] [--freeze 0.01]
        [--bridge-kills N] [--seed 1] [--keep DIR] [--json]

Writes a suite of N simulated attempts (a case x repeat matrix) whose simulator script carries
``chaos: {crash, freeze}``, so that about 1 % of the tries crash their host and 1 % freeze it (a host
that goes silent, as a SIGSTOPped window). It runs ``orchestrate run --json`` as a subprocess, reads its
records as they come, and SIGKILLs the bridge at seeded random points (about one kill per 100 attempts
by default; the scheduler restarts it). Meanwhile it samples the RSS of the orchestrator, the bridge and
the worker processes (not the simulator farms: they stand in for VS Code) every 0.2 s.

Then it checks, from results.jsonl:

* every attempt key has exactly one final record, its tries numbered 1..n, the final one last;
* every try's fate follows from its host seed: the simulator's chaos draw is a pure function of it
  (``chaos_outcome(host_seed(seed, key, try))``). An injected crash is an ``infra_error`` "extension host
  disconnected", an injected freeze "extension host unresponsive", and no injection a completed attempt,
  except for tries that the bridge's death cut short: a bridge-restart reason, or a host-fault reason
  when the bridge was killed during the try (or up to 5 s before it): a worker that does not know of the
  restart yet cannot tell a dead bridge from a silent host (counted and shown apart);
* some tries saw a bridge restart when the bridge was killed, and at most kills x hosts attached (slots
  running and as many readied) did;
* no try hung (took more than timeout + cancel_timeout + 20 s);
* the retries (non-final records) are exactly the records with a fault reason;
* peak RSS of orchestrator + bridge + workers grows less than 10 % from the first to the last quarter
  of the run (the gating figure of the full soak only);
* no process of the run and no runtime directory is left behind.

It prints PASS/FAIL per check and the figures, and exits 1 on any FAIL. ``tests/faults/test_soak.py``
runs the same logic on a small run.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ipc_bridge.durations import parse_duration  # noqa: E402
from ipc_bridge.simulator.script import chaos_outcome  # noqa: E402
from orchestrator.hosts.farm import FORKED_FARM_NAME  # noqa: E402
from orchestrator.hosts.simulated import host_seed  # noqa: E402
from orchestrator.results.records import AttemptRecord, read_records  # noqa: E402
from orchestrator.suite.plan import AttemptKey  # noqa: E402

CRASH_REASON = "extension host disconnected"
FREEZE_REASON = "extension host unresponsive"
BRIDGE_REASONS = ("lost the event stream", "extension host did not come up", "StartNewTask failed")
"""Reasons of the tries that a bridge restart cut short (see orchestrator/run/supervisor.py)."""
RESTART_NOTICE = timedelta(seconds=5)
"""How long after a kill a worker may still not know of the restart (the supervisor polls, the new
bridge starts: 1-2 s on a loaded 2-core machine). Until then a dead bridge looks like a silent host."""
HANG_MARGIN = 20.0
"""Seconds a try may take beyond its timeout and cancel timeout (teardown waits up to ~12 s for a
host or bridge that does not answer): more is a hang, such as a request lost with a killed bridge."""
RSS_GROWTH_TARGET = 0.10
CLK_TCK = os.sysconf("SC_CLK_TCK")
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
class Sample:
    t: float
    orchestrator: int
    bridge: int
    workers: int
    farms: int

    @property
    def total(self) -> int:
        return self.orchestrator + self.bridge + self.workers


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


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    gating_in_short_runs: bool = True
    """False for the figures that only mean something over a long run (RSS growth)."""


@dataclass
class Report:
    checks: list[Check]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self, *, short: bool = False) -> list[Check]:
        return [c for c in self.checks if not c.ok and (c.gating_in_short_runs or not short)]


# ------------------------------------------------------------------------------------ the suite


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


# ---------------------------------------------------------------------------------- processes


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children[int(fields[1])].append(int(stat_file.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> bytes:
    """The command line, and the name when it is not the command's (a farm forked by its worker)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        name = Path(f"/proc/{pid}/comm").read_bytes().strip()
    except OSError:
        return b""
    return cmd + (b" comm=" + name if name == FORKED_FARM_NAME.encode() else b"")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` (0 for a process that is gone or a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def role(cmd: bytes) -> str:
    if b"ipc_bridge.server.cli" in cmd:
        return "bridge"
    if b"--farm" in cmd or b"simulate" in cmd or FORKED_FARM_NAME.encode() in cmd:
        return "farm"
    if b"spawn_main" in cmd or b"multiprocess" in cmd:
        return "worker"
    return "other"


def bridges(root: int) -> list[int]:
    return [p for p in descendants(root) if role(cmdline(p)) == "bridge" and alive(p)]


class Sampler(threading.Thread):
    """RSS of the run's processes by role, every ``interval`` seconds, and every pid it ever saw."""

    def __init__(self, root: int, interval: float, t0: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.t0 = t0
        self.samples: list[Sample] = []
        self.seen: dict[int, bytes] = {}
        self.bridge_rss: dict[int, list[tuple[float, int, float]]] = defaultdict(list)
        """(t, RSS, CPU seconds) of each bridge process over time (a killed bridge's successor starts
        afresh)."""
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        by_role: Counter[str] = Counter()
        now = time.monotonic() - self.t0
        orchestrator = rss_bytes(self.root)
        for pid in descendants(self.root):
            cmd = self.seen.setdefault(pid, cmdline(pid))
            rss = rss_bytes(pid)
            by_role[role(cmd)] += rss
            if role(cmd) == "bridge" and rss:
                self.bridge_rss[pid].append((now, rss, cpu_seconds(pid)))
        if orchestrator:
            self.samples.append(
                Sample(
                    now,
                    orchestrator,
                    by_role["bridge"],
                    by_role["worker"],
                    by_role["farm"],
                )
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


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


# ----------------------------------------------------------------------------------- analysis


def is_bridge_reason(record: AttemptRecord) -> bool:
    return record.status.value == "infra_error" and record.reason.startswith(BRIDGE_REASONS)


def reason_kind(record: AttemptRecord) -> str:
    """The reason without its details (bridge session ids, slot names)."""
    for prefix in BRIDGE_REASONS:
        if record.reason.startswith(prefix):
            detail = record.error or record.reason
            return f"{prefix} ({'bridge restarted' if 'restarted' in detail else detail[:60]})"
    return record.reason


def injected(record: AttemptRecord, opts: SoakOptions) -> str | None:
    """The fault the simulator injected into this try: its host seed's chaos draw."""
    seed = host_seed(opts.seed, record.key, record.attempt)
    return chaos_outcome(seed, {"crash": opts.crash, "freeze": opts.freeze})


def _fate_ok(record: AttemptRecord, fault: str | None) -> bool:
    if is_bridge_reason(record):
        return True
    if fault is None:
        return record.status.value == "completed"
    want = CRASH_REASON if fault == "crash" else FREEZE_REASON
    return record.status.value == "infra_error" and record.reason == want


def bridge_killed_during(record: AttemptRecord, kills: list[Kill]) -> bool:
    """Whether the bridge died while this try ran, or shortly before it started (unnoticed yet)."""
    return any(record.started_at - RESTART_NOTICE <= k.wall <= record.ended_at for k in kills)


def misattributed(record: AttemptRecord, fault: str | None, kills: list[Kill]) -> bool:
    """A try the bridge's death cut short, recorded as the host's fault: the worker did not know of the
    restart yet when the try hit a deadline (ask, timeout) and its CancelTask went unanswered."""
    return (
        not _fate_ok(record, fault)
        and record.reason in (CRASH_REASON, FREEZE_REASON)
        and bridge_killed_during(record, kills)
    )


def _examples(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def quarters(samples: list[Sample]) -> list[dict[str, int]]:
    """Peak RSS (bytes) per quarter of the sampled run: total and per role."""
    if not samples:
        return []
    start, end = samples[0].t, samples[-1].t
    span = max(end - start, 1e-9)
    out: list[dict[str, int]] = [
        {"total": 0, "orchestrator": 0, "bridge": 0, "workers": 0, "farms": 0} for _ in range(4)
    ]
    for s in samples:
        q = min(3, int(4 * (s.t - start) / span))
        peak = out[q]
        peak["total"] = max(peak["total"], s.total)
        peak["orchestrator"] = max(peak["orchestrator"], s.orchestrator)
        peak["bridge"] = max(peak["bridge"], s.bridge)
        peak["workers"] = max(peak["workers"], s.workers)
        peak["farms"] = max(peak["farms"], s.farms)
    return out


def analyse(run: SoakRun) -> Report:
    opts = run.options
    records = run.records
    checks: list[Check] = []
    figures: dict[str, Any] = {}

    def check(name: str, ok: bool, detail: str, gating: bool = True) -> None:
        checks.append(Check(name, ok, detail, gating))

    stop = run.summary.get("stop_reason")
    check(
        "run finished",
        run.returncode == 0 and stop == "finished" and not run.timed_out,
        f"exit {run.returncode}, stop {stop!r}"
        + (", killed by the soak's time limit" if run.timed_out else ""),
    )

    by_key: dict[AttemptKey, list[AttemptRecord]] = defaultdict(list)
    for r in records:
        by_key[r.key].append(r)
    bad_keys = []
    for key, tries in by_key.items():
        numbers = [r.attempt for r in tries]
        finals = [r for r in tries if r.final]
        if numbers != list(range(1, len(tries) + 1)) or len(finals) != 1 or not tries[-1].final:
            bad_keys.append(f"{key.slug}: tries {numbers}, final {[r.final for r in tries]}")
    check(
        "one final record per attempt key",
        len(by_key) == opts.attempts and not bad_keys,
        f"{len(by_key)} keys of {opts.attempts}, {len(records)} records"
        + (f"; {_examples(bad_keys)}" if bad_keys else ""),
    )
    check(
        "every record was reported",
        run.stdout_records == len(records),
        f"{run.stdout_records} JSON lines, {len(records)} records in results.jsonl",
    )

    faults = {id(r): injected(r, opts) for r in records}
    blamed = [r for r in records if misattributed(r, faults[id(r)], run.kills)]
    wrong = [
        f"{r.key.slug}#{r.attempt}: injected {faults[id(r)]}, got {r.status.value} {r.reason!r} "
        f"({r.error}; {r.duration_s:.2f} s, {r.timings})"
        for r in records
        if not _fate_ok(r, faults[id(r)]) and r not in blamed
    ]
    n_crash = sum(1 for f in faults.values() if f == "crash")
    n_freeze = sum(1 for f in faults.values() if f == "freeze")
    reasons = Counter(reason_kind(r) for r in records if r.status.value != "completed")
    n_bridge = sum(1 for r in records if is_bridge_reason(r))
    check(
        "each try's fate follows its injected fault",
        not wrong,
        f"injected: {n_crash} crashes, {n_freeze} freezes in {len(records)} tries; "
        f"seen: {reasons.get(CRASH_REASON, 0)} disconnected, {reasons.get(FREEZE_REASON, 0)} unresponsive, "
        f"{n_bridge} bridge restart, {len(blamed)} bridge restart blamed on the host"
        + (f"; wrong: {_examples(wrong)}" if wrong else ""),
    )
    check(
        "faults were injected",
        (n_crash > 0 or opts.crash == 0) and (n_freeze > 0 or opts.freeze == 0),
        f"{n_crash} crashes, {n_freeze} freezes (a run this small may miss one: raise the rates)",
    )
    kills = len(run.kills)
    # A kill cuts short the tries attached to the bridge: the running ones and those readied ahead (the
    # simulator's default prelaunch is one per slot).
    attached = 2 * opts.slots
    check(
        "bridge restarts hit some tries, at most kills x hosts attached",
        (n_bridge > 0 if kills else n_bridge == 0)
        and n_bridge + len(blamed) <= kills * attached
        and kills == opts.kills,
        f"{kills} kills of {opts.kills} planned, {n_bridge + len(blamed)} tries cut short "
        f"(limit {kills * attached})",
    )
    limit = parse_duration(opts.timeout) + parse_duration(opts.cancel_timeout) + HANG_MARGIN
    hung = sorted(records, key=lambda r: -r.duration_s)
    check(
        "no try hung",
        not hung or hung[0].duration_s < limit,
        f"longest try {hung[0].duration_s if hung else 0:.1f} s (limit {limit:g} s)"
        + (f": {hung[0].key.slug}#{hung[0].attempt} {hung[0].reason!r} {hung[0].timings}" if hung else ""),
    )
    retries = sum(1 for r in records if not r.final)
    fault_records = sum(
        1 for r in records if r.reason in (CRASH_REASON, FREEZE_REASON) or is_bridge_reason(r)
    )
    check(
        "retries = records with a fault reason",
        retries == fault_records,
        f"{retries} retries, {fault_records} fault records",
    )

    peaks = quarters(run.samples)
    growth = math.nan
    if peaks and peaks[0]["total"]:
        growth = (peaks[3]["total"] - peaks[0]["total"]) / peaks[0]["total"]
    check(
        f"peak RSS growth first -> last quarter < {RSS_GROWTH_TARGET:.0%}",
        growth < RSS_GROWTH_TARGET,
        f"{growth:+.1%} (orchestrator + bridge + workers; {len(run.samples)} samples)"
        + (
            f"; each of the {kills} kills starts a fresh bridge: run with --bridge-kills 0 to see one "
            "bridge grow over the whole run"
            if kills
            else ""
        ),
        gating=False,
    )
    check(
        "nothing left behind",
        not run.leftover_processes and not run.leftover_dirs,
        f"processes {run.leftover_processes or 'none'}, runtime dirs {run.leftover_dirs or 'none'}",
    )

    starts = [r.started_at for r in records]
    ends = [r.ended_at for r in records]
    makespan = (max(ends) - min(starts)).total_seconds() if records else math.nan
    durations = sorted(r.duration_s for r in records if r.status.value == "completed")
    figures.update(
        attempts=opts.attempts,
        slots=opts.slots,
        records=len(records),
        retries=retries,
        injected_crash=n_crash,
        injected_freeze=n_freeze,
        bridge_kills=kills,
        bridge_restart_records=n_bridge,
        bridge_restart_blamed_on_host=len(blamed),
        reasons=dict(reasons),
        makespan_s=round(makespan, 2),
        wall_s=round(run.wall_s, 2),
        completed_duration_p50_s=durations[len(durations) // 2] if durations else None,
        completed_duration_p99_s=durations[int(len(durations) * 0.99)] if durations else None,
        rss_peak_by_quarter_mib=[{k: round(v / 2**20, 1) for k, v in q.items()} for q in peaks],
        rss_growth=None if math.isnan(growth) else round(growth, 4),
        kill_times_s=[round(k.t, 2) for k in run.kills],
        bridge_lives=[
            {
                "pid": pid,
                "from_s": round(history[0][0], 1),
                "to_s": round(history[-1][0], 1),
                "rss_first_mib": round(history[0][1] / 2**20, 1),
                "rss_last_mib": round(history[-1][1] / 2**20, 1),
                "rss_max_mib": round(max(h[1] for h in history) / 2**20, 1),
                "cpu_s": round(history[-1][2], 2),
            }
            for pid, history in sorted(run.bridge_rss.items(), key=lambda item: item[1][0][0])
        ],
    )
    return Report(checks, figures)


def print_report(report: Report, out: Any = sys.stdout) -> None:
    f = report.figures
    print(
        f"soak: {f['attempts']} attempts at {f['slots']} slots, {f['records']} records ({f['retries']} retries); "
        f"makespan {f['makespan_s']} s (wall {f['wall_s']} s); completed attempt p50 "
        f"{f['completed_duration_p50_s']} s, p99 {f['completed_duration_p99_s']} s",
        file=out,
    )
    print(
        f"faults: {f['injected_crash']} injected crashes, {f['injected_freeze']} freezes, "
        f"{f['bridge_kills']} bridge kills -> {f['bridge_restart_records']} tries cut short "
        f"(+{f['bridge_restart_blamed_on_host']} of them recorded as the host's fault); "
        f"bridge killed at {f['kill_times_s']} s",
        file=out,
    )
    for reason, n in sorted(f["reasons"].items(), key=lambda item: -item[1]):
        print(f"  {n:5d} {reason}", file=out)
    print("peak RSS per quarter, MiB (orchestrator + bridge + workers = total; farms not counted):", file=out)
    for i, q in enumerate(f["rss_peak_by_quarter_mib"], start=1):
        print(
            f"  Q{i}: total {q['total']:7.1f}  orchestrator {q['orchestrator']:6.1f}  bridge {q['bridge']:6.1f}"
            f"  workers {q['workers']:6.1f}  (farms {q['farms']:6.1f})",
            file=out,
        )
    lives = f["bridge_lives"]
    print(f"bridge processes ({len(lives)}): RSS first -> last (max) MiB over their life:", file=out)
    for life in lives:
        print(
            f"  pid {life['pid']:>7} {life['from_s']:7.1f}-{life['to_s']:7.1f} s: {life['rss_first_mib']:6.1f} -> "
            f"{life['rss_last_mib']:6.1f} ({life['rss_max_mib']:6.1f}), CPU {life['cpu_s']:5.2f} s",
            file=out,
        )
    for c in report.checks:
        print(f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}", file=out)
    out.flush()


def main(argv: list[str] | None = None) -> int:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--attempts", type=int, default=defaults.attempts)
    parser.add_argument("--slots", type=int, default=defaults.slots)
    parser.add_argument("--crash", type=float, default=defaults.crash, help="probability per try")
    parser.add_argument("--freeze", type=float, default=defaults.freeze, help="probability per try")
    parser.add_argument("--bridge-kills", type=int, help="SIGKILLs of the bridge [attempts // 100]")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--timeout", default=defaults.timeout, help="attempt timeout [2s]")
    parser.add_argument("--keep", type=Path, help="keep suite, results and logs in this directory")
    parser.add_argument("--json", action="store_true", help="print the figures and checks as JSON")
    args = parser.parse_args(argv)
    opts = dataclasses.replace(
        defaults,
        attempts=args.attempts,
        slots=args.slots,
        crash=args.crash,
        freeze=args.freeze,
        bridge_kills=args.bridge_kills,
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        keep=args.keep,
    )
    run = run_soak(opts)
    report = analyse(run)
    if args.json:
        checks = [dataclasses.asdict(c) for c in report.checks]
        print(json.dumps({"figures": report.figures, "checks": checks, "ok": report.ok}))
    else:
        print_report(report)
    if not report.ok and run.stderr_tail:
        print(f"--- orchestrate stderr (tail) ---\n{run.stderr_tail}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
