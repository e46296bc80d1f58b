"""Roo's own client (node-ipc 12.0.0 + @roo-code/types 1.115.0 zod, interop/roo_client.js) against our
simulator: every event our simulated host sends must pass Roo's ``ipcMessageSchema`` (Roo's client
drops the ones that do not, silently) and reach every connected client, none dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ipc_bridge.roo.events import UnknownEvent
from ipc_bridge.roo.extension import Disconnected, ExtensionConnection, connect
from ipc_bridge.roo.protocol import TaskEventMessage, parse_ipc_message
from tests.conftest import RECORDINGS, requires_node
from tests.interop.peers import Processes, script_arg

pytestmark = [pytest.mark.interop, requires_node, pytest.mark.timeout(90)]

START = {
    "commandName": "StartNewTask",
    "data": {
        "configuration": {"apiProvider": "openai", "mode": "code", "autoApprovalEnabled": True},
        "text": "Write hello.py that prints ünïcødé ✓ 🚀",
    },
}


def simulator_available() -> bool:
    with contextlib.suppress(ImportError, ValueError):
        return importlib.util.find_spec("ipc_bridge.simulator.cli") is not None
    return False


def orchestrate_argv() -> list[str]:
    script = Path(sys.executable).parent / "orchestrate"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from orchestrator.cli.main import main; main()"]


def read_jsonl(path: Path) -> Iterator[Any]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


async def events_until_disconnected(conn: ExtensionConnection, timeout: float) -> list[dict[str, Any]]:
    """The raw TaskEvent bodies received until the host closes the connection."""
    events: list[dict[str, Any]] = []

    async def read() -> None:
        while True:
            try:
                data = await conn.recv_data()
            except Disconnected:
                return
            if isinstance(data, dict) and data.get("type") == "TaskEvent":
                events.append(data["data"])

    await asyncio.wait_for(read(), timeout)
    return events


@pytest.mark.skipif(not simulator_available(), reason="ipc_bridge.simulator.cli is not there yet")
async def test_roo_client_against_the_simulator_validates_and_drops_nothing(
    procs: Processes, sockdir: Path, tmp_path: Path
) -> None:
    path = sockdir / "sim.sock"
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    simulator = await procs.start(
        "simulator",
        [
            *orchestrate_argv(),
            "simulate",
            "--socket",
            str(path),
            "--time-scale",
            "0.05",
            "--status-delay",
            "0.1",
            # the simulated agent writes its files there (default: the current directory)
            "--workspace",
            str(workspace),
        ],
        stdout_file=tmp_path / "simulator.stdout",
    )
    # connect() retries until the simulator listens: no sleep, and no need to know its stdout format.
    watcher = await connect(str(path), timeout=30)
    try:
        out = tmp_path / "roo_client.jsonl"
        script: list[dict[str, Any]] = [
            {"command": START},
            {"after_event": "taskIdle", "command": {"commandName": "GetModes"}},
            {"after_event": "modesResponse", "command": {"commandName": "CancelTask"}},
            # Cancelling a finished task re-creates it with a resume_completed_task ask, then taskIdle.
            {"after_event": "taskIdle", "command": {"commandName": "CloseTask"}},
        ]
        client = await procs.node(
            "roo_client.js",
            *("--socket", str(path), "--script", script_arg(script), "--out", str(out), "--timeout", "60"),
        )
        # CloseTask ends the host (as it closes the VS Code window): both clients read to the end.
        seen_by_python = await events_until_disconnected(watcher, timeout=60)
        summary = await client.summary(timeout=60)
        assert await client.wait() == 0
        assert await simulator.wait() == 0, simulator.stderr()

        assert summary["reason"] == "disconnected"
        assert summary["invalid"] == 0, summary["errors"]
        assert summary["errors"] == []
        assert summary["sent"] == ["StartNewTask", "GetModes", "CancelTask", "CloseTask"]
        assert summary["steps_pending"] == 0

        messages = list(read_jsonl(out))
        assert messages[0]["type"] == "Ack"
        assert messages[0]["data"]["clientId"] == summary["client_id"]
        seen_by_roo = [m["data"] for m in messages[1:]]
        assert all(m["type"] == "TaskEvent" and m["origin"] == "server" for m in messages[1:])
        assert len(seen_by_roo) == summary["events"] == sum(summary["events_by_name"].values())

        names = [e["eventName"] for e in seen_by_roo]
        expected = {"taskCreated", "taskStarted", "message", "taskIdle", "modesResponse", "taskAborted"}
        assert expected <= set(names), names
        assert names.count("taskIdle") == 2 and names.count("taskCreated") == 2, names
        asks = [e["payload"][0]["message"].get("ask") for e in seen_by_roo if e["eventName"] == "message"]
        assert "completion_result" in asks and "resume_completed_task" in asks
        modes = [e for e in seen_by_roo if e["eventName"] == "modesResponse"]
        assert len(modes) == 1
        assert "code" in [m["slug"] for m in modes[0]["payload"][0]]

        # Broadcasts reach both clients identically, event for event; the query reply only its asker.
        assert [e for e in seen_by_roo if e["eventName"] != "modesResponse"] == seen_by_python
        for event in seen_by_python:
            parsed = parse_ipc_message({"type": "TaskEvent", "origin": "server", "data": event})
            assert isinstance(parsed, TaskEventMessage)
            assert not isinstance(parsed.event(), UnknownEvent), event["eventName"]
    finally:
        await watcher.close()


async def test_count_only_stream_against_roo_server(procs: Processes, sockdir: Path) -> None:
    """The benchmark pair (roo_server.js --stream, roo_client.js --count-only) is node-ipc end to end:
    every frame counted, validated, and the client ends when the server closes."""
    path = sockdir / "roo.sock"
    server, _ = await procs.roo_server(path, "--stream", "3000", "--size", "4096")
    script: list[dict[str, Any]] = [
        {"command": START},
        {"after_event": "taskIdle", "command": {"commandName": "CloseTask"}},
    ]
    client = await procs.node(
        "roo_client.js",
        "--socket",
        str(path),
        "--count-only",
        "--script",
        script_arg(script),
        "--timeout",
        "30",
    )
    summary = await client.summary(timeout=30)
    streamed = await server.wait_for(lambda line: "streamed" in line)
    server_summary = await server.summary()
    assert await client.wait() == 0
    assert await server.wait() == 0

    assert summary["reason"] == "disconnected"
    assert summary["invalid"] == 0, summary["errors"]
    assert summary["events_by_name"] == {"taskCreated": 1, "taskStarted": 1, "message": 3000, "taskIdle": 1}
    assert summary["events"] == server_summary["emitted"] == 3003
    assert summary["bytes"] >= 3000 * 4096
    assert summary["events_per_s"] > 0
    assert client.lines == [summary]  # count-only prints nothing but the summary

    assert streamed["streamed"] == 3000 and streamed["emit_rate"] > 0
    assert server_summary["received"] == ["StartNewTask", "CloseTask"]
    assert server_summary["invalid"] == 0


async def test_until_counts_events_after_the_script_and_sigterm_summarises(
    procs: Processes, sockdir: Path
) -> None:
    """roo_client.js stops at the first --until event after its last step; roo_server.js answers
    SIGTERM with its summary (the two ends the benchmarks and tests rely on)."""
    path = sockdir / "roo.sock"
    server, _ = await procs.roo_server(path, "--replay", str(RECORDINGS / "followup-3.52.1.jsonl"))
    script: list[dict[str, Any]] = [
        {"command": START},
        # the followup ask arrives as a message, its taskInteractive follows; cancel on the latter
        {"after_event": "taskInteractive", "command": {"commandName": "CancelTask"}},
    ]
    client = await procs.node(
        "roo_client.js",
        *("--socket", str(path), "--count-only", "--script", script_arg(script)),
        *("--until", "taskCreated", "--timeout", "30"),
    )
    summary = await client.summary(timeout=30)
    assert await client.wait() == 0
    assert summary["reason"] == "until"
    assert summary["sent"] == ["StartNewTask", "CancelTask"]
    # The first taskCreated came before the script was out; the one that stops it is the re-created task.
    assert summary["events_by_name"]["taskCreated"] == 2
    assert summary["events_by_name"]["taskAborted"] == 1

    server.proc.send_signal(signal.SIGTERM)
    server_summary = await server.summary()
    assert await server.wait() == 0
    assert server_summary["received"] == ["StartNewTask", "CancelTask"]
    assert server_summary["invalid"] == 0
