#!/usr/bin/env python
"""Simulator fidelity (issue #14): each real-engine scenario recorded through ``orchestrate run``
(``tests/fixtures/recordings/cli-runs``: write and complete, wrong write, delegation, followup, API 500,
timeout, failing tool; Roo CLI 3.52.1 and 3.50.4) is played on the simulator with the matching engine
setting, and compared per task role.

    .venv/bin/python benchmarks/simulator_fidelity.py [--verbose] [--time-scale 0.05]

Each recorded try is played with its own script (``Scenario.tries``: where the engine raced, the try's
``usage_at`` and durations). Per scenario, engine and recorded try it prints the in-order similarity of the per-role event sequences
(difflib ratio, 1.00 = equal; runs of repeated updates merged, see ``ipc_bridge.simulator.replay``) and the
record fields that differ (simulated != recorded). ``--verbose`` adds the sequence diffs.

A measurement, not a test: exits 0 whatever the figures; 1 means the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ipc_bridge.simulator.replay import SCENARIOS, compare, diff_lines, load_events, play, recording_files

RECORDINGS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "recordings" / "cli-runs"


async def main(args: argparse.Namespace) -> int:
    ratios: list[float] = []
    for scenario in SCENARIOS:
        for engine in scenario.engines:
            files = recording_files(RECORDINGS, scenario.name, engine)
            if not files:
                continue
            for path in files:
                simulated = await play(
                    scenario, engine, path, time_scale=args.time_scale, status_delay=args.status_delay
                )
                recorded = load_events(path)
                result = compare(simulated, recorded)
                ratios.append(result.overall)
                roles = " ".join(f"{r}={v:.2f}" for r, v in result.similarity.items())
                diffs = ", ".join(f"{k}: {s!r} != {r!r}" for k, (s, r) in result.field_diffs.items()) or "-"
                print(
                    f"{scenario.name:12} {engine}  {path.stem:14} {result.overall:.2f}  [{roles}]  fields: {diffs}"
                )
                if args.verbose:
                    for line in diff_lines(simulated, recorded):
                        print("    " + line)
    equal = sum(r == 1.0 for r in ratios)
    print(f"pairs: {len(ratios)}  equal sequences: {equal}  mean similarity: {sum(ratios) / len(ratios):.3f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--status-delay", type=float, default=0.1)
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except Exception as exc:  # a failed measurement reports and exits 1
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        sys.exit(1)
