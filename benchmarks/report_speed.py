"""How fast a big run loads: ``load()`` into a DataFrame and ``orchestrate report`` on 100,000 attempts.

::

    .venv/bin/python benchmarks/report_speed.py [--attempts 100000] [--write-attempts 1000] [--keep DIR]

Records are built through :class:`orchestrator.results.store.AttemptRecord` (so the lines cannot drift from the
model) and written with orjson straight to results.jsonl, as :class:`ResultsWriter` would write them
but without its per-line fsync, which would make the set-up take minutes. The targets are the
issue's: load <= 2 s, report <= 2 s. ``load()`` is timed twice: parsing results.jsonl (no cache yet), then
from results.parquet, the columnar cache a run's writer leaves at its end (:mod:`orchestrator.results.columnar`),
whose one-off cost at the end of the run is timed too; the two frames are checked to be equal.

Then the writer's own cost per attempt, with its fsyncs (``--write-attempts``, default 1,000): the record
serialised alone (the anchor), ``ResultsWriter.append`` and ``write_transcript``, on the filesystem of
the run directory (printed, since fsync costs differ by orders of magnitude between filesystems).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import filesystem

from orchestrator.results.columnar import CACHE, write_cache
from orchestrator.results.records import RESULTS, AttemptRecord, CheckResult, Timings, read_records
from orchestrator.results.store import ResultsWriter, load
from orchestrator.status import Metrics, Status, ToolCount, ToolFailure

TARGET_S = 2.0
MODELS = ("sonnet", "gpt-5", "gemini-pro", "qwen-coder", "deepseek")
TAGS = ("python", "js", "go", "rust", "easy", "medium", "hard")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PASS_TAIL = "".join(f"test_case_{i} PASSED\n" for i in range(12)) + "12 passed in 0.31s\n"
FAIL_TAIL = (
    "".join(f"test_case_{i} FAILED - AssertionError: expected {i} got {i + 1}\n" for i in range(20))
    + "E   assert 'One for you, one for me.' == 'One for Bob, one for me.'\n" * 5
    + "20 failed in 0.52s\n"
)


def make_record(
    run_id: str, case: int, model: str, repeat: int, attempt: int, doomed: bool, rng: random.Random
) -> AttemptRecord:
    roll = rng.random()
    if doomed:
        # A model API that keeps failing: retried twice (the suite default), then final.
        status, final, passed = Status.API_ERROR, attempt > 2, None
    elif attempt == 1 and roll < 0.02:
        status, final, passed = Status.INFRA_ERROR, False, None
    elif roll < 0.55:
        status, final, passed = Status.COMPLETED, True, True
    elif roll < 0.85:
        status, final, passed = Status.COMPLETED, True, False
    elif roll < 0.95:
        status, final, passed = Status.TIMEOUT, True, False
    else:
        status, final, passed = Status.ABORTED, True, False
    duration = rng.lognormvariate(3.5, 0.6)
    started = T0 + timedelta(seconds=case * 7 + repeat)
    check = None
    if passed is not None:
        check = CheckResult(
            passed=passed,
            exit_code=0 if passed else 1,
            duration=rng.uniform(0.3, 2.0),
            timed_out=False,
            output_tail=PASS_TAIL if passed else FAIL_TAIL,
        )
    tools = {
        name: ToolCount(attempts=rng.randint(1, 6), failures=rng.randint(0, 1))
        for name in ("read_file", "apply_diff", "write_to_file", "execute_command")[: rng.randint(1, 4)]
    }
    failures = [ToolFailure(task_id=f"task-{case}-{repeat}", tool="apply_diff", error="no match found")]
    return AttemptRecord(
        run_id=run_id,
        case_id=f"case-{case:04d}",
        model_id=model,
        repeat=repeat,
        config_hash="0123456789abcdef",
        attempt=attempt,
        final=final,
        status=status,
        passed=passed,
        reason="root task completed"
        if status is Status.COMPLETED
        else f"{status.value} after {duration:.0f}s",
        error_class="infra" if status.is_infra else None,
        error="extension host exited with code 1" if status.is_infra else None,
        task_id=f"task-{case}-{repeat}-{attempt}",
        slot=f"slot-{case % 32}",
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        duration_s=duration,
        timings=Timings(setup_s=0.2, launch_s=1.5, agent_s=duration - 3, check_s=1.0, teardown_s=0.3),
        metrics=Metrics(
            tokens_in=rng.randint(5_000, 200_000),
            tokens_out=rng.randint(500, 20_000),
            cache_reads=rng.randint(0, 100_000),
            cache_writes=rng.randint(0, 20_000),
            context_tokens=rng.randint(5_000, 60_000),
            cost_usd=rng.uniform(0.001, 0.5),
            tool_usage=tools,
            tool_failures=failures if rng.random() < 0.3 else [],
            errors=[],
            subtasks=rng.randint(0, 2),
            task_ids=[f"task-{case}-{repeat}-{attempt}"],
            messages=rng.randint(10, 80),
            partial_updates=rng.randint(50, 800),
            events=rng.randint(20, 200),
            api_requests=rng.randint(1, 15),
            time_to_first_event_s=rng.uniform(0.05, 1.5),
            completion="Implemented two_fer; all tests pass." if passed else None,
        ),
        check=check,
        tags=[TAGS[case % 4], TAGS[4 + case % 3]],
        events_file=f"events/case-{case:04d}__{model}__{repeat}__{attempt}.jsonl",
    )


def generate(run_dir: Path, attempts: int, seed: int = 1) -> int:
    """Write a run of ``attempts`` lines (retried attempts included); returns the final-record count."""
    run_id = run_dir.name
    ResultsWriter.create(
        run_dir, {"run_id": run_id, "suite_name": "bench", "config_hash": "0123456789abcdef"}
    ).close()
    rng = random.Random(seed)
    finals = 0
    with open(run_dir / RESULTS, "wb") as out:
        written = 0
        case = 0
        while written < attempts:
            for model in MODELS:
                for repeat in range(4):
                    attempt = 1
                    doomed = rng.random() < 0.005
                    while written < attempts:
                        record = make_record(run_id, case, model, repeat, attempt, doomed, rng)
                        out.write(orjson.dumps(record.model_dump(mode="json")) + b"\n")
                        written += 1
                        if record.final:
                            finals += 1
                            break
                        attempt += 1
            case += 1
    return finals


def write_cost(parent: Path, attempts: int) -> dict[str, float]:
    """What the run's one writer spends per attempt (issue 5, item 6), in ms per attempt: the record
    serialised alone (``model_dump`` + redaction + orjson, the anchor), ``ResultsWriter.append`` (that
    plus one write and an fsync of results.jsonl), and ``write_transcript`` of a 60-row transcript
    (temp file, fsync, rename, fsync of the directory), on the filesystem of ``parent``."""
    run_dir = parent / "write-cost"
    writer = ResultsWriter.create(
        run_dir, {"run_id": run_dir.name, "suite_name": "bench", "config_hash": "0123456789abcdef"}
    )
    rng = random.Random(2)
    records = [
        make_record(run_dir.name, i, MODELS[i % len(MODELS)], 0, 1, False, rng) for i in range(attempts)
    ]
    rows = [
        {
            "t": k * 0.05,
            "dir": "in",
            "seq": k + 1,
            "event": {"eventName": "taskStarted", "payload": [f"t{k}"]},
        }
        for k in range(60)
    ]
    redact = writer._redact  # the writer's own redactor: the anchor serialises exactly what append writes

    def per_attempt(fn: Callable[[int], object]) -> dict[str, float]:
        samples = []
        for i in range(attempts):
            start = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        return {
            "mean_ms": sum(samples) / attempts,
            "p50_ms": samples[attempts // 2],
            "p99_ms": samples[min(attempts - 1, int(attempts * 0.99))],
        }

    try:
        out = {
            "serialise": per_attempt(lambda i: orjson.dumps(redact(records[i].model_dump(mode="json")))),
            "append": per_attempt(lambda i: writer.append(records[i])),
            "transcript": per_attempt(lambda i: writer.write_transcript(records[i].key, 1, rows)),
        }
    finally:
        writer.close()
    return {f"{k}_{stat}": round(v, 3) for k, figures in out.items() for stat, v in figures.items()}


def timed(label: str, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:<52} {elapsed:6.2f} s")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="Write the run here and keep it (default: a temp dir).")
    parser.add_argument(
        "--write-attempts", type=int, default=1000, help="records appended to time the writer (0: skip)"
    )
    args = parser.parse_args()

    from orchestrator.results.records import read_rows
    from orchestrator.results.summary import summarize

    parent = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-speed-"))
    run_dir = parent / "bench-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        start = time.perf_counter()
        finals = generate(run_dir, args.attempts)
        size = (run_dir / RESULTS).stat().st_size
        print(
            f"generated {args.attempts} attempts ({finals} final) in {time.perf_counter() - start:.1f} s: "
            f"{run_dir / RESULTS} ({size / 1e6:.0f} MB)"
        )
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("timings (best of 3 for in-process figures; the command includes interpreter start-up):")
        t_load = t_cached = t_write = None
        try:
            import pandas  # type: ignore[import-untyped]

            t_load = min(
                timed("load() -> DataFrame, from results.jsonl (no cache)", lambda: load(run_dir))
                for _ in range(3)
            )
            t_write = min(
                timed("run end: results.parquet written (write_cache)", lambda: write_cache(run_dir))
                for _ in range(3)
            )
            if (run_dir / CACHE).is_file():
                print(f"  ({CACHE}: {(run_dir / CACHE).stat().st_size / 1e6:.1f} MB)")
                t_cached = min(
                    timed("load() -> DataFrame, from results.parquet", lambda: load(run_dir))
                    for _ in range(3)
                )
                for all_attempts in (False, True):
                    cached = load(run_dir, all_attempts=all_attempts)
                    (run_dir / CACHE).rename(run_dir / "hidden")
                    try:
                        pandas.testing.assert_frame_equal(cached, load(run_dir, all_attempts=all_attempts))
                    finally:
                        (run_dir / "hidden").rename(run_dir / CACHE)
                print(
                    "  frames from results.parquet and from results.jsonl: equal (all_attempts False, True)"
                )
            else:
                t_write = None
                print(f"  write_cache() wrote no {CACHE} (pyarrow missing? see the log)")
        except ImportError:
            print("  load() -> DataFrame: pandas or pyarrow is not installed (pip install '.[notebook]')")
        min(
            timed("read_records() (pydantic validation)", lambda: read_records(run_dir / RESULTS))
            for _ in range(3)
        )
        t_rows = min(
            timed("report: read_rows() (the one reader, flat rows)", lambda: read_rows(run_dir / RESULTS))
            for _ in range(3)
        )
        rows = read_rows(run_dir / RESULTS)
        min(timed("report: summarize() on the rows", lambda: summarize(rows)) for _ in range(3))
        command = [sys.executable, "-m", "orchestrator", "report", str(run_dir)]
        t_cmd = min(
            timed(
                "`orchestrate report RUN` (subprocess)",
                lambda: subprocess.run(command, check=True, capture_output=True),
            )
            for _ in range(3)
        )
        print("figures vs targets:")

        def verdict(label: str, figure: float) -> None:
            ok = "ok" if figure <= TARGET_S else "MISSED"
            print(f"  {label:<36} {figure:6.2f} s  target <= {TARGET_S:.0f} s  {ok}")

        if t_load is not None:
            verdict("load(), from results.jsonl", t_load)
        if t_cached is not None:
            verdict("load(), from results.parquet", t_cached)
        verdict("orchestrate report", t_cmd)
        if t_write is not None:
            print(f"  {'results.parquet at the run end':<36} {t_write:6.2f} s  (once per run, no target)")
        print(f"  (report's read alone: {t_rows:.2f} s)")
        if args.write_attempts > 0:
            cost = write_cost(parent, args.write_attempts)
            print(
                f"results writer, ms per attempt over {args.write_attempts} records "
                f"({filesystem(parent)}), mean / p50 / p99:"
            )
            for label, key in (
                ("record serialised only (anchor: no I/O)", "serialise"),
                ("ResultsWriter.append: + write + fsync", "append"),
                ("write_transcript (60 rows): fsync, rename, dir fsync", "transcript"),
            ):
                print(
                    f"  {label:<52} {cost[key + '_mean_ms']:6.2f} / {cost[key + '_p50_ms']:.2f} / "
                    f"{cost[key + '_p99_ms']:.2f}"
                )
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        print(output)
        print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
