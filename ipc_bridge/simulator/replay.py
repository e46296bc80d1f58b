"""Replaying the real engine's recorded ``orchestrate run`` scenarios on the simulator (issue #14).

The recordings (``tests/fixtures/recordings/cli-runs``) are attempt transcripts as the orchestrator writes
them: the non-partial TaskEvents, ``{t, dir, seq, event}``. :data:`SCENARIOS` holds, per scenario, the
simulator script that makes the simulated model do what the recorded (scripted) model did, and how the
orchestrator ended the attempt. :func:`play` runs one on a fresh simulator host and returns its events in
the same form; :func:`compare` reduces both sides to per-role sequences and measures how alike they are.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipc_bridge.roo.events import event_route
from ipc_bridge.roo.extension import connect
from ipc_bridge.roo.protocol import CancelTask, StartNewTask, StartNewTaskData
from ipc_bridge.simulator.host import SimulatorHost

Event = dict[str, Any]

ENGINES = {"3.52": "3.52.1", "3.50": "3.50.4"}
"""Simulator engine setting -> the recorded engine version (directory name)."""

WRITE = {"write_to_file": {"tool": "write_to_file", "path": "hello.py", "content": 'print("hello")\n'}}
_CHILD = "SCENARIO: child-write. Write hello.py that prints hello, then complete."


def _delegation(child: Mapping[str, Any], child_tool: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The subtask scenario's script, with ``child`` keys (and ``child_tool`` keys of its write) set."""
    tool = {**WRITE["write_to_file"], "text": "Writing hello.py in the subtask.", **(child_tool or {})}
    return {
        "text": "Delegating.",
        "jitter": 0,
        "subtasks": [
            {
                "prompt": _CHILD,
                "text": "",
                "jitter": 0,
                "tools": [tool],
                "final_text": "Subtask done.",
                "completion": "hello.py written by the subtask",
                "tokens": {"in": 2000, "out": 100},
                **child,
            }
        ],
        "final_text": "The subtask is done.",
        "completion": "the subtask wrote hello.py",
        "tokens": {"in": 2000, "out": 100},
    }


@dataclass(frozen=True)
class Scenario:
    """One recorded scenario: the simulator script, the prompt, and when the orchestrator cancelled.

    ``stop`` names what the attempt waited for before it cancelled the task (``None``: the task idled at
    its completion ask and was left alone): ``"interactive"`` (a followup nobody answers), ``"retries"``
    (three API retry waits, then the case's timeout) or ``"started"`` (a model that never answers).

    The scripts set ``jitter: 0`` and durations near the recorded ones: where the throttled usage event
    falls depends on the model's latency against the engine's 2 s window."""

    name: str
    prompt: str
    script: dict[str, Any]
    stop: str | None = None
    engines: tuple[str, ...] = ("3.52", "3.50")
    stop_on: Mapping[str, str] = field(default_factory=dict)
    """Engine-specific ``stop`` (the 3.50 delegation ends in retries, not at the completion ask)."""
    tries: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """The script of one recorded try (``"3.50/subtask__2"``) where it differs from ``script``: two
    tries of one scenario can differ where the engine races (when a request's token update lands,
    Task.ts ``drainStreamInBackgroundToFindAllUsage``), which a script states with ``usage_at``."""

    def stop_for(self, engine: str) -> str | None:
        return self.stop_on.get(engine, self.stop)

    def script_for(self, engine: str, recording: Path | None = None) -> dict[str, Any]:
        key = f"{engine}/{recording.stem}" if recording is not None else ""
        return self.tries.get(key, self.script)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "write-ok",
        "SCENARIO: write-ok. Write hello.py that prints hello.",
        {
            "text": "",
            # the model takes ~1 s to answer after the write: the usage throttle's trailing edge (2 s
            # after the start) falls before the second request's text (a turn's share s: s + 1 < 2 <
            # 1.5 s + 1, the write delay being 1 s); the shorter, the more room for the command's real run
            # before the edge after it (4 s), which must come after the final request's token update
            "duration": "2.1s",
            "jitter": 0,
            "tools": [
                {**WRITE["write_to_file"], "text": "Writing hello.py.", "usage_at": "text"},
                {
                    "tool": "execute_command",
                    "command": "python3 hello.py",
                    "run": True,
                    "text": "Running it.",
                },
            ],
            "final_text": "Done.",
            "completion": "hello.py prints hello",
            "tokens": {"in": 3000, "out": 150},
        },
    ),
    Scenario(
        "write-wrong",
        "SCENARIO: write-wrong. Write hello.py that prints hello.",
        {
            "text": "",
            "tools": [
                {**WRITE["write_to_file"], "content": 'print("goodbye")\n', "text": "Writing hello.py."}
            ],
            "final_text": "Done.",
            "completion": "hello.py written",
            "tokens": {"in": 2000, "out": 100},
        },
    ),
    Scenario(
        "subtask",
        "SCENARIO: subtask. Delegate writing hello.py to a subtask.",
        # the child's second request starts before the throttle's trailing edge, its text after it
        _delegation({"duration": "1.6s"}),
        stop_on={"3.50": "retries"},
        tries={
            # the child completes within 2 s of its start: no trailing usage before its completion
            "3.50/subtask__1": _delegation({"duration": "1s"}),
            # both child requests show their tokens while the text streams; the second one's comes
            # just before the throttle's trailing edge (2 s), its text just after
            "3.50/subtask__2": _delegation({"duration": "1.25s", "usage_at": "text"}, {"usage_at": "text"}),
        },
    ),
    Scenario(
        "followup",
        "SCENARIO: followup. Write hello.py.",
        {
            "text": "",
            "outcome": "followup",
            "followup": {"question": "Which greeting should hello.py print?", "suggest": ["hello", "hi"]},
            "tokens": {"in": 1000, "out": 50},
        },
        stop="interactive",
    ),
    Scenario(
        "api-error",
        "SCENARIO: api-error. Write hello.py.",
        {"text": "", "outcome": "api_error", "error": {"status": 500, "message": "500 stub: internal error"}},
        stop="retries",
        engines=("3.52",),
    ),
    Scenario("timeout", "SCENARIO: slow. Write hello.py.", {"text": "", "outcome": "hang"}, stop="started"),
    Scenario(
        "tool-fail",
        "SCENARIO: tool-fail. Fix missing.py, then write hello.py.",
        {
            "text": "",
            "tools": [
                {
                    "tool": "apply_diff",
                    "path": "missing.py",
                    "search": "a",
                    "replace": "b",
                    "text": "Patching missing.py.",
                },
                {**WRITE["write_to_file"], "text": "That failed; writing hello.py instead."},
            ],
            "final_text": "Done.",
            "usage_at": "text",
            "completion": "hello.py written after a failed diff",
            "tokens": {"in": 3000, "out": 150},
        },
    ),
)


