"""The simulator against the real engine: each recorded scenario, replayed on the simulator, must give
the same events per task role.

Both sides are reduced the same way (:func:`reduce`): tasks become roles ``t0, t1, ...`` in order of first
appearance after the scenario's first command, and then

* ``lifecycle``: every event but ``message`` and ``taskTokenUsageUpdated``, in order, with its role (so
  the order *across* tasks is checked too: the old task is aborted before the new one is created, ...);
* ``messages``: per role, the ClineMessages created (``say:text``, ``ask:tool``, ...), in order. How often
  a message is updated while it streams depends on timing, its identity and order do not;
* ``usage``: per role, the lifecycle with the usage events put back and runs of them collapsed. The
  throttle's trailing edge falls a little earlier or later in a run; the events around it do not move.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.roo.events import event_route
from ipc_bridge.roo.extension import Disconnected, ExtensionConnection, connect
from ipc_bridge.roo.protocol import (
    CancelTask,
    CloseTask,
    GetCommands,
    GetModels,
    GetModes,
    ResumeTask,
    StartNewTask,
    StartNewTaskData,
)
from ipc_bridge.simulator.host import SimulatorHost
from tests.conftest import load_recording

pytestmark = pytest.mark.timeout(20)

Event = dict[str, Any]

COMPLETE = {
    "text": "I will create the file.",
    "files": {"hello.txt": "hello from stub\n"},
    "completion": "Created hello.txt",
}
RECORDING = {"3.52": "{}-3.52.1.jsonl", "3.50": "{}-3.50.4.jsonl"}
SLOW = {"outcome": "hang", "text": "thinking slowly... " * 40, "chunks": 40, "duration": "40s"}


# ------------------------------------------------------------------------------------ reduction


def reduce(events: list[Event]) -> dict[str, Any]:
    roles: dict[str, str] = {}
    lifecycle: list[tuple[str, str]] = []
    messages: dict[str, list[str]] = {}
    usage: dict[str, list[str]] = {}
    for ev in events:
        name, task = event_route(ev)
        if task is None:
            continue
        role = roles.setdefault(task, f"t{len(roles)}")
        if name == "message":
            body = ev["payload"][0]
            if body["action"] == "created":
                msg = body["message"]
                messages.setdefault(role, []).append(f"{msg['type']}:{msg.get(msg['type'])}")
            continue
        seq = usage.setdefault(role, [])
        if not (name == "taskTokenUsageUpdated" and seq and seq[-1] == name):
            seq.append(name)
        if name != "taskTokenUsageUpdated":
            lifecycle.append((role, name))
    return {"lifecycle": lifecycle, "messages": messages, "usage": usage}


def recorded(name: str) -> list[Event]:
    """The events the engine sent from the scenario's first command on."""
    rows = load_recording(name)
    first = next(i for i, r in enumerate(rows) if r["dir"] == "out")
    return [r["msg"]["data"] for r in rows[first:] if r["dir"] == "in" and r["msg"]["type"] == "TaskEvent"]


def assert_same(simulated: list[Event], recording: str, *, prefix: bool = False) -> dict[str, Any]:
    sim, rec = reduce(simulated), reduce(recorded(recording))
    if prefix:
        # the recording was cut short: it must be the beginning of what the simulator sends
        sim["lifecycle"] = sim["lifecycle"][: len(rec["lifecycle"])]
        sim["usage"] = {r: seq[: len(rec["usage"].get(r, []))] for r, seq in sim["usage"].items()}
    assert sim["lifecycle"] == rec["lifecycle"]
    assert sim["messages"] == rec["messages"]
    assert sim["usage"] == rec["usage"]
    return sim


# --------------------------------------------------------------------------------------- driver


