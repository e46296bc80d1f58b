"""Our client (ipc_bridge.roo.extension) against the real node-ipc 12.0.0 server, validated by the real
@roo-code/types 1.115.0 ``ipcMessageSchema`` exactly as Roo's IpcServer does (interop/roo_server.js).

What would break in the field if these failed: a command the extension silently drops (zod rejects
it, or strips a key we rely on), a frame node-ipc holds back or splits wrongly, a reply or a replayed
engine event our side loses, reorders or cannot parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.roo.events import CommandsResponse, ModelsResponse, ModesResponse, UnknownEvent
from ipc_bridge.roo.extension import Disconnected, ExtensionConnection, connect
from ipc_bridge.roo.framing import encode_frame
from ipc_bridge.roo.protocol import (
    CancelTask,
    CloseTask,
    DeleteQueuedMessage,
    GetCommands,
    GetModels,
    GetModes,
    ResumeTask,
    SendMessage,
    SendMessageData,
    StartNewTask,
    StartNewTaskData,
    TaskEventMessage,
    command_message,
    parse_ipc_message,
    task_command_adapter,
)
from ipc_bridge.roo.shapes import RooCodeSettings, WireModel
from tests.conftest import RECORDINGS, load_recording, recording_names, requires_node
from tests.interop.peers import Processes

pytestmark = [pytest.mark.interop, requires_node, pytest.mark.timeout(60)]

RECV_TIMEOUT = 10.0
QUERY_RESPONSES = {"commandsResponse", "modesResponse", "modelsResponse"}
# A 1x1 PNG, as the extension receives pasted images: data URIs.
IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJ"
    "RU5ErkJggg=="
)
TEXT = (
    "Écris hello.py — ünïcødé ✓, a form feed \f here, emoji 🚀👩‍💻, CJK 漢字, "
    'quotes " and \\ backslash, a\nnewline, a\ttab, U+2028 \u2028 and a NUL \x00.'
)


def every_command() -> list[WireModel]:
    """All nine TaskCommands, CloseTask last (it closes the 'window')."""
    configuration = RooCodeSettings(
        apiProvider="openai",
        openAiBaseUrl="http://127.0.0.1:9/v1",
        openAiModelId="stub/model",
        mode="code",
        autoApprovalEnabled=True,
        alwaysAllowReadOnly=True,
        alwaysAllowWrite=True,
        alwaysAllowExecute=True,
        alwaysAllowSubtasks=True,
        alwaysAllowFollowupQuestions=True,
        followupAutoApproveTimeoutMs=0,
        allowedCommands=["*"],
        deniedCommands=["rm -rf /"],
        commandExecutionTimeout=20,
        requestDelaySeconds=10,
        writeDelayMs=1000,
        rateLimitSeconds=0,
        consecutiveMistakeLimit=3,
        allowedMaxRequests=50,
        allowedMaxCost=1.5,
        enableCheckpoints=False,
        checkpointTimeout=30,
        mcpEnabled=False,
        modelTemperature=0.2,
        modelMaxTokens=4096,
        language="en",
        customModes=[],
        # keys the model does not type travel as extras
        openAiApiKey="sk-stub",
        customInstructions="Sé breve ✓ 🚀",
    )
    return [
        StartNewTask(
            data=StartNewTaskData(configuration=configuration, text=TEXT, images=[IMAGE], newTab=False)
        ),
        SendMessage(data=SendMessageData(text="and now 🚀 with a \f form feed", images=[IMAGE])),
        ResumeTask(data="019a6b2e-4c1d-7e5f-8a9b-0c1d2e3f4a5b"),
        DeleteQueuedMessage(data="queued-ü-1"),
        GetCommands(),
        GetModes(),
        GetModels(),
        CancelTask(),
        CloseTask(),
    ]


async def recv_data(conn: ExtensionConnection) -> Any:
    return await asyncio.wait_for(conn.recv_data(), RECV_TIMEOUT)


async def read_until_disconnected(conn: ExtensionConnection) -> list[Any]:
    frames: list[Any] = []
    while True:
        try:
            frames.append(await recv_data(conn))
        except Disconnected:
            return frames


async def stop(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def test_every_command_passes_roo_validation_whole_split_and_batched(
    procs: Processes, sockdir: Path
) -> None:
    path = sockdir / "roo.sock"
    server, ready = await procs.roo_server(path, "--trace")
    conn = await connect(str(path), timeout=RECV_TIMEOUT)
    listener = await connect(str(path), timeout=RECV_TIMEOUT)
    listened = asyncio.ensure_future(read_until_disconnected(listener))
    try:
        assert conn.ack is not None and listener.ack is not None
        assert re.fullmatch(r"[0-9a-f]{12}", conn.client_id)
        assert conn.ack.pid == ready["pid"] == server.pid
        assert isinstance(conn.ack.ppid, int)
        assert listener.client_id != conn.client_id

        commands = every_command()
        frames = [encode_frame(command_message(conn.client_id, c)) for c in commands]
        start, send_msg, resume, delete, get_commands, get_modes, get_models = frames[:7]

        def dispatched() -> int:
            return sum(1 for line in server.lines if "frame" in line)

        async def wait_dispatched(n: int) -> None:
            # Each write must be read by the server before the next, or the kernel may merge them.
            if dispatched() < n:
                await server.wait_for(lambda _: dispatched() >= n)

        async def pending_reported(at_least: int) -> int:
            line = await server.wait_for(lambda line: line.get("pending", 0) >= at_least)
            pending: int = line["pending"]
            return pending

        # One frame in two writes, cut inside the 4-byte UTF-8 sequence of an emoji: node's
        # StringDecoder keeps the half character back, node-ipc waits for the delimiter.
        cut = start.index("🚀".encode()) + 2
        await conn.send_frame(start[:cut])
        assert await pending_reported(cut - 2) == cut - 2
        await conn.send_frame(start[cut:])
        await wait_dispatched(1)

        # Three whole frames in one write.
        await conn.send_frame(send_msg + resume + delete)
        await wait_dispatched(4)

        # Two whole frames and half of a third: node-ipc parses nothing until its buffer ends on the
        # delimiter, so all three are held back, then arrive together, in order.
        head = get_commands + get_modes + get_models[:10]
        await conn.send_frame(head)
        assert await pending_reported(len(head)) == len(head)
        assert dispatched() == 4
        await conn.send_frame(get_models[10:])

        replies = [parse_ipc_message(await recv_data(conn)) for _ in range(3)]
        events = [r.event() for r in replies if isinstance(r, TaskEventMessage)]
        assert [type(e) for e in events] == [CommandsResponse, ModesResponse, ModelsResponse]
        commands_reply, modes_reply, models_reply = events
        assert isinstance(commands_reply, CommandsResponse)
        assert [c.name for c in commands_reply.payload[0]] == ["init"]
        assert isinstance(modes_reply, ModesResponse)
        assert "code" in [m.slug for m in modes_reply.payload[0]]
        assert isinstance(models_reply, ModelsResponse)
        assert models_reply.payload[0]["stub/roo-model"]["contextWindow"] == 128000

        await conn.send_command(commands[-2])  # CancelTask
        await conn.send_command(commands[-1])  # CloseTask: the server exits, as VS Code closes its window
        with pytest.raises(Disconnected):
            await recv_data(conn)

        summary = await server.summary()
        assert await server.wait() == 0
        assert summary["invalid"] == 0, summary["errors"]
        assert summary["bad_json"] == 0
        assert summary["errors"] == []
        assert summary["valid"] == len(commands)
        assert summary["received"] == [c.wire()["commandName"] for c in commands]
        assert summary["connections"] == 2

        # What node-ipc handed to Roo's onMessage is what we meant to send, and zod (strip mode) kept
        # every key: nothing we send is unknown to @roo-code/types or silently dropped.
        traced = [line for line in server.lines if "frame" in line]
        assert [t["frame"] for t in traced] == [command_message(conn.client_id, c).wire() for c in commands]
        assert all(t["valid"] and t["parsed"] == t["frame"] for t in traced)
        assert traced[0]["frame"]["data"]["data"]["text"] == TEXT

        # Query replies go to the requester only; the listener saw nothing but its Ack.
        assert await asyncio.wait_for(listened, RECV_TIMEOUT) == []
    finally:
        await stop(listened)
        await conn.close()
        await listener.close()


async def test_invalid_command_is_counted_not_fatal(procs: Processes, sockdir: Path) -> None:
    """The server really validates: a command zod rejects is dropped, the connection stays usable."""
    path = sockdir / "roo.sock"
    server, _ = await procs.roo_server(path)
    conn = await connect(str(path), timeout=RECV_TIMEOUT)
    try:
        # configuration is required by taskCommandSchema; without it Roo drops the command silently.
        bad: dict[str, Any] = {"type": "TaskCommand", "origin": "client", "clientId": conn.client_id}
        bad["data"] = {"commandName": "StartNewTask", "data": {"text": "no configuration"}}
        await conn.send_frame(encode_frame(bad))
        await conn.send_command(GetModes())
        reply = parse_ipc_message(await recv_data(conn))
        assert isinstance(reply, TaskEventMessage) and isinstance(reply.event(), ModesResponse)
        await conn.send_command(CloseTask())
        summary = await server.summary()
        assert summary["invalid"] == 1
        assert summary["errors"][0]["issues"][0]["path"] == ["data", "data", "configuration"]
        assert summary["received"] == ["GetModes", "CloseTask"]
    finally:
        await conn.close()


@pytest.mark.parametrize("name", recording_names())
async def test_replayed_engine_frames_arrive_whole_in_order_and_parse(
    procs: Processes, sockdir: Path, name: str
) -> None:
    rows = load_recording(name)
    # Each command of the recording owns the engine frames up to the next command.
    segments: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for row in rows:
        if row["dir"] == "out":
            segments.append((row["msg"], []))
        elif row["msg"]["type"] == "TaskEvent" and segments:
            segments[-1][1].append(row["msg"])

    path = sockdir / "roo.sock"
    server, _ = await procs.roo_server(path, "--replay", str(RECORDINGS / name))
    conn = await connect(str(path), timeout=RECV_TIMEOUT)
    listener = await connect(str(path), timeout=RECV_TIMEOUT)
    listened = asyncio.ensure_future(read_until_disconnected(listener))
    try:
        sent: list[str] = []
        for command, expected in segments:
            cmd = task_command_adapter.validate_python(command["data"])
            await conn.send_command(cmd)
            sent.append(command["data"]["commandName"])
            for want in expected:
                got = await recv_data(conn)
                assert got == want
                msg = parse_ipc_message(got)
                assert isinstance(msg, TaskEventMessage)
                event = msg.event()
                assert not isinstance(event, UnknownEvent), (event.eventName, event.invalid)
        if "CloseTask" not in sent:
            await conn.send_command(CloseTask())
            sent.append("CloseTask")
        # Nothing beyond the recording, and the 'window' closes.
        assert await read_until_disconnected(conn) == []

        summary = await server.summary()
        assert summary["invalid"] == 0, summary["errors"]
        assert summary["received"] == sent
        broadcast = [m for _, seg in segments for m in seg if m["data"]["eventName"] not in QUERY_RESPONSES]
        assert await asyncio.wait_for(listened, RECV_TIMEOUT) == broadcast
    finally:
        await stop(listened)
        await conn.close()
        await listener.close()


def test_recordings_are_present() -> None:
    """The parametrised replay above must not pass vacuously."""
    assert len(recording_names()) >= 19
