"""The simulated extension host: server behaviour, command semantics, scripts, determinism and the CLI.

Clients are the real ``ipc_bridge.roo.extension`` connection (or raw sockets where the point is a malformed
frame); hosts run with small time scales so a task takes a tenth of a second.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from ipc_bridge.roo.extension import Disconnected, ExtensionConnection, connect
from ipc_bridge.roo.framing import FrameDecoder, decode_frame, encode_frame
from ipc_bridge.roo.protocol import (
    CloseTask,
    DeleteQueuedMessage,
    GetModes,
    ResumeTask,
    SendMessage,
    SendMessageData,
    command_message,
)
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.script import ScriptError, parse_script
from ipc_bridge.simulator.task import Clock
from tests.simulator.sim_events import FAST, Event, collect, created, kinds, named, start_cmd

pytestmark = pytest.mark.timeout(20)


# ------------------------------------------------------------------------------------------ server


async def test_ack_on_connect(host: SimulatorHost, client: ExtensionConnection) -> None:
    assert client.ack is not None
    assert re.fullmatch(r"[0-9a-f]{12}", client.ack.clientId)
    assert (client.ack.pid, client.ack.ppid) == (os.getpid(), os.getppid())
    other = await connect(host.socket_path, timeout=5)
    assert other.client_id != client.client_id
    await other.close()


async def test_socket_is_private_and_replaces_what_was_at_the_path(sockdir: Path) -> None:
    path = sockdir / "taken.sock"
    path.write_text("stale")  # node-ipc unlinks whatever is at the path before listening
    async with SimulatorHost(path, sockdir, **FAST):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not path.exists()


async def test_events_are_broadcast_to_every_client(host: SimulatorHost, client: ExtensionConnection) -> None:
    other = await connect(host.socket_path, timeout=5)
    try:
        await client.send_command(start_cmd())
        seen_by_sender = await collect(client, named("taskIdle"))
        seen_by_other = await collect(other, named("taskIdle"))
        assert seen_by_other == seen_by_sender
        assert kinds(seen_by_sender)[:3] == ["taskCreated", "taskFocused", "say:text"]
    finally:
        await other.close()


async def test_replies_go_to_the_client_id_the_command_carries(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    other = await connect(host.socket_path, timeout=5)
    try:
        # Roo trusts payload.clientId: a query sent on one socket naming the other is answered there
        await client.send_frame(encode_frame(command_message(other.client_id, GetModes())))
        reply = await asyncio.wait_for(other.recv_data(), 5)
        assert reply["data"]["eventName"] == "modesResponse"
        await client.send_command(GetModes())
        first = await asyncio.wait_for(client.recv_data(), 5)  # and nothing reached the sender before
        assert first["data"]["eventName"] == "modesResponse"
    finally:
        await other.close()


async def test_invalid_frames_are_dropped_and_the_connection_survives(host: SimulatorHost) -> None:
    reader, writer = await asyncio.open_unix_connection(host.socket_path)
    decoder = FrameDecoder()

    async def next_message() -> Any:
        while True:
            frames = decoder.feed(await asyncio.wait_for(reader.read(65536), 5))
            if frames:
                assert len(frames) == 1
                return decode_frame(frames[0])

    client_id = (await next_message())["data"]["clientId"]
    no_client_id = {"type": "TaskCommand", "origin": "client", "data": {"commandName": "GetModes"}}
    writer.write(b"{not json\x0c" + encode_frame(no_client_id) + orjson.dumps({"data": {}}) + b"\x0c")
    writer.write(encode_frame({"type": "TaskCommand", "origin": "client", "clientId": client_id, "data": 7}))
    writer.write(encode_frame(command_message(client_id, GetModes())))
    await writer.drain()
    reply = await next_message()
    assert reply["data"]["eventName"] == "modesResponse"
    assert host.server.stats.bad_frames == 4
    writer.close()
    await writer.wait_closed()


async def test_close_task_ends_the_host_and_removes_the_socket(
    sockdir: Path, host: SimulatorHost, client: ExtensionConnection
) -> None:
    assert (sockdir / "h.sock").exists()
    await client.send_command(start_cmd())
    await collect(client, named("taskStarted"))
    await client.send_command(CloseTask())
    with pytest.raises(Disconnected):
        await collect(client, lambda ev: False)
    await asyncio.wait_for(host.wait_closed(), 5)
    assert not (sockdir / "h.sock").exists()


# -------------------------------------------------------------------------------------- outcomes


async def test_files_and_tools_act_on_the_workspace(host: SimulatorHost, client: ExtensionConnection) -> None:
    ws = host.workspace
    assert ws is not None
    script = {
        "files": {"pkg/two_fer.py": "def two_fer(name='you'):\n    return 'x'\n"},
        "tools": [
            {"tool": "apply_diff", "path": "pkg/two_fer.py", "search": "'x'", "replace": "f'One for {name}'"},
            {"tool": "execute_command", "command": "pytest -q", "output": "1 passed"},
            {"tool": "read_file", "path": "pkg/two_fer.py"},
        ],
        "tokens": {"in": 1000, "out": 301, "cache_reads": 10},
        "cost": 0.3,
    }
    await client.send_command(start_cmd(script))
    events = await collect(client, named("taskIdle"))
    assert (
        ws / "pkg" / "two_fer.py"
    ).read_text() == "def two_fer(name='you'):\n    return f'One for {name}'\n"
    # three tool asks, and the command's two (ask:command, then ask:command_output), each answered
    assert kinds(events).count("taskAskResponded") == 5
    command = kinds(events)[kinds(events).index("ask:command") :]
    assert command[:5] == [
        "ask:command",
        "taskAskResponded",
        "ask:command_output",
        "taskAskResponded",
        "say:command_output",
    ]
    tokens, tools = [e for e in events if e["eventName"] == "taskTokenUsageUpdated"][-1]["payload"][1:]
    assert (tokens["totalTokensIn"], tokens["totalTokensOut"], tokens["totalCacheReads"]) == (1000, 301, 10)
    assert tokens["totalCost"] == pytest.approx(0.3)
    assert {name: s["attempts"] for name, s in tools.items()} == {
        "write_to_file": 1,
        "apply_diff": 1,
        "execute_command": 1,
        "read_file": 1,
        "attempt_completion": 1,
    }


async def test_a_write_that_fails_is_a_tool_failure(host: SimulatorHost, client: ExtensionConnection) -> None:
    assert host.workspace is not None
    (host.workspace / "taken").mkdir()
    await client.send_command(start_cmd({"files": {"taken": "cannot write over a directory"}}))
    events = await collect(client, named("taskIdle"))
    assert "say:error" in kinds(events)
    tools = [e for e in events if e["eventName"] == "taskTokenUsageUpdated"][-1]["payload"][2]
    assert tools["write_to_file"] == {"attempts": 1, "failures": 1}


async def test_final_usage_precedes_task_idle_whatever_the_window(sockdir: Path) -> None:
    # a throttle window far longer than the status delay must not push the final usage past taskIdle
    async with (
        SimulatorHost(sockdir / "w.sock", sockdir, usage_window=30.0, **FAST) as h,
        await connect(h.socket_path, timeout=5) as conn,
    ):
        await conn.send_command(start_cmd())
        events = await collect(conn, named("taskIdle"))
        usage = [e["payload"] for e in events if e["eventName"] == "taskTokenUsageUpdated"]
        assert kinds(events)[-2:] == ["taskTokenUsageUpdated", "taskIdle"]
        assert usage[-1][1]["totalTokensIn"] == 2 * 1234 and "attempt_completion" in usage[-1][2]


async def test_default_script_writes_one_file_and_completes(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    await client.send_command(start_cmd())
    events = await collect(client, named("taskIdle"))
    assert "ask:completion_result" in kinds(events) and "taskCompleted" not in kinds(events)
    assert host.workspace is not None and [p.name for p in host.workspace.iterdir()] == ["hello.txt"]


async def test_task_script_is_merged_over_the_host_script(sockdir: Path) -> None:
    base = {"outcome": "aborted", "files": {"a.txt": "from the host script\n"}, "completion": "unused"}
    async with (
        SimulatorHost(sockdir / "m.sock", sockdir, script=base, **FAST) as h,
        await connect(h.socket_path, timeout=5) as conn,
    ):
        await conn.send_command(start_cmd())
        events = await collect(conn, named("taskAborted"))
        assert "ask:completion_result" not in kinds(events)
        await conn.send_command(start_cmd({"outcome": "completed", "completion": "per task"}))
        events = await collect(conn, named("taskIdle"))
        # the aborted task is only unfocused now: it already sent its taskAborted
        assert kinds(events)[:2] == ["taskUnfocused", "taskCreated"]
        done = [e for e in events if created("say:completion_result")(e)]
        assert (sockdir / "a.txt").read_text() == "from the host script\n" and done


async def test_invalid_task_script_shows_as_an_error_in_the_task(client: ExtensionConnection) -> None:
    await client.send_command(start_cmd({"outcome": "completed", "filez": {}}))
    events = await collect(client, named("taskIdle"))
    assert kinds(events)[-3:] == ["say:error", "ask:mistake_limit_reached", "taskIdle"]
    error = next(e for e in events if created("say:error")(e))["payload"][0]["message"]["text"]
    assert "unknown key 'filez'" in error


async def test_followup_answered_by_send_message_continues_the_task(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    await client.send_command(start_cmd({"outcome": "followup", "files": {"b.txt": "b"}}))
    await collect(client, named("taskInteractive"))
    await client.send_command(SendMessage(data=SendMessageData(text="use b.txt")))
    events = await collect(client, named("taskIdle"))
    assert kinds(events)[:4] == ["taskAskResponded", "taskActive", "say:user_feedback", "say:api_req_started"]
    feedback = next(e for e in events if created("say:user_feedback")(e))["payload"][0]["message"]["text"]
    assert feedback == "use b.txt"
    assert host.workspace is not None and (host.workspace / "b.txt").read_text() == "b"


async def test_messages_queue_while_busy_and_can_be_deleted(client: ExtensionConnection) -> None:
    await client.send_command(start_cmd({"outcome": "hang"}))
    await collect(client, named("taskStarted"))
    for text in ("first", "second"):
        await client.send_command(SendMessage(data=SendMessageData(text=text)))
    updates = await collect(
        client, lambda ev: named("queuedMessagesUpdated")(ev) and len(ev["payload"][1]) == 2
    )
    queued = updates[-1]["payload"][1]
    assert [m["text"] for m in queued] == ["first", "second"]
    assert len({m["id"] for m in queued}) == 2
    await client.send_command(DeleteQueuedMessage(data=queued[1]["id"]))
    update = (await collect(client, named("queuedMessagesUpdated")))[-1]["payload"][1]
    assert [m["text"] for m in update] == ["first"]


async def test_a_queued_message_answers_the_next_question(client: ExtensionConnection) -> None:
    # the question comes ~0.28 s in (20 s are 1 s here, half of it the followup turn's, most of that its
    # request's latency): the message is queued long before
    await client.send_command(start_cmd({"outcome": "followup", "duration": "20s"}))
    await collect(client, named("taskStarted"))
    await client.send_command(SendMessage(data=SendMessageData(text="first")))
    events = await collect(client, named("taskIdle"))
    assert "taskInteractive" not in kinds(events)
    assert kinds(events).index("queuedMessagesUpdated") < kinds(events).index("ask:followup")
    feedback = next(e for e in events if created("say:user_feedback")(e))["payload"][0]["message"]["text"]
    assert feedback == "first"


async def test_crash_drops_every_connection(host: SimulatorHost, client: ExtensionConnection) -> None:
    await client.send_command(start_cmd({"outcome": "crash", "files": {"c.txt": "c"}}))
    with pytest.raises(Disconnected):
        await collect(client, lambda ev: False)
    await asyncio.wait_for(host.wait_closed(), 5)
    assert host.workspace is not None and (host.workspace / "c.txt").is_file()  # the work before the crash


async def test_crash_calls_the_crash_callback(sockdir: Path) -> None:
    crashed = asyncio.Event()
    async with (
        SimulatorHost(sockdir / "c.sock", sockdir, on_crash=crashed.set, **FAST) as h,
        await connect(h.socket_path, timeout=5) as conn,
    ):
        await conn.send_command(start_cmd({"outcome": "crash"}))
        await asyncio.wait_for(crashed.wait(), 5)


async def test_api_error_noauto_outcome(client: ExtensionConnection) -> None:
    await client.send_command(start_cmd({"outcome": "api_error_noauto", "error": {"status": 429}}))
    events = await collect(client, named("taskIdle"))
    failed = next(e for e in events if created("ask:api_req_failed")(e))["payload"][0]["message"]["text"]
    assert "429" in failed


async def test_resume_of_an_unknown_task_does_nothing(client: ExtensionConnection) -> None:
    await client.send_command(ResumeTask(data="01234567-89ab-7def-8123-456789abcdef"))
    await client.send_command(GetModes())
    reply = await asyncio.wait_for(client.recv_data(), 5)
    assert reply["data"]["eventName"] == "modesResponse"


# ---------------------------------------------------------------------------------- determinism


def normalised(events: list[Event]) -> list[Event]:
    """Message ts are wall-clock ms: replace each by its order of appearance."""
    order: dict[int, int] = {}
    out = []
    for ev in events:
        if ev["eventName"] == "message":
            msg = dict(ev["payload"][0]["message"])
            msg["ts"] = order.setdefault(msg["ts"], len(order))
            ev = {**ev, "payload": [{**ev["payload"][0], "message": msg}]}
        out.append(ev)
    return out


async def run_once(sockdir: Path, name: str, seed: int) -> tuple[list[Event], dict[str, str]]:
    ws = sockdir / name
    ws.mkdir()
    script = {
        "text": "On it.",
        "chunks": 4,
        "files": {"x.py": "x = 1\n"},
        "subtasks": [{"files": {"y.py": "y\n"}}],
    }
    async with (
        SimulatorHost(sockdir / f"{name}.sock", ws, seed=seed, script=script, **FAST) as h,
        await connect(h.socket_path, timeout=5) as conn,
    ):
        await conn.send_command(start_cmd())
        root = (await collect(conn, named("taskCreated")))[0]["payload"][0]
        events = await collect(conn, lambda ev: ev["eventName"] == "taskIdle" and ev["payload"][0] == root)
    files = {str(p.relative_to(ws)): p.read_text() for p in sorted(ws.rglob("*")) if p.is_file()}
    return [{"eventName": "taskCreated", "payload": [root]}, *normalised(events)], files


async def test_same_seed_same_events_and_files(sockdir: Path) -> None:
    first, second, other = await asyncio.gather(
        run_once(sockdir, "a", seed=7), run_once(sockdir, "b", seed=7), run_once(sockdir, "c", seed=8)
    )
    assert first == second
    assert first[1] == {"x.py": "x = 1\n", "y.py": "y\n"}
    assert other[0][0] != first[0][0]  # another seed, other task ids


# --------------------------------------------------------------------------------------- scripts


def test_script_errors_name_the_key() -> None:
    with pytest.raises(ScriptError, match=r"unknown key 'tools\.0\.pth' \(allowed here: args, command"):
        parse_script({"tools": [{"tool": "write_to_file", "pth": "a"}]})
    with pytest.raises(ScriptError, match=r"subtasks\.0\.outcome"):
        parse_script({"subtasks": [{"outcome": "won"}]})
    with pytest.raises(ScriptError, match=r"may not contain '\.\.'"):
        parse_script({"files": {"../escape.py": ""}})
    assert parse_script({"engine": 3.50, "duration": "500ms"}).engine == "3.50"
    assert parse_script({"seed": 3}, base={"seed": 1, "outcome": "hang"}).model_dump(
        include={"seed", "outcome"}
    ) == {
        "seed": 3,
        "outcome": "hang",
    }


async def _work_steps(sockdir: Path, name: str, seed: int, jitter: float) -> list[float]:
    """The agent's planned work steps (seconds) for one task of a one-turn script."""
    steps: list[float] = []
    ws = sockdir / name
    ws.mkdir()
    script = {"duration": "1s", "jitter": jitter, "files": {}, "text": "I will work on the task."}
    async with (
        SimulatorHost(sockdir / f"{name}.sock", ws, seed=seed, script=script, engine_lags=False, **FAST) as h,
        await connect(h.socket_path, timeout=5) as conn,
    ):
        clock_sleep = Clock.sleep

        async def recorded(clock: Clock, seconds: float) -> None:
            steps.append(round(seconds, 9))
            await clock_sleep(clock, seconds)

        Clock.sleep = recorded  # type: ignore[method-assign]
        try:
            await conn.send_command(start_cmd())
            await collect(conn, named("taskIdle"))
        finally:
            Clock.sleep = clock_sleep  # type: ignore[method-assign]
    return steps


async def test_jitter_zero_gives_every_seed_the_same_timeline(sockdir: Path) -> None:
    exact = [await _work_steps(sockdir, f"e{seed}", seed, 0.0) for seed in (1, 2)]
    assert exact[0] == exact[1]
    scale = FAST["time_scale"]
    # request, text, completion take the whole 1 s; then the token update's wait after the completion
    # ask, which is not part of duration (5 % of the turn's share)
    assert sum(exact[0][:-1]) == pytest.approx(1.0 * scale)
    assert exact[0][-1] == pytest.approx(0.05 * scale)
    jittered = [await _work_steps(sockdir, f"j{seed}", seed, 0.2) for seed in (1, 2)]
    assert jittered[0] != jittered[1]
    assert all(0.8 * e <= j <= 1.2 * e for j, e in zip(jittered[0], exact[0], strict=True))
    with pytest.raises(ScriptError, match="jitter"):
        parse_script({"jitter": 1})
