"""The soak's checks and figures, from a finished run's records (see benchmarks/soak.py for what each
check holds), and their report."""

from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from benchmarks.soak_procs import Sample
from benchmarks.soak_run import Kill, SoakOptions, SoakRun
from ipc_bridge.durations import parse_duration
from ipc_bridge.simulator.script import chaos_outcome
from orchestrator.hosts.simulated import host_seed
from orchestrator.results.records import AttemptRecord
from orchestrator.suite.plan import AttemptKey
from orchestrator.verdict import DISCONNECTED, UNRESPONSIVE

CRASH_REASON = DISCONNECTED
"""The reason of a try whose host crashed (its connection went down)."""
FREEZE_REASON = UNRESPONSIVE
"""The reason of a try whose host froze (CancelTask unanswered)."""
BRIDGE_REASONS = ("lost the event stream", "extension host did not come up", "StartNewTask failed")
"""Reasons of the tries that a bridge restart cut short (see orchestrator/run/supervisor.py)."""
RESTART_NOTICE = timedelta(seconds=5)
"""How long after a kill a worker may still not know of the restart (the supervisor polls, the new
bridge starts: 1-2 s on a loaded 2-core machine). Until then a dead bridge looks like a silent host."""
HANG_MARGIN = 20.0
"""Seconds a try may take beyond its timeout and cancel timeout (teardown waits up to ~12 s for a
host or bridge that does not answer): more is a hang, such as a request lost with a killed bridge."""
RSS_GROWTH_TARGET = 0.10


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
