"""results.parquet, the columnar cache of results.jsonl: the same DataFrame as from results.jsonl, used only
while it matches results.jsonl, never a reason for a run or a load to fail."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.results.columnar import CACHE, write_cache
from orchestrator.results.records import RESULTS, AttemptRecord, CheckResult, Timings
from orchestrator.results.store import ResultsWriter, load
from orchestrator.status import Metrics, Status, ToolCount, ToolFailure
from tests.runs import ROOT, cases, orchestrate, simulator_suite

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow.parquet")
assert_frame_equal = pd.testing.assert_frame_equal

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
PLUS_2 = timezone(timedelta(hours=2))
TOOLS = ("read_file", "apply_diff", "write_to_file", "execute_command", "outil_spécial", "工具")
TEXTS = ("", "ok", "ünïcødé ✓ 💥", "line 1\nline 2\ttab", '"quoted" \\ back')


# ------------------------------------------------------------------------------------ records


def maybe(rng: random.Random, value: Any, none: float = 0.4) -> Any:
    return None if rng.random() < none else value


def varied_record(
    rng: random.Random, run_id: str, case: str, model: str, attempt: int, final: bool
) -> AttemptRecord:
    """A record with every optional field sometimes None, nested tool usage with varying keys, unicode,
    empty lists, timestamps at other offsets and with microseconds."""
    status = rng.choice(list(Status))
    passed = rng.choice((True, False, None))
    start = T0 + timedelta(
        seconds=rng.randint(0, 10**6), microseconds=rng.choice((0, rng.randint(1, 999_999)))
    )
    if rng.random() < 0.3:
        start = start.astimezone(PLUS_2)
    duration = rng.uniform(0.01, 900.0)
    check = maybe(
        rng,
        CheckResult(
            passed=bool(passed),
            exit_code=maybe(rng, rng.choice((0, 1, -9))),
            duration=rng.uniform(0.1, 5.0),
            timed_out=rng.random() < 0.2,
            output_tail=rng.choice(TEXTS),
        ),
    )
    tools = {
        name: ToolCount(attempts=rng.randint(0, 9), failures=rng.randint(0, 3))
        for name in rng.sample(TOOLS, rng.randint(0, len(TOOLS)))
    }
    return AttemptRecord(
        run_id=run_id,
        case_id=case,
        model_id=model,
        repeat=rng.randint(0, 2),
        config_hash="c0ffee" * 2,
        attempt=attempt,
        final=final,
        status=status,
        passed=passed,
        reason=rng.choice(TEXTS),
        error_class=rng.choice((None, "infra", "harness")),
        error=maybe(rng, rng.choice(TEXTS)),
        task_id=maybe(rng, f"task-{rng.randint(0, 999)}"),
        slot=maybe(rng, f"slot-{rng.randint(0, 3)}"),
        node=maybe(rng, f"node-ü{rng.randint(0, 3)}", none=0.7),
        started_at=start,
        ended_at=start + timedelta(seconds=duration),
        duration_s=duration,
        timings=Timings(**{name: maybe(rng, rng.uniform(0, 60)) for name in Timings.model_fields}),
        metrics=Metrics(
            tokens_in=rng.randint(0, 10**6),
            tokens_out=rng.randint(0, 10**5),
            cost_usd=rng.choice((0.0, rng.uniform(0, 3))),
            tool_usage=tools,
            tool_failures=[
                ToolFailure(task_id=f"t{i}", tool=rng.choice(TOOLS), error=rng.choice(TEXTS))
                for i in range(rng.choice((0, 0, 1, 2)))
            ],
            errors=[rng.choice(TEXTS) for _ in range(rng.choice((0, 0, 1, 3)))],
            subtasks=rng.randint(0, 3),
            messages=rng.randint(0, 50),
            api_retries=rng.randint(0, 2),
            time_to_first_event_s=maybe(rng, rng.uniform(0, 2)),
            completion=maybe(rng, rng.choice(TEXTS)),
        ),
        check=check,
        tags=[rng.choice(("py", "js", "ç", "难")) for _ in range(rng.choice((0, 1, 2)))],
        events_file=maybe(rng, f"events/{case}__{model}__0__{attempt}.jsonl"),
    )


def write_run(parent: Path, name: str, seed: int, keys: int, *, finals: bool = True) -> Path:
    """A run of ``keys`` keys, each tried 1-3 times through the real writer (the last try final, unless
    ``finals`` is False); no cache."""
    rng = random.Random(seed)
    writer = ResultsWriter.create(parent / name, {"run_id": name})
    with writer:
        for k in range(keys):
            tries = rng.randint(1, 3)
            for attempt in range(1, tries + 1):
                final = finals and attempt == tries
                writer.append(
                    varied_record(rng, name, f"case-{k}", rng.choice(("m1", "模型")), attempt, final)
                )
    return writer.run_dir


@contextlib.contextmanager
def caches_hidden(run_dirs: Sequence[Path]) -> Iterator[None]:
    """The caches renamed away (results.jsonl untouched): load() reads results.jsonl alone."""
    moved = [d for d in run_dirs if (d / CACHE).exists()]
    for d in moved:
        (d / CACHE).rename(d / "hidden")
    try:
        yield
    finally:
        for d in moved:
            (d / "hidden").rename(d / CACHE)


def cache_users(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The run directories whose cache load() used since the log was last cleared."""
    return {
        Path(r.args[0]).parent.name  # type: ignore[index,arg-type]
        for r in caplog.records
        if r.name == "orchestrator.results.columnar" and "using it" in r.getMessage()
    }


def snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.iterdir()}


@pytest.fixture(autouse=True)
def _debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orchestrator.results.columnar")


# ------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("all_attempts", [False, True])
def test_the_cached_frame_is_the_jsonl_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, all_attempts: bool
) -> None:
    run = write_run(tmp_path, "run-a", seed=1, keys=80)
    with caches_hidden([run]):
        expected = load(run, all_attempts=all_attempts)
    assert write_cache(run) == run / CACHE
    before = snapshot(run)
    caplog.clear()
    got = load(run, all_attempts=all_attempts)
    assert cache_users(caplog) == {"run-a"}
    assert snapshot(run) == before  # load() wrote nothing
    assert_frame_equal(got, expected)
    # the variety the equality is about is really there
    assert set(expected["status"]) == {s.value for s in Status}
    assert expected["passed"].isna().any() and expected["check_exit_code"].isna().any()
    assert any(usage == {} for usage in expected["tool_usage"]) and any(
        len(u) > 2 for u in expected["tool_usage"]
    )
    assert any(tags == [] for tags in expected["tags"])
    assert str(expected["started_at"].dtype).endswith("UTC]")
    row = got.iloc[0]
    assert isinstance(row["tool_usage"], dict) and isinstance(row["tags"], list)
    assert isinstance(row["tool_errors"], list) and isinstance(row["errors"], list)