# ----------------------------------------------------------------------------------- recordings


def recording_files(root: Path, scenario: str, engine: str) -> list[Path]:
    """The recorded tries of ``scenario`` on ``engine`` (``3.52``/``3.50``) under ``root``."""
    return sorted((root / ENGINES[engine]).glob(f"{scenario}__*.jsonl"))


def load_events(path: Path) -> list[Event]:
    """A transcript's events, in the order the orchestrator received them."""
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r["event"] for r in rows if r.get("dir") == "in"]


def is_partial(ev: Event) -> bool:
    if ev.get("eventName") != "message":
        return False
    return ev["payload"][0]["message"].get("partial") is True


# ------------------------------------------------------------------------------------ reduction


def sequences(events: list[Event]) -> dict[str, list[str]]:
    """Per task role (``t0``, ``t1``... in order of appearance), the ordered event kinds.

    A message is ``say:text`` when created and ``say:text~`` when updated in place; runs of the same
    kind are merged, so how often a streaming message or the usage throttle fired does not count, but
    what came in which order does."""
    roles: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for ev in events:
        if is_partial(ev):
            continue
        name, task = event_route(ev)
        if task is None:
            continue
        role = roles.setdefault(task, f"t{len(roles)}")
        if name == "message":
            body = ev["payload"][0]
            msg = body["message"]
            kind = f"{msg['type']}:{msg.get(msg['type'])}" + ("" if body["action"] == "created" else "~")
        else:
            kind = name
        seq = out.setdefault(role, [])
        if not seq or seq[-1] != kind:
            seq.append(kind)
    return out


def record_fields(events: list[Event]) -> dict[str, Any]:
    """What an attempt's record is built from: how the root task ended, its usage, how many asks and
    errors it showed (distinct messages), the completion text and the last error text."""
    fields: dict[str, Any] = {"ended": None, "completed_events": 0, "tokens": None, "completion": None}
    fields |= {"error_text": None}
    asks: set[int] = set()
    errors: set[int] = set()
    root: str | None = None
    for ev in events:
        if is_partial(ev):
            continue
        name, task = event_route(ev)
        root = root or task
        if name in ("taskIdle", "taskInteractive", "taskResumable", "taskAborted") and task == root:
            fields["ended"] = name
        fields["completed_events"] += name == "taskCompleted"
        if name == "taskTokenUsageUpdated" and task == root:
            usage = ev["payload"][1]
            fields["tokens"] = (usage.get("totalTokensIn"), usage.get("totalTokensOut"))
        if name == "message":
            msg = ev["payload"][0]["message"]
            if msg.get("say") == "completion_result" and task == root:
                fields["completion"] = msg.get("text")
            if msg.get("say") in ("error", "api_req_retry_delayed"):
                errors.add(msg["ts"])
                fields["error_text"] = msg.get("text")
            if msg["type"] == "ask":
                asks.add(msg["ts"])
    return fields | {"asks": len(asks), "errors": len(errors)}