class Session:
    """One client on a simulator host, collecting every TaskEvent it receives."""

    def __init__(self, host: SimulatorHost, conn: ExtensionConnection) -> None:
        self.host = host
        self.conn = conn
        self.events: list[Event] = []

    async def start(self, script: dict[str, Any] | None, text: str = "do the task", **config: Any) -> None:
        if script is not None:
            config["simulate"] = script
        await self.conn.send_command(StartNewTask(data=StartNewTaskData(configuration=config, text=text)))

    async def until(self, pred: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        async def loop() -> Event:
            while True:
                data = await self.conn.recv_data()
                if data.get("type") == "TaskEvent":
                    self.events.append(data["data"])
                    if pred(data["data"]):
                        return dict(data["data"])

        return await asyncio.wait_for(loop(), timeout)

    async def until_event(self, name: str, task: str | None = None, timeout: float = 5.0) -> Event:
        return await self.until(
            lambda ev: event_route(ev) == (name, task) if task else ev["eventName"] == name, timeout
        )

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def is_message(kind: str, *, partial: bool | None = None) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        if ev["eventName"] != "message":
            return False
        msg = ev["payload"][0]["message"]
        return f"{msg['type']}:{msg.get(msg['type'])}" == kind and (
            partial is None or msg.get("partial") == partial
        )

    return pred


SessionFactory = Callable[..., Awaitable[Session]]


@pytest.fixture
async def sessions(sockdir: Path) -> AsyncIterator[SessionFactory]:
    """``await sessions(engine=...)``: a fast simulator host (workspace ``sockdir``) and one client on it."""
    opened: list[Session] = []

    async def make(engine: str = "3.52") -> Session:
        sock = sockdir / f"sim{len(opened)}.sock"
        host = SimulatorHost(sock, sockdir, engine=engine, time_scale=0.05, status_delay=0.1)
        await host.start()
        opened.append(Session(host, await connect(host.socket_path, timeout=5)))
        return opened[-1]

    try:
        yield make
    finally:
        for s in opened:
            await s.conn.close()
            await s.host.stop()


@pytest.fixture
async def session(sessions: SessionFactory) -> Session:
    return await sessions()


async def hold_a_finished_task(s: Session) -> None:
    """The recorded window held a previous, finished task: make one and forget its events."""
    await s.start(COMPLETE)
    await s.until_event("taskIdle")
    s.take()


# -------------------------------------------------------------------------------------- scenarios


async def test_complete_3_52(session: Session) -> None:
    await session.start(COMPLETE, text="Create hello.txt then finish.")
    await session.until_event("taskIdle")
    events = session.take()
    assert_same(events, "complete-3.52.1.jsonl")
    assert (session.host.workspace or Path()).joinpath("hello.txt").read_text() == "hello from stub\n"
    last_usage = [e for e in events if e["eventName"] == "taskTokenUsageUpdated"][-1]
    recorded_usage = [
        e for e in recorded("complete-3.52.1.jsonl") if e["eventName"] == "taskTokenUsageUpdated"
    ]
    assert last_usage["payload"][1:] == recorded_usage[-1]["payload"][1:]  # same stub token counts


async def test_complete_3_50(sessions: SessionFactory) -> None:
    session = await sessions(engine="3.50")
    await session.start(COMPLETE, text="Create hello.txt then finish.")
    await session.until_event("taskIdle")
    events = session.take()
    assert_same(events, "complete-3.50.4.jsonl", prefix=True)  # recorded before its taskIdle
    completed = next(e for e in events if e["eventName"] == "taskCompleted")
    assert completed["payload"][3] == {"isSubtask": False}
    assert completed["payload"][2] == {
        "write_to_file": {"attempts": 1, "failures": 0},
        "attempt_completion": {"attempts": 1, "failures": 0},
    }


SUBTASK = {
    "text": "Delegating.",
    "subtasks": [
        {
            "prompt": "CHILD: create child.txt then finish",
            "duration": "0.6s",  # the recorded stub model's pace: the child ends within one usage window
            "text": "I will create the file.",
            "files": {"child.txt": "from the child\n"},
            "completion": "Created child.txt",
        }
    ],
    "completion": "Created hello.txt",
}


async def test_subtask_3_52(session: Session) -> None:
    await hold_a_finished_task(session)
    await session.start(SUBTASK, text="SUBTASK parent task")
    root = (await session.until_event("taskCreated"))["payload"][0]
    await session.until_event("taskIdle", root)
    events = session.take()
    assert_same(events, "subtask-3.52.1.jsonl")
    new_task = next(e for e in events if is_message("ask:tool")(e))["payload"][0]["message"]
    assert json.loads(new_task["text"])["tool"] == "newTask"
    assert (session.host.workspace or Path()).joinpath("child.txt").is_file()


async def test_subtask_3_50_child_reports_completion_as_subtask(sessions: SessionFactory) -> None:
    session = await sessions(engine="3.50")
    await session.start({**SUBTASK, "parent_keeps_provider": True})
    root = (await session.until_event("taskCreated"))["payload"][0]
    await session.until_event("taskIdle", root)
    completions = [e["payload"] for e in session.take() if e["eventName"] == "taskCompleted"]
    assert [(p[0] == root, p[3]) for p in completions] == [
        (False, {"isSubtask": True}),
        (True, {"isSubtask": False}),
    ]


async def test_subtask_3_50_recreated_parent_loses_its_provider(sessions: SessionFactory) -> None:
    """cli-runs subtask 3.50.4: the re-created parent asks Anthropic without a key and retries for ever."""
    session = await sessions(engine="3.50")
    await session.start(SUBTASK)
    root = (await session.until_event("taskCreated"))["payload"][0]
    await session.until_event("taskStarted", root)  # the child's
    await session.until_event("taskStarted", root)  # the re-created parent's
    retry = await session.until(is_message("say:api_req_retry_delayed", partial=False))
    assert retry["payload"][0]["message"]["text"].startswith("Could not resolve authentication method.")
    events = session.take()
    after = events[max(i for i, e in enumerate(events) if e["eventName"] == "taskStarted") :]
    request = next(e for e in after if is_message("say:api_req_started")(e))["payload"][0]["message"]
    assert json.loads(request["text"]) == {"apiProtocol": "anthropic"}
    completions = [e["payload"] for e in events if e["eventName"] == "taskCompleted"]
    assert [(p[0] == root, p[3]) for p in completions] == [(False, {"isSubtask": True})]


async def test_cancel_3_52(session: Session) -> None:
    await hold_a_finished_task(session)
    await session.start(SLOW, text="SLOW task for cancel test")
    await session.until(is_message("say:text", partial=True))
    await session.until(is_message("say:text", partial=True))
    await session.conn.send_command(CancelTask())
    await session.until_event("taskResumable")
    assert_same(session.take(), "cancel-3.52.1.jsonl")
    await session.conn.send_command(CloseTask())
    with pytest.raises(Disconnected):
        await session.until(lambda ev: False)
    await asyncio.wait_for(session.host.wait_closed(), 5)


async def test_start_while_streaming_3_52(session: Session) -> None:
    await session.start(SLOW, text="SLOW task to be replaced")
    old = (await session.until_event("taskCreated"))["payload"][0]
    await session.until(is_message("say:text", partial=True))
    await session.start(COMPLETE, text="Create hello.txt then finish.")
    new = (await session.until(lambda ev: ev["eventName"] == "taskCreated" and ev["payload"][0] != old))[
        "payload"
    ][0]
    await session.until_event("taskIdle", new)
    assert_same(session.take(), "start-while-streaming-3.52.1.jsonl")


FOLLOWUP = {
    "outcome": "followup",
    "text": "I need to ask you something.",
    "followup": {"question": "Which file name should I use?", "suggest": ["hello.txt", "greeting.txt"]},
}


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
async def test_followup(sessions: SessionFactory, engine: str) -> None:
    s = await sessions(engine=engine)
    await s.start(FOLLOWUP, text="FOLLOWUP: ask me which file name to use.")
    await s.until_event("taskInteractive")
    await s.conn.send_command(CancelTask())
    await s.until_event("taskResumable")
    events = s.take()
    assert_same(events, RECORDING[engine].format("followup"))
    question = next(e for e in events if is_message("ask:followup")(e))["payload"][0]["message"]
    recorded_question = next(e for e in recorded("followup-3.52.1.jsonl") if is_message("ask:followup")(e))
    assert question["text"] == recorded_question["payload"][0]["message"]["text"]
    assert "partial" not in question


async def test_api_error_without_auto_approval_3_52(session: Session) -> None:
    await session.start(
        {"outcome": "api_error"}, text="APIERR500 please create hello.txt", autoApprovalEnabled=False
    )
    await session.until_event("taskIdle")
    await session.conn.send_command(CancelTask())
    await session.until_event("taskResumable")
    assert_same(session.take(), "api-error-noauto-3.52.1.jsonl")


@pytest.mark.parametrize("auto", [True, False])
async def test_an_api_error_text_is_shown_as_written(session: Session, auto: bool) -> None:
    """error.text: a failure worded otherwise than the OpenAI provider's (e.g. the 3.50 lost provider's)."""
    shown = "Could not resolve authentication method.\n"
    await session.start(
        {"outcome": "api_error", "error": {"text": shown}}, text="x", autoApprovalEnabled=auto
    )
    kind = "say:api_req_retry_delayed" if auto else "ask:api_req_failed"
    ev = await session.until(
        lambda ev: is_message(kind)(ev) and not ev["payload"][0]["message"].get("partial")
    )
    assert ev["payload"][0]["message"]["text"] == shown


async def test_api_error_with_auto_approval_retries_until_cancelled(session: Session) -> None:
    await session.start({"outcome": "api_error", "error": {"first_wait": 2}}, text="APIERR500")
    first = await session.until(is_message("say:api_req_retry_delayed"))
    second = await session.until(
        lambda ev: is_message("say:api_req_retry_delayed")(ev) and ev["payload"][0]["action"] == "created"
    )
    timers = [first["payload"][0]["message"]["text"], second["payload"][0]["message"]["text"]]
    assert timers[0].endswith("<retry_timer>2</retry_timer>") and timers[1].endswith(
        "<retry_timer>4</retry_timer>"
    )
    await session.conn.send_command(CancelTask())
    await session.until_event("taskResumable")
    sim, rec = reduce(session.take()), reduce(recorded("api-error-3.52.1.jsonl"))
    assert sim["lifecycle"] == rec["lifecycle"]
    assert "taskIdle" not in [name for _, name in sim["lifecycle"]]

    def collapsed(kinds: list[str]) -> list[str]:
        return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]

    assert collapsed(sim["messages"]["t0"]) == collapsed(rec["messages"]["t0"])


