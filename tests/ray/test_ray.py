"""``orchestrate run --ray`` on a real two-node Ray cluster started on this machine.

Each node of :class:`ray.cluster_utils.Cluster` is its own raylet with its own ``roo_slots``; the run's
node actors start their own bridges and simulated hosts there. Everything Ray starts lives below a
private temp directory and uses loopback addresses only; the module checks that no Ray process is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hosts import owned
from orchestrator.results.records import AttemptRecord, read_records
from orchestrator.run.executor import Finished, Lost
from orchestrator.run.jobs import Job, JobResult, WorkerConfig
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan
from tests.runs import alive, cmdline, descendants, poll_until, run_argv

# Loopback addresses for every Ray process (Ray otherwise picks the machine's outward address), and no
# usage statistics sent anywhere. Read by Ray when it is imported, and by every driver we start.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


with _environ(RAY_ENV):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[ray]'")
    from ray.cluster_utils import Cluster
    from ray.exceptions import RayActorError

    from orchestrator.ray.events import EventFeed
    from orchestrator.ray.pool import RayPool

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = ROOT / "configs" / "exercises" / "python"
SLOTS_PER_NODE = 2
MB = 1024 * 1024

pytestmark = [pytest.mark.timeout(180)]


@dataclass
class RayCluster:
    cluster: Any
    head_id: str
    worker: Any
    worker_id: str
    env: dict[str, str]


def _ray_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _kill_a_node_actor() -> None:
    """SIGKILL the process of one node's actor (``ray::NodeRunner``), as a crash would: found among this
    process's descendants (the cluster's raylets are its children), never another cluster's."""
    for pid in sorted(descendants(os.getpid())):
        if cmdline(pid).startswith(b"ray::NodeRunner"):
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError("no node actor among this process's descendants")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """Head and one worker node, 1 CPU and ``roo_slots: 2`` each; the test process is a driver on the
    head (so that removing the worker never cuts the test off)."""
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live below it
    env = {**RAY_ENV, "TMPDIR": tmp}
    node_args = {
        "num_cpus": 1,
        "resources": {"roo_slots": SLOTS_PER_NODE},
        "object_store_memory": 100 * MB,
    }
    c: Any = None
    try:
        with _environ(env):
            c = Cluster(
                initialize_head=True,
                head_node_args={
                    **node_args,
                    "include_dashboard": False,
                    # A lost node is noticed in about a second, not the default fifteen.
                    "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
                },
            )
            worker = c.add_node(**node_args)
            c.wait_for_nodes()
            ray.init(address=c.address, logging_level="WARNING")
        head_id = ray.get_runtime_context().get_node_id()
        assert head_id == c.head_node.node_id
        yield RayCluster(c, head_id, worker, worker.node_id, env)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if c is not None:
            c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        assert _ray_processes(tmp) == []


def _suite(tmp: Path, *, duration: str, repeats: int, slots: int = 2 * SLOTS_PER_NODE) -> Path:
    """Three cases (a pass, a failed check, an agent that gives up), each with its own template copy."""
    for name in ("two-fer", "leap"):
        shutil.copytree(EXERCISES / name, tmp / "exercises" / name)
    text = f"""
    name: ray-t
    target: {{kind: simulator, slots: {slots}, options: {{time_scale: 0.5, status_delay: 0.1, engine_lags: false}}}}
    defaults:
      timeout: 60s
      retries: 2
      retry_backoff: 100ms
      ask_timeout: 2s
      abort_settle: 500ms
      configuration: {{apiProvider: openrouter, mode: code}}
    models:
      - {{id: m1}}
    repeats: {repeats}
    cases:
      - id: two-fer
        prompt: Implement two_fer.
        workspace: exercises/two-fer
        check: python3 -m unittest -q
        simulate:
          duration: {duration}
          files:
            two_fer.py: |
              def two_fer(name="you"):
                  return f"One for {{name}}, one for me."
      - id: leap-wrong
        prompt: Implement leap_year.
        workspace: exercises/leap
        check: python3 -m unittest -q
        simulate:
          duration: {duration}
          files: {{leap.py: "def leap_year(year):\\n    return True\\n"}}
      - id: leap-gives-up
        prompt: Implement leap_year.
        workspace: exercises/leap
        check: python3 -m unittest -q
        simulate: {{duration: {duration}, outcome: aborted}}
    """
    path = tmp / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _outcomes(records: list[AttemptRecord]) -> dict[tuple[str, str, int], tuple[str, bool | None]]:
    finals = [r for r in records if r.final]
    keys = [(r.case_id, r.model_id, r.repeat) for r in finals]
    assert len(keys) == len(set(keys)), "a key has two final records"
    return {(r.case_id, r.model_id, r.repeat): (r.status.value, r.passed) for r in finals}


