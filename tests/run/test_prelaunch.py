"""``target.prelaunch``: attempts are readied (workspace, host, attach) while every slot is busy, and never
more than ``slots`` tasks run at once."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.results.records import AttemptRecord, read_records
from orchestrator.run.pool import share
from tests.runs import orchestrate

# Timings are rounded to 0.1 ms and summed: a task that starts as the one before it ends may seem to
# overlap it by a fraction of a millisecond.
ROUNDING = 0.001


def _suite(tmp: Path, target: str, repeats: int, duration: str = "150ms") -> Path:
    path = tmp / "suite.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: t
            target: {target}
            defaults: {{timeout: 30s, retries: 0}}
            repeats: {repeats}
            cases:
              - id: a
                prompt: Say done.
                simulate: {{duration: {duration}, text: Done., files: {{}}}}
            """
        )
    )
    return path


def _run(tmp: Path, target: str, repeats: int, *args: str, duration: str = "150ms") -> list[AttemptRecord]:
    suite = _suite(tmp, target, repeats, duration)
    results = tmp / "results"
    done = orchestrate("run", str(suite), "--results", str(results), "--run-id", "r", "--quiet", *args)
    assert done.returncode == 0, done.stderr
    records = read_records(results / "r" / "results.jsonl")
    assert len(records) == repeats
    assert {r.status.value for r in records} == {"completed"}
    return records


def _task(r: AttemptRecord) -> tuple[float, float]:
    """When the record's task held its slot: StartNewTask to its outcome."""
    t = r.timings
    start = r.started_at.timestamp() + (t.setup_s or 0) + (t.launch_s or 0) + (t.wait_s or 0)
    return start + ROUNDING, start + (t.agent_s or 0) - ROUNDING


def _life(r: AttemptRecord) -> tuple[float, float]:
    return _ts(r.started_at), _ts(r.ended_at)


def _ts(d: datetime) -> float:
    return d.timestamp()


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in edges:  # at equal times the end (-1) sorts first
        now += step
        most = max(most, now)
    return most


@pytest.mark.timeout(120)
def test_readied_attempts_wait_for_a_slot(tmp_path: Path) -> None:
    target = "{kind: simulator, slots: 2, prelaunch: 2, options: {time_scale: 1.0, status_delay: 0.02, engine_lags: false}}"
    # Tasks long enough that readying the next attempts ends within them, however busy the machine.
    records = _run(tmp_path, target, 6, duration="1500ms")
    assert _most_at_once([_task(r) for r in records]) <= 2
    # Attempts were alive (readied) beyond the two slots, and some had to wait for a slot.
    assert _most_at_once([_life(r) for r in records]) > 2
    assert any((r.timings.wait_s or 0) > 0 for r in records)
    # Every task waited for nothing but its slot: it was set up and attached when it got one.
    assert all(r.timings.launch_s is not None and r.timings.wait_s is not None for r in records)


@pytest.mark.timeout(120)
def test_a_readied_attempt_takes_any_free_slot_not_only_its_workers(tmp_path: Path) -> None:
    # Worker 0 gets "long" and then a readied short one; worker 1 the other short ones. Slots are the
    # run's, not a worker's: when worker 1's task ends, the short one readied on worker 0 starts,
    # beside "long", instead of waiting for it.
    path = tmp_path / "suite.yaml"
    short = "simulate: {duration: 150ms, text: Done., files: {}}"
    path.write_text(
        textwrap.dedent(
            """
            name: t
            target: {kind: simulator, slots: 2, prelaunch: 2, options: {time_scale: 1.0, status_delay: 0.02, engine_lags: false}}
            defaults: {timeout: 30s, retries: 0}
            cases:
              - {id: long, prompt: x, simulate: {duration: 4s, text: Done., files: {}}}
            """
        )
        + "".join(f"  - {{id: s{i}, prompt: x, {short}}}\n" for i in range(4))
    )
    results = tmp_path / "results"
    done = orchestrate(
        "run", str(path), "--results", str(results), "--run-id", "r", "--quiet", "--workers", "2"
    )
    assert done.returncode == 0, done.stderr
    records = read_records(results / "r" / "results.jsonl")
    assert {r.status.value for r in records} == {"completed"} and len(records) == 5
    assert _most_at_once([_task(r) for r in records]) <= 2
    (long,) = [r for r in records if r.case_id == "long"]
    shorts = [r for r in records if r is not long]
    assert any(_worker(r) == _worker(long) for r in shorts)  # the case this test is about happened
    assert all(_task(r)[1] < _task(long)[1] for r in shorts)


def _worker(r: AttemptRecord) -> str:
    assert r.slot is not None
    return r.slot.split("-")[0]  # slots are named w<worker>-<n>


@pytest.mark.timeout(120)
def test_without_prelaunch_an_attempt_starts_only_when_one_ended(tmp_path: Path) -> None:
    target = "{kind: simulator, slots: 2, prelaunch: 0, options: {time_scale: 1.0, status_delay: 0.02, engine_lags: false}}"
    records = _run(tmp_path, target, 5)
    assert _most_at_once([_life(r) for r in records]) <= 2


@pytest.mark.parametrize(("total", "parts"), [(8, 2), (3, 2), (1, 1), (7, 3), (0, 2), (2, 5)])
def test_shares_add_up_and_differ_by_at_most_one(total: int, parts: int) -> None:
    shares = [share(total, parts, i) for i in range(parts)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


@pytest.mark.timeout(120)
def test_a_spent_budget_holds_back_readied_attempts_without_records(tmp_path: Path) -> None:
    # One slot, two readied ahead, 0.5 per attempt against 0.9: the first two spend it; the third was
    # handed the slot as the second's task ended (the overshoot the docs warn of); the fourth, readied
    # meanwhile, is held back and leaves no record; it and the fifth count as skipped.
    path = tmp_path / "suite.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: t
            target: {kind: simulator, slots: 1, prelaunch: 2, options: {time_scale: 1.0, status_delay: 0.02, engine_lags: false}}
            defaults: {timeout: 30s, retries: 0}
            budget: {max_cost_usd: 0.9}
            repeats: 5
            cases:
              - {id: a, prompt: x, simulate: {duration: 300ms, cost: 0.5, text: Done., files: {}}}
            """
        )
    )
    results = tmp_path / "results"
    done = orchestrate("run", str(path), "--results", str(results), "--run-id", "r", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["stop_reason"] == "budget"
    records = read_records(results / "r" / "results.jsonl")
    assert [r.status.value for r in records] == ["completed"] * 3
    assert summary["skipped_budget"] == 2