def test_all_none_columns_odd_kinds_and_big_ints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lines no writer of ours produces, but that results.jsonl may hold: ints where floats are
    expected, a str column holding an int, an int beyond int64, every optional field None."""
    run = tmp_path / "odd"
    ResultsWriter.create(run, {}).close()
    base = {
        "run_id": "odd",
        "case_id": "c",
        "model_id": "m",
        "repeat": 0,
        "config_hash": "h",
        "attempt": 1,
        "final": True,
        "status": "completed",
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:00:01.250000+00:00",
        "duration_s": 1.25,
    }
    lines = [
        {**base, "duration_s": 2},  # no metrics, timings or check at all
        {
            **base,
            "attempt": 2,
            "duration_s": 10,
            "node": 5,
            "metrics": {"cost_usd": 1, "tokens_in": 2**63 + 5},
        },
        # not final: without it, the final rows' durations are ints only (int64, not float64)
        {
            **base,
            "attempt": 3,
            "final": False,
            "passed": None,
            "metrics": {"cost_usd": 0.5, "tool_usage": {}},
        },
    ]
    (run / RESULTS).write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    with caches_hidden([run]):
        expected = [load(run), load(run, all_attempts=True)]
    assert write_cache(run) is not None
    caplog.clear()
    assert_frame_equal(load(run), expected[0])
    assert_frame_equal(load(run, all_attempts=True), expected[1])
    assert cache_users(caplog) == {"odd"}
    kinds = {name: str(dtype) for name, dtype in expected[1].dtypes.items()}
    assert kinds["check_exit_code"] == "object"  # only None
    assert kinds["node"] == kinds["duration_s"] == kinds["cost_usd"] == "float64"
    assert str(expected[0]["duration_s"].dtype) == "int64"
    assert kinds["tokens_in"] in ("uint64", "object")


def test_no_final_record_gives_the_same_empty_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = write_run(tmp_path, "retrying", seed=3, keys=4, finals=False)
    empty = write_run(tmp_path, "empty", seed=4, keys=0)
    with caches_hidden([run, empty]):
        expected = [load(run), load(empty), load([run, empty], all_attempts=True)]
    write_cache(run)
    write_cache(empty)
    caplog.clear()
    got = [load(run), load(empty), load([run, empty], all_attempts=True)]
    assert cache_users(caplog) == {"retrying", "empty"}
    assert len(got[0]) == len(got[1]) == 0 and len(got[2]) > 0
    for a, b in zip(got, expected, strict=True):
        assert_frame_equal(a, b)


def test_a_glob_of_cached_stale_and_uncached_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cached = write_run(tmp_path, "run-1", seed=5, keys=20)
    odd = tmp_path / "run-2"  # cached too, with column kinds the first run does not have
    ResultsWriter.create(odd, {}).close()
    line = orjson.loads((cached / RESULTS).read_bytes().splitlines()[0])
    line.update(run_id="run-2", node=7, duration_s=3, final=True)
    (odd / RESULTS).write_bytes(orjson.dumps(line) + b"\n")
    uncached = write_run(tmp_path, "run-3", seed=6, keys=10)
    stale = write_run(tmp_path, "run-4", seed=7, keys=10)
    for run in (cached, odd, stale):
        write_cache(run)
    with ResultsWriter.resume(stale) as writer:  # a resumed run appends: the cache is stale
        writer.append(varied_record(random.Random(8), "run-4", "late", "m1", 1, True))
    runs = [cached, odd, uncached, stale]
    for all_attempts in (False, True):
        with caches_hidden(runs):
            expected = load(str(tmp_path / "run-*"), all_attempts=all_attempts)
        caplog.clear()
        got = load(str(tmp_path / "run-*"), all_attempts=all_attempts)
        assert cache_users(caplog) == {"run-1", "run-2"}
        assert_frame_equal(got, expected)
        assert "late" in set(got["case_id"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 2**32), min_size=1, max_size=3), keys=st.integers(0, 6))
def test_any_runs_load_the_same_with_or_without_caches(
    tmp_path_factory: Any, seeds: list[int], keys: int
) -> None:
    parent = tmp_path_factory.mktemp("runs")
    runs = [write_run(parent, f"r{i}", seed=s, keys=keys) for i, s in enumerate(seeds)]
    expected = [load(runs, all_attempts=a) for a in (False, True)]
    for run in runs[::2]:  # every other run cached
        write_cache(run)
    for a, want in zip((False, True), expected, strict=True):
        assert_frame_equal(load(runs, all_attempts=a), want)


# ---------------------------------------------------------------------------------------- stale


def test_a_resumed_run_makes_the_cache_stale_until_its_writer_rewrites_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = write_run(tmp_path, "run", seed=9, keys=6)
    write_cache(run)
    writer = ResultsWriter.resume(run)
    writer.append(varied_record(random.Random(10), "run", "new-case", "m1", 1, True))
    caplog.clear()
    frame = load(run)
    assert not cache_users(caplog) and "new-case" in set(frame["case_id"])
    writer.close()
    assert writer.write_columnar() == run / CACHE
    caplog.clear()
    assert_frame_equal(load(run), frame)
    assert cache_users(caplog) == {"run"}


def test_truncation_and_a_same_size_rewrite_make_the_cache_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = write_run(tmp_path, "run", seed=11, keys=5)
    results = run / RESULTS
    write_cache(run)
    data = results.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    results.write_bytes(data[:last])  # the last record cut away
    caplog.clear()
    assert len(load(run, all_attempts=True)) == data.count(b"\n") - 1
    assert not cache_users(caplog)

    # Same size, same mtime (restored): only the content differs, where a resume would have written.
    results.write_bytes(data)
    write_cache(run)
    st = results.stat()
    assert b'"case_id":"case-4"' in data[last:]
    results.write_bytes(data[:last] + data[last:].replace(b'"case_id":"case-4"', b'"case_id":"case-X"'))
    os.utime(results, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert results.stat().st_size == st.st_size and results.stat().st_mtime_ns == st.st_mtime_ns
    caplog.clear()
    frame = load(run, all_attempts=True)
    assert not cache_users(caplog)
    assert "case-X" in set(frame["case_id"]) and "case-4" not in set(frame["case_id"])


# ------------------------------------------------------------------------------ broken caches


def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")


def _half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(pa.table({"run_id": ["x"]}), path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [_garbage, _half, _flipped, _foreign, _empty, _directory])
def test_a_damaged_cache_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any) -> None:
    run = write_run(tmp_path, "run", seed=12, keys=30)
    expected = load(run, all_attempts=True)
    write_cache(run)
    damage(run / CACHE)
    caplog.clear()
    assert_frame_equal(load(run, all_attempts=True), expected)
    assert not cache_users(caplog)


# ---------------------------------------------------------------------------------- no cache written


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = write_run(tmp_path, "run", seed=13, keys=5)
    (run / CACHE).mkdir()  # the rename onto it fails
    with ResultsWriter.resume(run) as writer:
        assert writer.write_columnar() is None
    assert any(r.levelno == logging.WARNING and "cannot write" in r.getMessage() for r in caplog.records)
    assert (run / CACHE).is_dir() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(load(run)) == 5


def test_a_full_disk_leaves_no_cache_and_no_temp_file(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", seed=14, keys=30)
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.results.columnar import write_cache\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "print(write_cache(Path(sys.argv[1])))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "None" and "cannot write results.parquet" in res.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lock", "events", "manifest.json", RESULTS]
    assert write_cache(run) is not None and (run / CACHE).stat().st_size > 4096  # the limit did bite


def test_a_torn_or_damaged_results_file_gets_no_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = write_run(tmp_path, "run", seed=15, keys=3)
    with open(run / RESULTS, "ab") as fh:
        fh.write(b'{"torn')
    assert write_cache(run) is None and not (run / CACHE).exists()
    caplog.clear()
    assert len(load(run)) == 3
    assert any("torn last line" in r.getMessage() for r in caplog.records)  # still said, by the jsonl path


def test_without_pyarrow_no_cache_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path, "run", seed=16, keys=2)
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, name, None)
    assert write_cache(run) is None and not (run / CACHE).exists()


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.timeout(180)
def test_a_run_writes_the_cache_and_load_uses_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    suite = simulator_suite(tmp_path, cases(2))
    args = ("run", str(suite), "--results", str(tmp_path / "r"), "--quiet")
    res = orchestrate(*args, "--run-id", "r", env_extra={"ORCHESTRATE_LOG_LEVEL": "INFO"})
    assert res.returncode == 0, res.stderr
    assert "wrote results.parquet (2 rows)" in res.stderr
    run = tmp_path / "r" / "r"
    caplog.clear()
    frame = load(run, all_attempts=True)
    assert cache_users(caplog) == {"r"}
    with caches_hidden([run]):
        assert_frame_equal(frame, load(run, all_attempts=True))
    assert sorted(frame["case_id"]) == ["c0", "c1"] and frame["passed"].all()

    # A cache that cannot be written changes nothing about the run: resumed, it still exits 0.
    (run / CACHE).unlink()
    (run / CACHE).mkdir()
    again = orchestrate(*args, "--resume", "r")
    assert again.returncode == 0, again.stderr
    assert "cannot write results.parquet" in again.stderr
    assert_frame_equal(load(run, all_attempts=True), frame)
