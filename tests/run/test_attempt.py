"""AttemptRunner in-process: a fake bridge client replays recorded hosts on a virtual clock (no sleeps,
no subprocesses), and every way an attempt ends comes out as its one record and transcript."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import ConnectFailed
from ipc_bridge.roo.events import event_route
from orchestrator.results.records import AttemptRecord
from orchestrator.run.attempt import AttemptRunner, SlotGate
from orchestrator.run.jobs import Job, JobResult, WorkerConfig
from orchestrator.run.slot_events import AttemptBridge, is_partial
from orchestrator.status import Metrics, Status
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan
from tests.run.fake_bridge import FakeBridge, HostScript
from tests.run.virtual_clock import run_virtual


def _the_real_client_fits(client: BridgeClient) -> AttemptBridge:
    return client  # what mypy would refuse if BridgeClient stopped being an AttemptBridge


def socket_job(
    tmp: Path, limits: str = "", case: str = "{id: a, prompt: Say done.}"
) -> tuple[Job, WorkerConfig]:
    """The job of a one-case suite (``case``, YAML) on a socket target, its socket leased, and the
    worker's configuration, working in ``tmp``/work."""
    (tmp / "host.sock").touch()
    suite = tmp / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""\
            name: t
            target: {{kind: socket, sockets: [host.sock]}}
            defaults: {{retries: 1{limits}}}
            cases: [{case}]
            """
        )
    )
    loaded = load_suite(suite)
    job = Job(build_plan(loaded).attempts[0], number=1, socket=str(tmp / "host.sock"))
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    config = WorkerConfig(
        run_id="r",
        connection_file="",
        runtime_dir=str(work),
        work_dir=str(work),
        target=loaded.target,
        results_dir=str(tmp / "results"),
    )
    return job, config


def run_job(
    tmp: Path,
    fake: FakeBridge,
    limits: str = "",
    *,
    during: Callable[[FakeBridge, asyncio.Task[JobResult]], None] | None = None,
    at: float = 0.0,
    gate: SlotGate | None = None,
) -> JobResult:
    """One job against ``fake`` on a socket target (a leased host: nothing is launched); ``during`` is
    called ``at`` seconds after the run began, with the fake and the run's task."""
    job, config = socket_job(tmp, limits)
    work = Path(config.work_dir)

    async def main() -> JobResult:
        runner = AttemptRunner(fake, config, 1, gate=gate)
        task = asyncio.ensure_future(runner.run(job, "ticket"))
        if during is not None:
            asyncio.get_running_loop().call_later(at, during, fake, task)
        try:
            return await task
        finally:
            await runner.close()

    result = run_virtual(main())
    assert list(work.iterdir()) == []  # the workspace is gone, whatever happened
    return result


def attempt(
    tmp: Path, fake: FakeBridge, limits: str = "", **kwargs: Any
) -> tuple[AttemptRecord, list[dict[str, Any]]]:
    """:func:`run_job`'s record and transcript."""
    result = run_job(tmp, fake, limits, **kwargs)
    return AttemptRecord.model_validate(result.record), result.transcript


def task_created(script: HostScript) -> str:
    return next(raw["payload"][0] for _, raw in script.after_start if raw["eventName"] == "taskCreated")


# -------------------------------------------------------------------------------------- outcomes


def test_completion_keeps_every_event_but_the_partial_ones_as_received(tmp_path: Path) -> None:
    script = HostScript.recorded("long-stream-3.52.1.jsonl")
    fake = FakeBridge(script)
    record, transcript = attempt(tmp_path, fake)
    assert (record.status, record.passed, record.final) == (Status.COMPLETED, True, True)
    assert record.task_id == task_created(script)
    assert fake.names() == ["attach", "StartNewTask", "detach"]  # a leased host is not closed
    sent = [raw for _, raw in script.after_start]
    kept = [raw for raw in sent if not is_partial(raw)]
    assert record.metrics.partial_updates == len(sent) - len(kept) > 200
    # The dicts the bridge relayed, in order, nothing re-serialised; partial updates never left the worker.
    assert [row["event"] for row in transcript] == kept
    assert all(row["event"] is raw for row, raw in zip(transcript, kept, strict=True))
    assert [row["seq"] for row in transcript] == sorted(row["seq"] for row in transcript)
    assert {row["dir"] for row in transcript} == {"in"}
    idle = next(t for t, raw in script.after_start if raw["eventName"] == "taskIdle")
    assert record.timings.agent_s == pytest.approx(idle, abs=1e-3)  # on the loop's (virtual) clock


