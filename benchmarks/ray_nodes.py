#!/usr/bin/env python
"""The Ray executor on one node and on two, beside local workers (issue 6).

    .venv/bin/python benchmarks/ray_nodes.py [--attempts 24] [--duration-ms 500] [--slots-per-node 2]
        [--status-delay-ms 20] [--json]

It writes one suite of N simulated attempts of D ms each (one case, ``repeats: N``, no check, no retries:
see benchmarks/scheduling.py), starts a Ray cluster on this machine (``ray.cluster_utils.Cluster``, one
CPU and ``roo_slots: S`` per node, loopback addresses, everything below a private temp dir), and runs the
suite through the real command line four times:

* local, S slots; local, 2 x S slots (worker processes, one bridge: the reference);
* ``--ray ADDRESS`` with the head node only (S slots), then with a second node added (2 x S slots).

For each: the command's wall time, the makespan (first ``started_at`` to last ``ended_at`` of the
records) beside the ideal N x D / slots, the mean attempt duration beside D, and the overhead per
attempt: makespan x slots / N - D, i.e. the slot time each attempt costs beyond its own agent phase
(launch, teardown, dispatch and the result's way back). Start-up (wall - makespan) is Ray's ``init``,
the node actors and their bridges. On a 2-core machine the two "nodes" share the same cores: the point is
that it is correct and what each attempt costs, not a speed-up.

A measurement, not a test: it exits 0 whatever the figures are; 1 means the benchmark failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Loopback only, and nothing sent to Ray's usage statistics: read when Ray is imported.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)

from scheduling import make_suite  # noqa: E402

from orchestrator.results.records import read_records  # noqa: E402

MB = 1024 * 1024


@contextlib.contextmanager
def ray_cluster(tmp: Path, slots: int) -> Iterator[Any]:
    """A head node with ``slots`` roo_slots; Ray's files below ``tmp``; shut down on exit."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {"roo_slots": slots},
                "object_store_memory": 100 * MB,
                "include_dashboard": False,
            },
        )
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
    try:
        yield cluster
    finally:
        cluster.shutdown()


def run_suite(suite: Path, results: Path, run_id: str, env: dict[str, str], *extra: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "orchestrator", "run", str(suite), "--results", str(results)]
    argv += ["--run-id", run_id, "--quiet", *extra]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{run_id}: exit {res.returncode}: {res.stderr[-2000:]}")
    records = read_records(results / run_id / "results.jsonl")
    starts = [r.started_at.timestamp() for r in records]
    ends = [r.ended_at.timestamp() for r in records]
    return {
        "wall_s": wall,
        "makespan_s": max(ends) - min(starts),
        "attempts": len(records),
        "failed": sum(1 for r in records if r.status.value != "completed"),
        "mean_attempt_s": statistics.fmean(r.duration_s for r in records),
        "nodes": len({r.node for r in records if r.node}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=24)
    parser.add_argument("--duration-ms", type=float, default=500.0)
    parser.add_argument("--slots-per-node", type=int, default=2)
    parser.add_argument("--status-delay-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n, d, s = args.attempts, args.duration_ms / 1000, args.slots_per_node

    tmp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths live below it
    rows: list[dict[str, Any]] = []
    try:
        suite = tmp / "suite.yaml"
        make_suite(
            suite,
            attempts=n,
            duration_ms=args.duration_ms,
            status_delay_ms=args.status_delay_ms,
            process=False,
        )
        results = tmp / "results"
        env = {**os.environ, **RAY_ENV, "TMPDIR": str(tmp)}
        for slots in (s, 2 * s):
            row = run_suite(suite, results, f"local-{slots}", env, "--slots", str(slots))
            rows.append({"run": f"local, {slots} slots", "slots": slots, **row})
        with ray_cluster(tmp, s) as cluster:
            row = run_suite(suite, results, "ray-1", env, "--slots", str(s), "--ray", cluster.address)
            rows.append({"run": f"ray, 1 node x {s}", "slots": s, **row})
            saved = os.environ.get("TMPDIR")
            os.environ["TMPDIR"] = str(tmp)
            try:
                cluster.add_node(num_cpus=1, resources={"roo_slots": s}, object_store_memory=100 * MB)
                cluster.wait_for_nodes()
            finally:
                if saved is None:
                    os.environ.pop("TMPDIR", None)
                else:
                    os.environ["TMPDIR"] = saved
            row = run_suite(suite, results, "ray-2", env, "--slots", str(2 * s), "--ray", cluster.address)
            rows.append({"run": f"ray, 2 nodes x {s}", "slots": 2 * s, **row})
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for row in rows:
        ideal = n * d / row["slots"]
        row["ideal_s"] = ideal
        row["ratio"] = row["makespan_s"] / ideal
        row["overhead_per_attempt_ms"] = (row["makespan_s"] * row["slots"] / n - d) * 1000
        row["startup_s"] = row["wall_s"] - row["makespan_s"]
    if args.json:
        print(orjson.dumps({"attempts": n, "duration_ms": args.duration_ms, "rows": rows}).decode())
        return 0
    print(f"{n} attempts of {args.duration_ms:.0f} ms, {s} slots per node, {os.cpu_count()} CPUs")
    head = f"{'run':<20} {'makespan':>9} {'ideal':>7} {'ratio':>6} {'attempt':>8} {'overhead':>9} "
    print(head + f"{'start-up':>9} {'nodes':>6} {'failed':>6}")
    for r in rows:
        print(
            f"{r['run']:<20} {r['makespan_s']:>8.2f}s {r['ideal_s']:>6.2f}s {r['ratio']:>6.2f} "
            f"{r['mean_attempt_s'] * 1000:>6.0f}ms {r['overhead_per_attempt_ms']:>7.0f}ms "
            f"{r['startup_s']:>8.2f}s {r['nodes']:>6} {r['failed']:>6}"
        )
    print("overhead: slot time per attempt beyond its agent phase (makespan x slots / N - D)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
