#!/usr/bin/env python
"""Start-up of the command line (issue 5, item 5): ``orchestrate --help`` and ``orchestrate run`` to the
first StartNewTask, each beside the interpreter's own start-up measured in the same run.

    .venv/bin/python benchmarks/startup.py [--help-runs 15] [--run-runs 5] [--json]

* ``orchestrate --help``: wall time of the installed console script (what a user types), from before
  ``exec`` to its exit, median and best of N. Anchors: ``python -c pass`` (the interpreter alone) and
  ``python -c "import click"`` (the one library the group needs). Target <= 0.3 s.
* ``orchestrate run`` to the first StartNewTask, two ways, each a one-attempt suite at one slot:

  - socket target (the orchestrator's own start-up: bridge, worker, attach; no host to launch): the
    host is a :class:`~ipc_bridge.simulator.SimulatorHost` served by this process; the StartNewTask's
    arrival is the ``created`` time of the host's own "command StartNewTask" log record, observed on
    the host's side of the socket. The clock starts right before the ``exec`` of ``orchestrate run``.
  - simulator farm target (the default simulator set-up, which also starts the farm process and
    opens a host in it): the worker sends StartNewTask as soon as the slot is attached, so its time is
    the record's ``started_at + setup_s + launch_s``. The socket run computes the same figure from its
    record, and the difference to the host-observed time is printed, as a check of this method.

  Target <= 1 s. Import costs (``python -X importtime``) of ``--help`` and of the ``run`` command's
  module are listed, largest first, to show where start-up goes.

A measurement, not a test: exits 0 whatever the figures; 1 means the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduling
from _common import loadavg, private_tempdir

from ipc_bridge.server.launcher import start_bridge_process
from ipc_bridge.simulator.host import SimulatorHost
from orchestrator.results.records import read_records

HELP_TARGET_S = 0.3
RUN_TARGET_S = 1.0
ORCHESTRATE = Path(sys.executable).with_name("orchestrate")
RUN_TIMEOUT = 120.0


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def timings(argv: list[str], runs: int) -> dict[str, float]:
    wall(argv)  # warm the page cache and .pyc files
    samples = [wall(argv) for _ in range(runs)]
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4)}


def import_costs(code: str, top: int) -> list[tuple[str, float]]:
    """Import time (ms) of ``code`` by top-level package: the sum of each module's own ("self") time, so
    that nested imports are not counted twice; the ``top`` largest."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    by_package: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            name = found.group(2).split(".")[0]
            by_package[name] = by_package.get(name, 0.0) + int(found.group(1)) / 1000
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