def test_the_root_is_the_one_the_reply_names_not_an_older_task_the_slot_replays(tmp_path: Path) -> None:
    script = HostScript.recorded("start-while-streaming-3.52.1.jsonl")
    older = next(raw["payload"][0] for raw in script.history if raw["eventName"] == "taskCreated")
    record, _ = attempt(tmp_path, FakeBridge(script))
    assert record.status is Status.COMPLETED
    assert record.task_id == task_created(script) != older
    assert record.metrics.task_ids == [record.task_id]


def test_timeout_then_a_cancel_the_host_answers(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("cancel-3.52.1.jsonl"))
    record, transcript = attempt(tmp_path, fake, ", timeout: 2s")
    assert (record.status, record.reason) == (Status.TIMEOUT, "no outcome within 2 s")
    assert (record.error_class, record.error, record.final) == (None, None, True)
    (t_start, _), (t_cancel, _) = [c for c in fake.commands if c[1] in ("StartNewTask", "CancelTask")]
    assert t_cancel - t_start == pytest.approx(2.0)
    assert transcript[-1]["event"]["eventName"] == "taskAborted"  # the answer, kept


def test_ask_timeout_is_stuck(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("followup-3.52.1.jsonl"))
    record, _ = attempt(tmp_path, fake, ", ask_timeout: 1s")
    assert record.status is Status.STUCK
    assert record.reason == "the root task waited 1 s on an unanswered ask: followup"
    assert "CancelTask" in fake.names() and record.error is None


def test_idle_timeout_is_stuck(tmp_path: Path) -> None:
    script = HostScript.recorded("followup-3.52.1.jsonl")
    record, _ = attempt(tmp_path, FakeBridge(script), ", idle_timeout: 1500ms")
    assert (record.status, record.reason) == (Status.STUCK, "no event from the task for 1.5 s")
    times = [t for t, _ in script.after_start]
    quiet = next(t for t, later in itertools.pairwise(times) if later - t > 1.5)  # the first long silence
    answer = script.after_cancel[0][0]
    assert record.timings.agent_s == pytest.approx(quiet + 1.5 + answer, abs=1e-3)


def test_api_retries_past_the_limit_are_an_api_error_and_retried(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("api-error-3.52.1.jsonl"))
    record, _ = attempt(tmp_path, fake, ", api_retry_limit: 1")
    assert record.status is Status.API_ERROR
    assert record.reason.startswith("the model API failed 2 times in a row")
    assert (record.error_class, record.final) == ("infra", False)
    assert record.metrics.api_retries == 2
    assert "CancelTask" in fake.names()


# --------------------------------------------------------------------------------- the machinery