class Subscriber(threading.Thread):
    """The run's one event subscriber, in this process: reads the hub until the run ends."""

    def __init__(self, run_id: str, on_event: Any = None) -> None:
        super().__init__(name="subscriber", daemon=True)
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self.on_event = on_event
        self.attached = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            feed = self._attach(deadline=time.monotonic() + 90)
            self.attached.set()
            while True:
                try:
                    batch = feed.get(timeout=1.0)
                except RayActorError:
                    return  # the run closed its hub: the stream is complete
                self.events.extend(batch)
                self.dropped = feed.dropped
                if self.on_event is not None:
                    for event in batch:
                        self.on_event(event)
        except BaseException as exc:
            self.error = exc

    def _attach(self, deadline: float) -> EventFeed:
        # The hub is created by the run's process once it has joined the cluster: nothing to wait on
        # across processes but the name itself.
        while True:
            try:
                return EventFeed.attach(self.run_id)
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _check_streams(events: list[dict[str, Any]]) -> dict[str, str]:
    """Every slot's events carry seq 1, 2, 3, ... without a gap or a repeat; returns slot -> node."""
    by_slot: dict[str, list[int]] = {}
    nodes: dict[str, str] = {}
    for e in events:
        by_slot.setdefault(e["slot"], []).append(e["seq"])
        assert nodes.setdefault(e["slot"], e["node"]) == e["node"]
    for slot, seqs in by_slot.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"slot {slot}: {seqs}"
    return nodes


def _check_diffs(run_dir: Path, records: list[AttemptRecord], local_dir: Path) -> None:
    """What each agent changed on its node reached the run directory, as a local run keeps it: the
    same files, the same text, and the viewer's attempt page shows it."""
    from orchestrator.view.app import Viewer, attempt_detail
    from orchestrator.view.runs import Sources

    local = {(r.case_id, r.repeat, r.attempt): r for r in read_records(local_dir / "results.jsonl")}
    viewer = Viewer(Sources((), (run_dir,)))
    index = viewer.index(run_dir.name)
    shown = 0
    for n, r in enumerate(records):
        if r.status.value != "completed":
            continue
        assert r.diff_file == f"events/{r.case_id}__m1__{r.repeat}__{r.attempt}.diff", r.diff_file
        text = (run_dir / r.diff_file).read_text()
        assert "+++ b/" in text
        twin = local.get((r.case_id, r.repeat, r.attempt))
        if twin is not None and twin.diff_file is not None:
            assert text == (local_dir / twin.diff_file).read_text()
        detail = attempt_detail(viewer, run_dir, n, index.record(n))
        assert detail["diff"] is not None and detail["diff"]["text"] == text
        shown += 1
    assert shown