@dataclass
class Comparison:
    """How one simulated run compares with one recording."""

    similarity: dict[str, float]
    field_diffs: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def overall(self) -> float:
        return min(self.similarity.values()) if self.similarity else 1.0


def compare(simulated: list[Event], recorded: list[Event]) -> Comparison:
    sim, rec = sequences(simulated), sequences(recorded)
    sim_ratio = {
        role: difflib.SequenceMatcher(None, sim.get(role, []), rec.get(role, []), autojunk=False).ratio()
        for role in sorted(set(sim) | set(rec))
    }
    f_sim, f_rec = record_fields(simulated), record_fields(recorded)
    diffs = {k: (f_sim[k], f_rec[k]) for k in f_rec if f_sim.get(k) != f_rec[k]}
    return Comparison(sim_ratio, diffs)


def diff_lines(simulated: list[Event], recorded: list[Event]) -> list[str]:
    """A unified diff of the per-role sequences (for a failing test or ``--verbose``)."""
    sim, rec = sequences(simulated), sequences(recorded)
    lines: list[str] = []
    for role in sorted(set(sim) | set(rec)):
        lines += difflib.unified_diff(
            rec.get(role, []), sim.get(role, []), f"recorded {role}", f"simulated {role}", lineterm=""
        )
    return lines


# ----------------------------------------------------------------------------------------- play


def _stop_condition(stop: str | None) -> Callable[[Event], bool]:
    retries = 0

    def done(ev: Event) -> bool:
        nonlocal retries
        name = ev.get("eventName")
        if stop is None:
            return name == "taskIdle"
        if stop == "interactive":
            return name == "taskInteractive"
        msg = ev["payload"][0]["message"] if name == "message" else {}
        if stop == "started":
            return bool(msg.get("say") == "api_req_started")
        retries += msg.get("say") == "api_req_retry_delayed" and msg.get("partial") is False
        return retries >= 3

    return done


async def play(
    scenario: Scenario,
    engine: str,
    recording: Path | None = None,
    *,
    time_scale: float = 0.05,
    status_delay: float = 0.1,
    seed: int = 0,
    timeout: float = 30.0,
    host_options: Mapping[str, Any] | None = None,
    configuration: Mapping[str, Any] | None = None,
) -> list[Event]:
    """Run ``scenario`` (as in ``recording``, one of its tries) on a fresh simulator host the way the
    orchestrator did: start it, wait for the point where the recorded attempt stopped, cancel it if it
    did, and return every event until then."""
    with tempfile.TemporaryDirectory(prefix="sim-replay-") as tmp:
        sock, workspace = Path(tmp) / "sim.sock", Path(tmp) / "ws"
        workspace.mkdir()
        host = SimulatorHost(
            sock,
            workspace,
            engine=engine,
            seed=seed,
            time_scale=time_scale,
            status_delay=status_delay,
            **dict(host_options or {}),
        )
        await host.start()
        conn = await connect(host.socket_path, timeout=timeout)
        events: list[Event] = []

        async def until(pred: Callable[[Event], bool]) -> None:
            while True:
                data = await conn.recv_data()
                if data.get("type") == "TaskEvent":
                    events.append(data["data"])
                    if pred(data["data"]):
                        return

        try:
            script = scenario.script_for(engine, recording)
            config = {**(configuration or {}), "simulate": script}
            data = StartNewTaskData(configuration=config, text=scenario.prompt)
            await conn.send_command(StartNewTask(data=data))
            await asyncio.wait_for(until(_stop_condition(scenario.stop_for(engine))), timeout)
            if scenario.stop_for(engine) is not None:
                await conn.send_command(CancelTask())
                await asyncio.wait_for(until(lambda ev: ev.get("eventName") == "taskAborted"), timeout)
        finally:
            await conn.close()
            await host.stop()
        # the recordings show the workspace as /workspace: rewrite it the same way
        text = json.dumps([ev for ev in events if not is_partial(ev)])
        return list(json.loads(text.replace(str(workspace), "/workspace")))