def bridge_start(tmp: Path, runs: int) -> dict[str, float]:
    """``start_bridge_process`` until it answers a heartbeat: the run's first step after its imports."""
    samples = []
    for k in range(runs + 1):
        start = time.perf_counter()
        bridge = start_bridge_process(tmp / f"bridge{k}", stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
        bridge.stop()
    samples = samples[1:]  # the first one warms the caches
    return {"median_s": round(statistics.median(samples), 4), "min_s": round(min(samples), 4)}


# ------------------------------------------------------------------------------- run to StartNewTask


class StartSeen(logging.Handler):
    """The wall time of the first "command StartNewTask" a simulated host logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at: float | None = None
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and isinstance(record.args, tuple) and record.args[:1] == ("StartNewTask",):
            self.at = record.created
            self.seen.set()


def socket_suite(path: Path, sock: Path) -> None:
    suite = {
        "name": "startup-bench",
        "target": {"kind": "socket", "sockets": [str(sock)]},
        "defaults": {"timeout": "60s", "retries": 0, "completion_grace": "5s"},
        "cases": [
            {
                "id": "noop",
                "prompt": "Say done.",
                "simulate": {"duration": "50ms", "text": "Done.", "files": {}},
            }
        ],
    }
    path.write_bytes(orjson.dumps(suite))  # JSON is YAML


def run_argv(suite: Path, results: Path) -> list[str]:
    return [str(ORCHESTRATE), "run", str(suite), "--results", str(results), "--run-id", "r", "--quiet"]


def command_sent(results: Path) -> float:
    """When the worker sent StartNewTask, from the attempt's record (wall clock)."""
    (record,) = read_records(results / "r" / "results.jsonl")
    t = record.timings
    return record.started_at.timestamp() + (t.setup_s or 0.0) + (t.launch_s or 0.0)


async def run_socket_once(tmp: Path, k: int) -> dict[str, float]:
    work = tmp / f"sock{k}"
    work.mkdir()
    sock = work / "h.sock"
    suite = work / "suite.yaml"
    socket_suite(suite, sock)
    seen = StartSeen()
    host_log = logging.getLogger("ipc_bridge.simulator.host")
    host_log.addHandler(seen)
    host_log.setLevel(logging.INFO)
    host_log.propagate = False  # its INFO lines are for the counter, not the terminal
    host = SimulatorHost(sock, work, status_delay=0.01)
    await host.start()
    try:
        t0 = time.time()
        proc = await asyncio.create_subprocess_exec(
            *run_argv(suite, work / "results"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await asyncio.wait_for(seen.seen.wait(), RUN_TIMEOUT)
            code = await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        done = time.time()
        if code != 0:
            raise RuntimeError(f"orchestrate run (socket target) exited {code}")
    finally:
        await host.stop()
        host_log.removeHandler(seen)
        host_log.propagate = True
    assert seen.at is not None
    return {
        "first_start_s": seen.at - t0,
        "record_method_error_s": command_sent(work / "results") - seen.at,
        "total_s": done - t0,
    }


def run_farm_once(tmp: Path, k: int) -> dict[str, float]:
    work = tmp / f"farm{k}"
    work.mkdir()
    suite = work / "suite.yaml"
    scheduling.make_suite(suite, attempts=1, duration_ms=100.0, status_delay_ms=10.0, process=False)
    t0 = time.time()
    subprocess.run(
        run_argv(suite, work / "results"),
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
    )
    done = time.time()
    (record,) = read_records(work / "results" / "r" / "results.jsonl")
    return {
        "first_start_s": command_sent(work / "results") - t0,
        "to_attempt_start_s": record.started_at.timestamp() - t0,
        "host_launch_s": record.timings.launch_s or 0.0,
        "total_s": done - t0,
    }


def summarize(samples: list[dict[str, float]]) -> dict[str, float]:
    return {
        f"{key}_{stat}": round(fn([s[key] for s in samples]), 4)
        for key in samples[0]
        for stat, fn in (("median", statistics.median), ("min", min), ("max", max))
    }


async def run_socket(tmp: Path, runs: int) -> dict[str, float]:
    await run_socket_once(tmp, -1)  # warm-up
    return summarize([await run_socket_once(tmp, k) for k in range(runs)])


# ---------------------------------------------------------------------------------------- output


def measure(ns: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    py = sys.executable
    out: dict[str, Any] = {"load_before": loadavg(), "python": sys.version.split()[0], "cpus": os.cpu_count()}
    out["help"] = timings([str(ORCHESTRATE), "--help"], ns.help_runs)
    out["anchor_python"] = timings([py, "-c", "pass"], ns.help_runs)
    out["anchor_click"] = timings([py, "-c", "import click"], ns.help_runs)
    out["anchor_import_run"] = timings([py, "-c", "import orchestrator.cli.run"], ns.run_runs)
    out["anchor_bridge_start"] = bridge_start(tmp, ns.run_runs)
    out["run_socket"] = asyncio.run(run_socket(tmp, ns.run_runs))
    run_farm_once(tmp, -1)  # warm-up
    out["run_farm"] = summarize([run_farm_once(tmp, k) for k in range(ns.run_runs)])
    out["imports_help"] = import_costs("import orchestrator.cli.main", ns.top)
    out["imports_run"] = import_costs("import orchestrator.cli.run", ns.top)
    out["load_after"] = loadavg()
    return out


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def print_report(ns: argparse.Namespace, r: dict[str, Any]) -> None:
    print(
        f"start-up: python {r['python']}, {r['cpus']} CPUs, load {r['load_before']} -> {r['load_after']}; "
        f"--help {ns.help_runs} runs, run {ns.run_runs} runs (median, min)"
    )
    h = r["help"]
    print(
        f"  orchestrate --help                      {h['median_s'] * 1000:7.0f} ms  (min {h['min_s'] * 1000:.0f})"
        f"  [target <= {HELP_TARGET_S * 1000:.0f} ms] {verdict(h['median_s'], HELP_TARGET_S)}"
    )
    for label, key in (("python -c pass", "anchor_python"), ('python -c "import click"', "anchor_click")):
        a = r[key]
        print(f"    anchor: {label:<30}{a['median_s'] * 1000:7.0f} ms  (min {a['min_s'] * 1000:.0f})")
    s, f = r["run_socket"], r["run_farm"]
    print(
        f"  orchestrate run -> first StartNewTask, socket target  {s['first_start_s_median'] * 1000:7.0f} ms"
        f"  (min {s['first_start_s_min'] * 1000:.0f}, max {s['first_start_s_max'] * 1000:.0f})"
        f"  [target <= {RUN_TARGET_S * 1000:.0f} ms] {verdict(s['first_start_s_median'], RUN_TARGET_S)}"
    )
    print(
        f"    observed by the host; the record-based method differs by "
        f"{s['record_method_error_s_median'] * 1000:.1f} ms (median); whole one-attempt run "
        f"{s['total_s_median']:.2f} s"
    )
    print(
        f"  orchestrate run -> first StartNewTask, simulator farm {f['first_start_s_median'] * 1000:7.0f} ms"
        f"  (min {f['first_start_s_min'] * 1000:.0f}, max {f['first_start_s_max'] * 1000:.0f})"
        f"  [target <= {RUN_TARGET_S * 1000:.0f} ms] {verdict(f['first_start_s_median'], RUN_TARGET_S)}"
    )
    print(
        f"    of which to the attempt's start {f['to_attempt_start_s_median'] * 1000:.0f} ms, farm + host "
        f"launch and attach {f['host_launch_s_median'] * 1000:.0f} ms; whole run {f['total_s_median']:.2f} s"
    )
    for label, key in (
        ('python -c "import orchestrator.cli.run"', "anchor_import_run"),
        ("start_bridge_process() to a heartbeat", "anchor_bridge_start"),
    ):
        a = r[key]
        print(f"    part of it: {label:<41}{a['median_s'] * 1000:7.0f} ms  (min {a['min_s'] * 1000:.0f})")
    for label, key in (("--help", "imports_help"), ("run (orchestrator.cli.run)", "imports_run")):
        print(f"  imports of {label}, ms by package: " + ", ".join(f"{n} {ms:.0f}" for n, ms in r[key]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--help-runs", type=int, default=15)
    parser.add_argument("--run-runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="imports listed")
    parser.add_argument("--json", action="store_true")
    ns = parser.parse_args()
    if ns.help_runs < 1 or ns.run_runs < 1:
        parser.error("--help-runs and --run-runs must be >= 1")
    if not ORCHESTRATE.exists():
        print(f"no console script at {ORCHESTRATE} (pip install -e .)", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with private_tempdir("startup-") as tmp:
        try:
            results = measure(ns, tmp)
        except (RuntimeError, OSError, subprocess.SubprocessError, asyncio.TimeoutError) as exc:
            print(f"benchmark failed: {exc!r}", file=sys.stderr)
            return 1
    if ns.json:
        print(orjson.dumps(results).decode())
    else:
        print_report(ns, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
