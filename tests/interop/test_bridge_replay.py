"""Every recording of the real engine, served by a node-ipc 12.0.0 peer, passes through the bridge to a
ZeroMQ subscriber complete, in order and unchanged, with gap-free sequence numbers."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import Event
from ipc_bridge.roo.events import parse_task_event
from ipc_bridge.roo.protocol import QUERY_RESPONSES, task_command_adapter
from ipc_bridge.server.launcher import start_bridge_process
from tests.conftest import RECORDINGS, load_recording, recording_names, requires_node
from tests.interop.peers import Processes

pytestmark = [pytest.mark.interop, requires_node, pytest.mark.timeout(90)]

RECV_TIMEOUT = 15.0


def _segments(name: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each client command of the recording with the engine's TaskEvents that followed it."""
    segments: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for row in load_recording(name):
        if row["dir"] == "out":
            segments.append((row["msg"]["data"], []))
        elif row["msg"]["type"] == "TaskEvent" and segments:
            segments[-1][1].append(row["msg"]["data"])
    return segments


async def _pump(client: BridgeClient, slot: str, out: asyncio.Queue[Event]) -> None:
    async with contextlib.aclosing(client.events(slot, since_seq=0)) as stream:
        async for event in stream:
            out.put_nowait(event)


@pytest.mark.parametrize("name", [n for n in recording_names() if _segments(n)])
async def test_recording_through_the_bridge(procs: Processes, sockdir: Path, name: str) -> None:
    segments = _segments(name)
    sock = sockdir / "roo.sock"
    await procs.roo_server(sock, "--replay", str(RECORDINGS / name))
    bridge = await asyncio.to_thread(start_bridge_process, sockdir / "b")
    client = await BridgeClient.connect(bridge.connection)
    received: asyncio.Queue[Event] = asyncio.Queue()
    pump: asyncio.Future[None] | None = None
    try:
        await client.attach("s", str(sock), connect_timeout=10)
        pump = asyncio.ensure_future(_pump(client, "s", received))
        seen: list[Event] = []
        for command, expected in segments:
            cmd = task_command_adapter.validate_python(command)
            if cmd.commandName == "StartNewTask":
                created = [e["payload"][0] for e in expected if e["eventName"] == "taskCreated"]
                task_id = await client.start_task("s", cmd.data.text, cmd.data.configuration)
                assert task_id == created[0]  # the reply names the task the command created
            elif cmd.commandName in QUERY_RESPONSES:
                response = await client.query("s", cmd.commandName)
                want = next(e for e in expected if e["eventName"] == QUERY_RESPONSES[cmd.commandName])
                assert response == want["payload"][0]
            else:
                await client.task_command("s", cmd)
            got = [await asyncio.wait_for(_next_task_event(received, seen), RECV_TIMEOUT) for _ in expected]
            assert [e.content.event for e in got] == expected  # type: ignore[union-attr]
            assert all(parse_task_event(e).eventName == e["eventName"] for e in expected)
        # one gap-free sequence per slot, over every event type (slot_up first)
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert seen[0].msg_type == "slot_up"
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        await client.close()
        await asyncio.to_thread(bridge.stop)


async def _next_task_event(queue: asyncio.Queue[Event], seen: list[Event]) -> Event:
    while True:
        event = await queue.get()
        seen.append(event)
        if event.msg_type == "task_event":
            return event