def test_a_suite_runs_across_both_nodes_like_a_local_run(tmp_path: Path, cluster: RayCluster) -> None:
    suite = _suite(tmp_path, duration="1s", repeats=3)
    results = tmp_path / "results"
    subscriber = Subscriber("onray")
    subscriber.start()
    ray_run = subprocess.run(
        run_argv(suite, results, "onray", "--ray", cluster.cluster.address),
        capture_output=True,
        text=True,
        env={**os.environ, **cluster.env},
        timeout=150,
    )
    assert ray_run.returncode == 0, ray_run.stderr
    subscriber.join(60)
    assert not subscriber.is_alive() and subscriber.error is None, subscriber.error
    local_run = subprocess.run(run_argv(suite, results, "local"), capture_output=True, text=True, timeout=150)
    assert local_run.returncode == 0, local_run.stderr

    records = read_records(results / "onray" / "results.jsonl")
    assert {r.node for r in records} == {cluster.head_id, cluster.worker_id}
    # Same outcome, key by key, as the same suite run by local workers (and it is not a trivial one).
    local = _outcomes(read_records(results / "local" / "results.jsonl"))
    assert _outcomes(records) == local
    assert sorted(set(local.values()), key=str) == [
        ("aborted", False),
        ("completed", False),
        ("completed", True),
    ]
    assert all(r.node is None for r in read_records(results / "local" / "results.jsonl"))
    # The check ran on the node, in the workspace unpacked from the shipped template.
    assert all(r.check is not None and r.check.exit_code is not None for r in records)
    _check_diffs(results / "onray", records, results / "local")

    # The driver-side subscriber got every attempt's events, from both nodes, with the bridges' seqs.
    slot_nodes = _check_streams(subscriber.events)
    assert subscriber.dropped == 0
    assert {r.slot: r.node for r in records} == slot_nodes
    # ... the very events the attempts were graded on (the transcripts leave partial messages out).
    for r in records:
        assert r.events_file is not None
        lines = (results / "onray" / r.events_file).read_text().splitlines()
        written = {json.loads(line)["seq"] for line in lines}
        seen = {e["seq"] for e in subscriber.events if e["slot"] == r.slot and e["msg_type"] == "task_event"}
        assert written and written <= seen


@pytest.mark.timeout(330)
def test_templates_travel_with_the_jobs_and_a_dead_actor_is_replaced(
    tmp_path: Path, cluster: RayCluster
) -> None:
    """RayPool driven directly (the scheduler's side of it): the exercise templates are deleted from
    disk right after the first jobs went out, so the nodes can only have what was shipped; then one
    node's actor is killed: its jobs come back as lost, the node gets a new actor, and the retries,
    which that actor never saw a template for, pass too."""
    suite = load_suite(_suite(tmp_path, duration="500ms", repeats=2))
    attempts = build_plan(suite).attempts
    config = WorkerConfig(
        run_id="direct", connection_file="", runtime_dir="", work_dir="", target=suite.target
    )
    pool = RayPool(config, slots=suite.target.slots, address=None)  # this process's connection
    try:
        assert pool.nodes == {cluster.head_id: SLOTS_PER_NODE, cluster.worker_id: SLOTS_PER_NODE}
        jobs = {f"{a.key.slug}#1": Job(a, 1) for a in attempts}
        for job_id, job in jobs.items():
            pool.submit(job_id, job)
        assert pool.in_flight == len(jobs)
        shutil.rmtree(tmp_path / "exercises")
        _kill_a_node_actor()

        records: dict[str, dict[str, Any]] = {}
        lost: list[Lost] = []
        deadline = time.monotonic() + 90
        while pool.in_flight and time.monotonic() < deadline:
            for item in pool.poll(0.5):
                if isinstance(item, Lost):
                    lost.append(item)
                    for job_id, job in item.jobs.items():
                        pool.submit(job_id.replace("#1", "#2"), Job(job.attempt, 2))
                else:
                    assert isinstance(item, Finished)
                    assert isinstance(item.result, JobResult), item.result  # not Crashed
                    records[item.job_id] = item.result.record
        assert pool.in_flight == 0
        # One node's jobs came back lost, and only they: every other first try finished, each lost one
        # finished as its second.
        assert len(lost) == 1 and lost[0].jobs, lost
        assert set(lost[0].jobs) == {job_id for job_id in jobs if job_id not in records}
        assert {job_id.replace("#1", "#2") for job_id in lost[0].jobs} <= set(records)
        assert len(records) == len(jobs)
        for job_id, record in records.items():
            expected = {"two-fer": True, "leap-wrong": False, "leap-gives-up": False}[record["case_id"]]
            assert record["passed"] is expected, record
            assert record["attempt"] == (2 if job_id.endswith("#2") else 1)
            assert record["check"]["output_tail"].count("Ran ") == 1  # the templates' own tests ran
            assert "Ran 0 tests" not in record["check"]["output_tail"]
        # The killed actor's node came back with a new actor (found by polling the node list). A new
        # actor is a new Ray worker process with the bridge to start: on a loaded machine that took > 30 s.
        deadline = time.monotonic() + 120
        while len(pool.nodes) < 2 and time.monotonic() < deadline:
            pool.poll(0.5)
        assert pool.nodes == {cluster.head_id: SLOTS_PER_NODE, cluster.worker_id: SLOTS_PER_NODE}
        # This process is the subscriber: per-slot streams are gap-free (the killed ones cut short).
        events = pool.events(timeout=5.0, max_items=1_000_000)
        slot_nodes = _check_streams(events)
        for record in records.values():
            assert slot_nodes[record["slot"]] == record["node"]
    finally:
        pool.close()