def test_a_host_that_stops_answering_is_unresponsive(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl", frozen_after=0.5))
    record, _ = attempt(tmp_path, fake, ", timeout: 2s, cancel_timeout: 1s")
    assert (record.status, record.reason) == (Status.INFRA_ERROR, "extension host unresponsive")
    assert record.error == "timeout, then no event within 1s of CancelTask"
    assert (record.error_class, record.final) == ("infra", False)
    assert record.timings.agent_s == pytest.approx(3.0)
    assert fake.names() == ["attach", "StartNewTask", "CancelTask", "detach"]


def test_a_host_whose_connection_drops_is_disconnected(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl", down_after=0.5))
    record, _ = attempt(tmp_path, fake)
    assert (record.status, record.reason, record.error_class) == (
        Status.INFRA_ERROR,
        "extension host disconnected",
        "infra",
    )


def test_bridge_restart_mid_task_loses_the_stream_at_once(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("long-stream-3.52.1.jsonl"))
    record, _ = attempt(tmp_path, fake, during=lambda fake, _: fake.restart(), at=0.5)
    assert record.status is Status.INFRA_ERROR
    assert record.reason == "lost the event stream: bridge restarted (session s1 -> s2)"
    assert record.timings.agent_s == pytest.approx(0.5)


def test_cancelled_by_the_orchestrator_stops_the_task(tmp_path: Path) -> None:
    fake = FakeBridge(HostScript.recorded("long-stream-3.52.1.jsonl"))
    record, transcript = attempt(tmp_path, fake, during=lambda _, task: task.cancel(), at=0.5)
    assert (record.status, record.reason, record.error_class) == (
        Status.CANCELLED,
        "cancelled by the orchestrator",
        None,
    )
    assert fake.names() == ["attach", "StartNewTask", "CancelTask", "detach"]
    assert record.timings.agent_s == pytest.approx(0.5)
    assert all(event_route(row["event"])[1] == record.task_id for row in transcript[1:])


def test_events_that_predate_the_cancel_are_no_answer_to_it(tmp_path: Path) -> None:
    """The host decides the outcome (api_req_failed), says one more thing at once and freezes: what it
    said was in the stream before CancelTask went out, so the host still let CancelTask go unanswered."""

    def message(ts: int, kind: str, name: str) -> dict[str, Any]:
        body = {"ts": ts, "type": kind, kind: name, "text": "500 Internal Server Error"}
        return {"eventName": "message", "payload": [{"taskId": "r", "action": "created", "message": body}]}

    script = HostScript(
        after_start=[
            (0.01, {"eventName": "taskCreated", "payload": ["r"]}),
            (0.5, message(1, "ask", "api_req_failed")),
            (0.5, message(2, "say", "error")),
        ],
        frozen_after=0.6,
    )
    record, transcript = attempt(tmp_path, FakeBridge(script), ", cancel_timeout: 2s")
    assert (record.status, record.reason) == (Status.INFRA_ERROR, "extension host unresponsive")
    assert record.error == "api_error, then no event within 2s of CancelTask"
    assert [row["event"] for row in transcript] == [raw for _, raw in script.after_start]


class Gate:
    """The run's slots as a worker sees them: a go after ``wait`` seconds, or a hold."""

    def __init__(self, go: bool, wait: float = 0.0) -> None:
        self.go, self.wait = go, wait
        self.calls: list[tuple[str, str]] = []

    async def acquire(self, ticket: str) -> bool:
        self.calls.append(("acquire", ticket))
        await asyncio.sleep(self.wait)  # on the virtual clock: the slot frees this much later
        return self.go

    def release(self, ticket: str) -> None:
        self.calls.append(("release", ticket))


def test_a_readied_attempt_starts_its_task_only_when_given_its_slot_and_gives_it_back(tmp_path: Path) -> None:
    gate = Gate(go=True, wait=7.0)
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl"))
    record, transcript = attempt(tmp_path, fake, gate=gate)
    assert record.status is Status.COMPLETED
    (attached, _), (started, _) = fake.commands[:2]
    assert started - attached == pytest.approx(7.0) and record.timings.wait_s == pytest.approx(7.0)
    assert gate.calls == [("acquire", "ticket"), ("release", "ticket")]
    assert transcript[0]["t"] < 0.1  # subscribed while waiting; the task's clock starts at StartNewTask


def test_a_readied_attempt_held_back_ends_unstarted_without_a_record(tmp_path: Path) -> None:
    gate = Gate(go=False)
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl"))
    result = run_job(tmp_path, fake, gate=gate)
    assert (result.unstarted, result.record, result.transcript) == (True, {}, [])
    assert fake.names() == ["attach", "detach"]
    assert gate.calls == [("acquire", "ticket")]


# ------------------------------------------------------------------ requests to the bridge per attempt


@pytest.mark.parametrize("readied", [False, True], ids=["at-once", "readied"])
def test_an_attempt_takes_one_request_to_start_and_the_tracker_follows_its_reply(
    tmp_path: Path, readied: bool
) -> None:
    """At once: attach and StartNewTask in one request (attach_start). Readied ahead, the attach comes
    first and the StartNewTask when the run grants a slot. Either way the reply's task id is the root."""
    script = HostScript.recorded("start-while-streaming-3.52.1.jsonl")
    fake = FakeBridge(script)
    record, _ = attempt(tmp_path, fake, gate=Gate(go=True) if readied else None)
    assert record.status is Status.COMPLETED and record.task_id == task_created(script)
    starts = ["attach", "task_command"] if readied else ["attach_start"]
    assert fake.requests == [*starts, "detach"]  # a leased host is not closed: detach alone
    assert fake.names() == ["attach", "StartNewTask", "detach"]


@pytest.mark.parametrize("readied", [False, True], ids=["at-once", "readied"])
def test_a_host_gone_before_its_task_starts_fails_the_start(tmp_path: Path, readied: bool) -> None:
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl", down_before_start=True))
    record, _ = attempt(tmp_path, fake, gate=Gate(go=True) if readied else None)
    assert (record.status, record.error_class, record.task_id) == (Status.INFRA_ERROR, "infra", None)
    assert (
        record.reason
        == "StartNewTask failed: task_command: slot w1-1 down: connection closed by the extension host"
    )
    assert fake.names() == ["attach", "detach"]  # attached, never started, detached


@pytest.mark.parametrize("readied", [False, True], ids=["at-once", "readied"])
def test_a_start_without_a_task_created_fails_the_start(tmp_path: Path, readied: bool) -> None:
    script = HostScript.recorded("complete-3.52.1.jsonl")
    script.after_start = [(t, raw) for t, raw in script.after_start if raw["eventName"] != "taskCreated"]
    fake = FakeBridge(script)
    record, _ = attempt(tmp_path, fake, ", start_timeout: 2s", gate=Gate(go=True) if readied else None)
    assert (record.status, record.task_id) == (Status.INFRA_ERROR, None)
    assert record.reason == "StartNewTask failed: task_command: no taskCreated within 2 s"
    assert record.timings.agent_s == pytest.approx(2.0)
    assert fake.names() == ["attach", "StartNewTask", "detach"]


@pytest.mark.parametrize("readied", [False, True], ids=["at-once", "readied"])
def test_a_refused_attach_is_a_host_that_did_not_come_up(tmp_path: Path, readied: bool) -> None:
    refused = ConnectFailed("connect_failed", "host.sock: no Ack within 30 s", "attach")
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl", refuse_attach=refused))
    gate = Gate(go=True) if readied else None
    record, transcript = attempt(tmp_path, fake, gate=gate)
    assert (record.status, record.reason) == (Status.INFRA_ERROR, "extension host did not come up")
    assert (record.error, record.task_id, transcript) == (str(refused), None, [])
    assert record.timings.agent_s is None and record.metrics == Metrics()  # no task: nothing measured
    assert fake.requests == ["attach_start" if not readied else "attach", "detach"]
    assert gate is None or gate.calls == []  # never readied: no slot asked for


@pytest.mark.parametrize("readied", [False, True], ids=["at-once", "readied"])
def test_bridge_restart_before_the_start_reply_fails_the_start(tmp_path: Path, readied: bool) -> None:
    script = HostScript.recorded("complete-3.52.1.jsonl")
    script.after_start = [(t + 5, raw) for t, raw in script.after_start]  # a slow host
    fake = FakeBridge(script)
    gate = Gate(go=True) if readied else None
    record, _ = attempt(tmp_path, fake, during=lambda fake, _: fake.restart(), at=1.0, gate=gate)
    assert (record.status, record.error_class, record.task_id) == (Status.INFRA_ERROR, "infra", None)
    assert record.reason == "StartNewTask failed: bridge restarted (session s1 -> s2)"
