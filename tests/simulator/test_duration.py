"""A script's ``duration`` is the agent's own work (docs/simulator.md): with ``jitter: 0``, taskStarted ->
the completion ask (a subtask: -> its hand-back) takes exactly ``duration * time_scale``, whatever the
turns do, plus only the waits on outside things (set to 0 here where a knob allows: ``write_delay``, a
command that is not run, an answer already queued; a subtask's own work is its own script's).

The exact checks run the agent on its planned clock (a recording host link), so a loaded machine cannot
move them; one check runs a real host over its socket and times what a client sees."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.roo.extension import connect
from ipc_bridge.simulator.agent import Agent
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.pace import TOOL_STEPS, Pace, turn_steps
from ipc_bridge.simulator.script import parse_script
from ipc_bridge.simulator.task import Clock, TaskInstance
from tests.simulator.sim_events import collect, created, named, start_cmd

SCALE = 0.01
WRITE = {"tool": "write_to_file", "path": "a.txt", "content": "a\n"}
COMMAND = {"tool": "execute_command", "command": "make test", "output": "ok"}  # shown, not run
FAILING = {"tool": "apply_diff", "path": "missing.py", "search": "a", "replace": "b"}
QUIET = {"jitter": 0, "write_delay": 0}

Point = Callable[[str, tuple[Any, ...]], bool]


class Recorder:
    """The host link of one agent: records each event with the planned time it was sent at."""

    time_scale = SCALE
    status_delay = 0.05
    usage_window = 2.0 * SCALE

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[tuple[float, str, tuple[Any, ...]]] = []
        self.watch: list[tuple[Point, asyncio.Event]] = []
        self._ts = itertools.count(1_700_000_000_000)
        self._ids = itertools.count()

    def emit(self, name: str, *payload: Any) -> None:
        self.events.append((self.clock.now, name, payload))
        for point, seen in self.watch:
            if point(name, payload):
                seen.set()

    def next_ts(self) -> int:
        return next(self._ts)

    def new_task_id(self) -> str:
        return f"task-{next(self._ids)}"

    def start_lag(self) -> float:
        return 0.0

    def set_current(self, instance: TaskInstance) -> None:
        pass

    def crash(self) -> None:  # pragma: no cover - no script here crashes
        raise AssertionError("crash")

    def freeze(self) -> None:  # pragma: no cover
        raise AssertionError("freeze")

    def at(self, point: Point, nth: int = 0) -> float:
        """Planned time of the ``nth`` event matching ``point``."""
        return [t for t, name, payload in self.events if point(name, payload)][nth]


def event(name: str, task: str | None = None) -> Point:
    return lambda n, p: n == name and (task is None or p[0] == task)


def message(kind: str, task: str | None = None) -> Point:
    """The creation of a message ``say:X`` / ``ask:X``."""

    def point(name: str, payload: tuple[Any, ...]) -> bool:
        if name != "message" or payload[0]["action"] != "created":
            return False
        msg = payload[0]["message"]
        return f"{msg['type']}:{msg[msg['type']]}" == kind and (task is None or payload[0]["taskId"] == task)

    return point


async def run_agent(
    script: dict[str, Any], engine: str, workspace: Path, end: Point, *, queued: str | None = None
) -> Recorder:
    """Run ``script`` from its start until ``end`` is sent; return what was sent, when."""
    clock = Clock()
    rec = Recorder(clock)
    seen = asyncio.Event()
    rec.watch.append((end, seen))
    agent = Agent(rec, parse_script(script), engine=engine, seed=7, workspace=workspace, clock=clock)
    inst = agent.new_instance("root")
    if queued is not None:
        # a message queued while the task worked answers its question at once (host._send_message)
        inst.queue.append({"timestamp": 0, "id": "q1", "text": queued})
    agent.start_at_once(inst, "do it")
    work = asyncio.ensure_future(agent.work(inst))
    try:
        await asyncio.wait_for(seen.wait(), 30)
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        inst.end()
    return rec


SHAPES: dict[str, dict[str, Any]] = {
    "no text": {},
    "text": {"text": "I will work on the task."},
    "text in chunks": {"text": "I will work on the task.", "chunks": 5},
    "final text": {"final_text": "Done."},
    "write, no text": {"tools": [WRITE]},
    "write with text": {"tools": [{**WRITE, "text": "Writing a.txt."}], "final_text": "Done."},
    "write, default delay": {"tools": [WRITE], "write_delay": "1s"},
    "command": {"tools": [COMMAND]},
    "command with text": {"text": "Testing.", "tools": [COMMAND]},
    "failing tool": {"tools": [FAILING, WRITE]},
    "many turns": {"text": "Go.", "files": {"b.txt": "b"}, "tools": [COMMAND, FAILING], "final_text": "ok"},
}


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_duration_is_the_agent_work_whatever_its_turns(tmp_path: Path, engine: str, shape: str) -> None:
    script = {**QUIET, "duration": "3s", **SHAPES[shape]}
    rec = await run_agent(script, engine, tmp_path, message("ask:completion_result"))
    took = rec.at(message("ask:completion_result")) - rec.at(event("taskStarted"))
    # the write delay is a wait on the engine, not the agent's work: it comes on top
    outside = 1.0 * SCALE if script["write_delay"] == "1s" else 0.0
    assert took == pytest.approx(3 * SCALE + outside, rel=1e-6)


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
@pytest.mark.parametrize("text", ["", "Which one?"])
async def test_a_followup_answered_at_once_takes_the_duration(tmp_path: Path, engine: str, text: str) -> None:
    script = {**QUIET, "duration": "4s", "outcome": "followup", "text": text}
    rec = await run_agent(script, engine, tmp_path, message("ask:completion_result"), queued="yes")
    # answered by the queued message, with no wait on anyone
    assert rec.at(message("say:user_feedback")) == rec.at(message("ask:followup"))
    took = rec.at(message("ask:completion_result")) - rec.at(event("taskStarted"))
    assert took == pytest.approx(4 * SCALE, rel=1e-6)


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
@pytest.mark.parametrize("child_text", ["", "Writing it."])
async def test_a_delegation_takes_the_parent_and_the_child_durations(
    tmp_path: Path, engine: str, child_text: str
) -> None:
    child = {**QUIET, "duration": "2s", "text": child_text, "files": {"c.txt": "c"}}
    script = {**QUIET, "duration": "3s", "subtasks": [child], "parent_keeps_provider": True}
    rec = await run_agent(script, engine, tmp_path, message("ask:completion_result", "root"))
    # the child is the first task the host link named
    started = rec.at(event("taskStarted", "task-0"))
    handed_back = rec.at(event("taskAborted", "task-0"))
    assert handed_back - started == pytest.approx(2 * SCALE, rel=1e-6)
    took = rec.at(message("ask:completion_result", "root")) - rec.at(event("taskStarted", "root"))
    assert took == pytest.approx((3 + 2) * SCALE, rel=1e-6)


async def test_an_abort_takes_the_duration(tmp_path: Path) -> None:
    script = {**QUIET, "duration": "2s", "outcome": "aborted", "text": "Giving up."}
    rec = await run_agent(script, "3.52", tmp_path, event("taskAborted"))
    took = rec.at(event("taskAborted")) - rec.at(event("taskStarted"))
    assert took == pytest.approx(2 * SCALE, rel=1e-6)


async def test_jitter_moves_each_step_by_its_seeded_factor(tmp_path: Path) -> None:
    script = {"write_delay": 0, "duration": "3s", "tools": [WRITE], "final_text": "Done."}
    rec = await run_agent(script, "3.52", tmp_path, message("ask:completion_result"))
    took = rec.at(message("ask:completion_result")) - rec.at(event("taskStarted"))
    assert 0.8 * 3 * SCALE <= took <= 1.2 * 3 * SCALE
    assert took != pytest.approx(3 * SCALE, rel=1e-6)


async def test_a_client_sees_the_duration(sockdir: Path) -> None:
    """What an outside tester times: a real host over its socket, at a scale where the work takes
    1.5 s, so a loaded machine's lateness stays well inside the tolerance."""
    script = {**QUIET, "duration": "3s", "files": {"a.txt": "a"}}

    async def timed(engine: str) -> float:
        ws = sockdir / engine
        ws.mkdir()
        async with (
            SimulatorHost(
                sockdir / f"{engine}.sock", ws, engine=engine, time_scale=0.5, status_delay=0.1
            ) as h,
            await connect(h.socket_path, timeout=10) as conn,
        ):
            await conn.send_command(start_cmd(script))
            await collect(conn, named("taskStarted"), timeout=30)
            t0 = time.monotonic()
            await collect(conn, created("ask:completion_result"), timeout=30)
            return time.monotonic() - t0

    took = await asyncio.gather(timed("3.52"), timed("3.50"))
    assert all(1.5 * 0.75 <= t <= 1.5 * 1.25 for t in took), took


def test_a_turn_plan_takes_its_share_and_refuses_an_unplanned_step() -> None:
    pace = Pace(2.0, turn_steps(TOOL_STEPS, text=True), lambda: 1.0)
    took = pace.seconds("latency") + sum(pace.seconds("text", 1 / 3) for _ in range(3))
    with pytest.raises(AssertionError, match="before its planned steps"):
        pace.finish()
    with pytest.raises(AssertionError, match="'next_request' is not the next one planned"):
        pace.seconds("next_request")  # a step added to the agent but not to its turn's plan
    took += pace.seconds("tool_ask") + pace.seconds("next_request")
    pace.finish()
    assert took == pytest.approx(2.0)
