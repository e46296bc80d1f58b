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
runs the same logic on a small run. The run is ``benchmarks/soak_run.py`` (its view of the processes,
``soak_procs.py``), the checks and the report ``soak_checks.py``; this file is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: benchmarks.* is imported from the checkout

from benchmarks.soak_checks import analyse, print_report  # noqa: E402
from benchmarks.soak_run import SoakOptions, run_soak  # noqa: E402


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