async def test_resume_3_52(session: Session) -> None:
    await session.start(COMPLETE, text="Create hello.txt then finish.")
    root = (await session.until_event("taskIdle"))["payload"][0]
    await session.conn.send_command(ResumeTask(data=root))
    await session.until(lambda ev: is_message("ask:resume_completed_task")(ev))
    await session.until_event("taskIdle", root)
    assert_same(session.take(), "resume-3.52.1.jsonl")


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
async def test_tool_failure_missing_file(sessions: SessionFactory, sockdir: Path, engine: str) -> None:
    script = {
        "text": "Editing the file.",
        "tools": [{"tool": "apply_diff", "path": "does_not_exist.txt", "search": "foo", "replace": "bar"}],
        "completion": "Could not edit; file missing",
    }
    s = await sessions(engine=engine)
    await s.start(script)
    await s.until_event("taskIdle")
    events = s.take()
    assert_same(events, RECORDING[engine].format("tool-failure"))
    error = next(e for e in events if is_message("say:error")(e))["payload"][0]["message"]["text"]
    assert error.startswith(f"File does not exist at path: {sockdir / 'does_not_exist.txt'}")
    usage = [e for e in events if e["eventName"] == "taskTokenUsageUpdated"][-1]["payload"][2]
    assert usage["apply_diff"] == {"attempts": 1, "failures": 1}


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
async def test_tool_failure_no_match(sessions: SessionFactory, sockdir: Path, engine: str) -> None:
    (sockdir / "existing.txt").write_text("hello\nworld\n")
    script = {
        "text": "Editing the file.",
        "tools": [{"tool": "apply_diff", "path": "existing.txt", "search": "foo", "replace": "bar"}],
        "completion": "Could not edit; file missing",
    }
    s = await sessions(engine=engine)
    await s.start(script)
    await s.until_event("taskIdle")
    events = s.take()
    assert_same(events, RECORDING[engine].format("tool-failure-nomatch"))
    failed = next(e for e in events if e["eventName"] == "taskToolFailed")["payload"]
    assert failed[1] == "apply_diff" and "No sufficiently similar match" in failed[2]
    assert (sockdir / "existing.txt").read_text() == "hello\nworld\n"


async def test_queries_reply_to_the_requester_only(session: Session) -> None:
    listener = await connect(session.host.socket_path, timeout=5)
    try:
        replies = {}
        for cmd in (GetModes(), GetCommands(), GetModels()):
            await session.conn.send_command(cmd)
            reply = await asyncio.wait_for(session.conn.recv_data(), 5)
            replies[reply["data"]["eventName"]] = reply["data"]["payload"]
        rec = {e["eventName"]: e["payload"] for e in recorded("queries-3.52.1.jsonl")}
        assert replies["modesResponse"] == rec["modesResponse"]
        assert [set(c) for c in replies["commandsResponse"][0]] == [
            set(c) for c in rec["commandsResponse"][0]
        ]
        assert replies["commandsResponse"][0][0]["source"] == "built-in"
        [models] = replies["modelsResponse"]
        assert models and all({"contextWindow", "maxTokens"} <= set(info) for info in models.values())
        # the listener's first frame after its Ack is the answer to its own query, not the others'
        await listener.send_command(GetModes())
        first = await asyncio.wait_for(listener.recv_data(), 5)
        assert first["data"]["eventName"] == "modesResponse"
    finally:
        await listener.close()
