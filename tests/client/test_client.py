"""The worker client against a real bridge process, without extension hosts: requests and their
errors, Lazy Pirate retries and dedup, the welcome handshake, restarts, the lock, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import BridgeRestarted, BridgeTimeout, CommandError, UnknownSlot
from ipc_bridge.server.launcher import BridgeProcess, BridgeStartError, start_bridge_process, sync_request
from ipc_bridge.wire.connection_file import read_connection_file
from ipc_bridge.wire.messages import (
    DetachRequest,
    ErrorReply,
    HeartbeatReply,
    HeartbeatRequest,
    TaskCommandRequest,
)
from ipc_bridge.wire.session import Session

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def bridge(sockdir: Path) -> Iterator[BridgeProcess]:
    proc = start_bridge_process(sockdir / "b")
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def client(bridge: BridgeProcess) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect(bridge.connection_file, timeout=1.0, retries=1)
    try:
        yield c
    finally:
        await c.close(linger_ms=0)


async def test_heartbeat_and_typed_errors(bridge: BridgeProcess, client: BridgeClient) -> None:
    hb = await client.heartbeat()
    assert hb.session == bridge.connection.session and hb.pid == bridge.pid
    with pytest.raises(UnknownSlot, match="unknown slot 'nope'"):
        await client.detach("nope")
    with pytest.raises(UnknownSlot):
        await client.start_task("nope", "hi")
    with pytest.raises(CommandError) as err:
        await client.request("frobnicate", HeartbeatRequest())
    assert err.value.code == "unknown_msg_type"
    with pytest.raises(CommandError) as err:
        await client.request("task_command", DetachRequest(slot="a"))  # lacks "command"
    assert err.value.code == "invalid_request"
    assert await client.slots() == []


async def test_retries_reuse_the_msg_id_and_get_the_first_reply(bridge: BridgeProcess) -> None:
    """Two sends of one msg_id (fresh dates, so both pass the replay check): one effect, same reply."""
    session = Session(bridge.key)
    ctx = zmq.asyncio.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(bridge.connection.command_endpoint)
    try:
        msg_id = session.new_msg_id()
        bad = TaskCommandRequest(slot="ghost", command={"commandName": "CancelTask"})
        for _ in range(2):
            await dealer.send_multipart(session.serialize("task_command", bad, msg_id=msg_id))
        replies = [session.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 5)) for _ in range(2)]
        assert [r.parent_msg_id for r in replies] == [msg_id, msg_id]
        assert replies[0].header.msg_id != replies[1].header.msg_id  # a fresh message each time
        assert replies[0].content == replies[1].content
        assert ErrorReply.model_validate(replies[0].content).error == "unknown_slot"

        # The very same frames again: a replay, dropped without a reply; the next request is answered.
        frames = session.serialize("heartbeat", HeartbeatRequest())
        await dealer.send_multipart(frames)
        first = session.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 5))
        await dealer.send_multipart(frames)
        await dealer.send_multipart(session.serialize("heartbeat", HeartbeatRequest()))
        second = session.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 5))
        assert second.parent_msg_id != first.parent_msg_id
        HeartbeatReply.model_validate(second.content)
    finally:
        dealer.close()


async def test_bad_signature_is_dropped_without_reply(bridge: BridgeProcess) -> None:
    ctx = zmq.asyncio.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(bridge.connection.command_endpoint)
    try:
        forged = Session("not-the-key").serialize("shutdown", {})
        await dealer.send_multipart(forged)
        good = Session(bridge.key)
        await dealer.send_multipart(good.serialize("heartbeat", {}))
        reply = good.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 5))
        assert reply.msg_type == "heartbeat_reply"  # the forged shutdown got nothing and did nothing
        assert bridge.alive()
    finally:
        dealer.close()


async def test_subscribe_waits_for_the_welcome(client: BridgeClient) -> None:
    await asyncio.wait_for(client.subscribe("w1"), 5)
    # A second subscriber to the same topic is welcomed too (XPUB_VERBOSE).
    other = BridgeClient(client.info)
    try:
        await asyncio.wait_for(other.subscribe("w1"), 5)
    finally:
        await other.close(linger_ms=0)
    await client.unsubscribe("w1")


async def test_timeout_when_the_bridge_is_gone(bridge: BridgeProcess, client: BridgeClient) -> None:
    await client.heartbeat()
    bridge.kill()
    with pytest.raises(BridgeTimeout, match="2 attempts"):
        await client.heartbeat(timeout=0.2)


async def test_restart_with_the_same_key_is_detected(
    sockdir: Path, bridge: BridgeProcess, client: BridgeClient
) -> None:
    await client.subscribe("w1")
    stream = client.events("w1")
    restarted: list[BridgeRestarted] = []
    client.on_restart.append(restarted.append)
    first_event = asyncio.ensure_future(stream.__anext__())
    bridge.kill()
    # From this (main) thread: the launcher ties the child's life to the thread that starts it.
    successor = start_bridge_process(sockdir / "b", key=bridge.key)
    try:
        with pytest.raises(BridgeRestarted) as err:
            await asyncio.wait_for(first_event, 10)
        assert err.value.new == successor.connection.session != bridge.connection.session
        assert restarted and restarted[0].new == successor.connection.session
        assert (await client.heartbeat()).session == successor.connection.session
    finally:
        await stream.aclose()
        successor.kill()


def test_a_second_bridge_on_the_same_runtime_dir_is_refused(bridge: BridgeProcess, sockdir: Path) -> None:
    with pytest.raises(BridgeStartError, match="exit code 1"):
        start_bridge_process(sockdir / "b", connection_file=sockdir / "other.json", timeout=10)
    assert bridge.heartbeat() is not None  # the first one still owns its endpoints


async def test_shutdown_command_cleans_up(sockdir: Path, bridge: BridgeProcess, client: BridgeClient) -> None:
    runtime = sockdir / "b"
    assert sorted(p.name for p in runtime.iterdir()) == [
        "bridge-cmd.ipc",
        "bridge-ev.ipc",
        "bridge.json",
        "bridge.lock",
    ]
    assert oct(os.stat(runtime / "bridge.json").st_mode & 0o777) == "0o600"
    assert oct(os.stat(runtime / "bridge-cmd.ipc").st_mode & 0o777) == "0o600"
    await client.shutdown()
    assert await asyncio.to_thread(bridge.process.wait, 10) == 0
    assert list(runtime.iterdir()) == []


def test_stop_is_staged_and_cleans_up(sockdir: Path, bridge: BridgeProcess) -> None:
    assert bridge.stop(timeout=5) == 0
    assert list((sockdir / "b").iterdir()) == []


def test_sigterm_through_the_orchestrate_command(sockdir: Path) -> None:
    """``orchestrate bridge`` (the console script) serves, and SIGTERM shuts it down in stages."""
    runtime = sockdir / "rt"
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("orchestrate")),
            "bridge",
            "--connection-file",
            str(runtime / "conn.json"),
            "--ready-fd",
            str(write_fd),
        ],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as ready:
            assert ready.readline() == b"ready\n"
        info = read_connection_file(runtime / "conn.json")
        assert info.bridge_pid == proc.pid and info.runtime_dir == str(runtime)
        assert sync_request(info, "heartbeat", HeartbeatRequest()) is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert list(runtime.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