def test_a_lost_node_s_attempts_are_retried_on_the_other(tmp_path: Path, cluster: RayCluster) -> None:
    """The worker node is removed as soon as an attempt runs there: what it held becomes an
    infrastructure error, retried on the head; every key still ends with exactly one final record."""
    # 20 s (10 s at time_scale 0.5): the node must still hold its attempt when it is removed, however
    # late a busy machine lets this process see the first event and remove it.
    suite = _suite(tmp_path, duration="20s", repeats=2)
    results = tmp_path / "results"
    on_worker = threading.Event()

    def watch(event: dict[str, Any]) -> None:
        if event["node"] == cluster.worker_id and event.get("msg_type") == "task_event":
            on_worker.set()

    subscriber = Subscriber("lose", on_event=watch)
    subscriber.start()
    # Files, not pipes: nobody reads the run's output while it runs, and a full pipe would stall it.
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            run_argv(suite, results, "lose", "--ray", cluster.cluster.address),
            stdout=out_file,
            stderr=err_file,
            env={**os.environ, **cluster.env},
        )
    try:
        deadline = time.monotonic() + 90
        while not on_worker.wait(0.5) and proc.poll() is None and time.monotonic() < deadline:
            pass
        assert on_worker.is_set(), (
            f"no attempt ran on the worker node: {subscriber.error!r} {err_path.read_text()[-3000:]}"
        )
        cluster.cluster.remove_node(cluster.worker, allow_graceful=False)
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err_path.read_text()[-3000:]
    subscriber.join(60)
    assert subscriber.error is None, subscriber.error

    records = read_records(results / "lose" / "results.jsonl")
    lost = [r for r in records if r.reason == "worker died"]
    assert lost, "no attempt was in flight on the removed node"
    assert all(not r.final and r.status.value == "infra_error" for r in lost)
    finals = {(r.case_id, r.repeat): r for r in records if r.final}
    for r in lost:
        retry = finals[r.case_id, r.repeat]
        assert retry.attempt > r.attempt and retry.node == cluster.head_id
    # Nothing recorded twice: one final record per key, attempt numbers unique per key.
    numbers = [(r.case_id, r.repeat, r.attempt) for r in records]
    assert len(numbers) == len(set(numbers))
    assert len(finals) == 3 * 2
    expected = {
        "two-fer": ("completed", True),
        "leap-wrong": ("completed", False),
        "leap-gives-up": ("aborted", False),
    }
    assert {(c, r): (f.status.value, f.passed) for (c, r), f in finals.items()} == {
        (c, r): expected[c] for c, r in finals
    }
    summary = [json.loads(line) for line in out_path.read_text().splitlines() if '"summary"' in line]
    assert summary and summary[-1]["stop_reason"] == "finished"


