"""How long ``orchestrate compare`` takes with its paired test (McNemar's exact test and the bootstrap
over cases, :mod:`orchestrator.stats`), whose cost grows with resamples x cases x (models + 1).

::

    .venv/bin/python benchmarks/compare_speed.py [--cases 2000] [--models 2] [--repeats 1]

Two runs of the same cases and models, with records from report_speed's generator (independent
outcomes, so B differs from A by chance), written straight to results.jsonl. Timed: ``compare_rows``
with its paired statistics, in this process (best of 3), and the ``orchestrate compare`` command
(interpreter start-up and scipy's import included).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_speed import MODELS, make_record

from orchestrator.results.compare import compare_rows
from orchestrator.results.records import MANIFEST, RESULTS, read_rows


def write_run(run_dir: Path, cases: int, models: int, repeats: int, seed: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / MANIFEST).write_bytes(orjson.dumps({"run_id": run_dir.name}))
    rng = random.Random(seed)
    with open(run_dir / RESULTS, "wb") as fh:
        for case in range(cases):
            for model in MODELS[:models]:
                for repeat in range(repeats):
                    record = make_record(run_dir.name, case, model, repeat, 1, False, rng)
                    record.final = True  # one try an attempt: the pairs are what is timed
                    fh.write(record.model_dump_json().encode() + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--models", type=int, default=2, choices=range(1, len(MODELS) + 1))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="compare-speed-"))
    try:
        a, b = tmp / "a", tmp / "b"
        write_run(a, args.cases, args.models, args.repeats, seed=1)
        write_run(b, args.cases, args.models, args.repeats, seed=2)
        rows_a, rows_b = read_rows(a / RESULTS), read_rows(b / RESULTS)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = compare_rows(rows_a, rows_b)
            best = min(best, time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "compare", str(a), str(b)], check=True, capture_output=True
        )
        command = time.perf_counter() - start
        pairs = result["tests"]["totals"]["pairs"]
        print(
            f"{args.cases} cases x {args.models} models x {args.repeats} repeats: {pairs} graded pairs in total"
        )
        print(f"  compare_rows() with the paired tests (best of 3)   {best:6.2f} s")
        print(f"  `orchestrate compare A B` (subprocess)             {command:6.2f} s")
        print(f"  total: {result['tests']['totals']['sentence']}")
    finally:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