STANDIN = ROOT / "tests" / "faults" / "standin_code.py"


def _report(path: Path) -> dict[str, Any] | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[0]) if lines else None


def test_what_a_node_actor_killed_outright_leaves_is_ended_when_its_node_gets_a_new_one(
    tmp_path: Path, cluster: RayCluster
) -> None:
    """A node's host started detached, as ``code`` starts VS Code (tests/faults/standin_code.py), with
    a helper in a session of its own and a daemon that shed the environment (no mark) and its session:
    the node's actor is SIGKILLed; its launcher dies with it, the rest does not. The node's new actor
    (the pool's own recovery) ends every one of them as it makes its runtime directory."""
    report_path = tmp_path / "report.jsonl"
    argv = f"[{sys.executable}, {STANDIN}, --wait, -n, '{{workspace}}']"
    env = f"{{STANDIN_REPORT: '{report_path}', STANDIN_LINGER: '1', STANDIN_HELPER: '1', STANDIN_CLEARED: daemon}}"
    (tmp_path / "suite.yaml").write_text(
        textwrap.dedent(
            f"""
            name: ray-detach
            target: {{kind: command, slots: 1, close_grace: 1s, argv: {argv}, env: {env}}}
            defaults: {{timeout: 120s, retries: 0}}
            cases:
              - id: hang
                prompt: Wait.
                workspace: {EXERCISES}/leap
                simulate: {{outcome: hang}}
            """
        )
    )
    suite = load_suite(tmp_path / "suite.yaml")
    (attempt,) = build_plan(suite).attempts
    config = WorkerConfig(
        run_id="detach", connection_file="", runtime_dir="", work_dir="", target=suite.target
    )
    started: dict[int, str] = {}
    pool = RayPool(config, slots=1, address=None)
    try:
        pool.submit("hang#1", Job(attempt, 1))
        poll_until(lambda: _report(report_path) is not None, 90, "the detached app on a node")
        report = _report(report_path)
        assert report is not None
        left = [report["app"], report["host"], report["helper"], report["cleared"]]
        started = {pid: owned.start_time(pid) or "" for pid in left}
        runtime = Path(report["socket"]).parent
        actor = int((runtime / "owner").read_text().split()[0])
        assert actor in descendants(os.getpid()) and cmdline(actor).startswith(b"ray::NodeRunner")
        # Found by no mark: the node recorded it as it appeared (orchestrator.hosts.owned).
        below = owned.record_below(report["socket"])
        # The report can come before the node's first scan has written the record at all.
        poll_until(
            lambda: below.exists() and str(report["cleared"]) in below.read_text().split(),
            60,
            "the record",
        )
        os.kill(actor, signal.SIGKILL)
        lost: list[Lost] = []
        deadline = time.monotonic() + 90
        while any(alive(pid) for pid in left) and time.monotonic() < deadline:
            lost.extend(item for item in pool.poll(0.5) if isinstance(item, Lost))
        assert [pid for pid in left if alive(pid)] == []
        assert [set(item.jobs) for item in lost] == [{"hang#1"}]
        poll_until(lambda: not runtime.exists(), 30, "the dead actor's runtime directory to go too")
    finally:
        pool.close()
        for pid, start in started.items():
            if owned.start_time(pid) == start:
                os.kill(pid, signal.SIGKILL)


def test_an_unreachable_cluster_is_one_clear_error_at_once(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install '.[ray]'")
    suite = _suite(tmp_path, duration="100ms", repeats=1)
    res = subprocess.run(
        run_argv(suite, tmp_path / "r", "r", "--ray", "127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,  # ray.init alone would retry such an address for minutes
    )
    assert res.returncode == 2
    assert "nothing answers at 127.0.0.1:1" in res.stderr
    assert "Traceback" not in res.stderr
    assert read_records(tmp_path / "r" / "r" / "results.jsonl") == []
