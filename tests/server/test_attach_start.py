"""``attach_start`` and ``close_detach`` (wire format 1.3): a task bracketed in two round trips, between a
real bridge process and real simulator processes (or a scripted node-ipc host for the failures)."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.task_commands import StartFailed
from ipc_bridge.client.types import CommandTimeout, ConnectFailed, InvalidCommand, SlotDown, UnknownSlot
from ipc_bridge.roo.framing import DELIMITER, encode_frame
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.wire.messages import (
    AttachStartReply,
    AttachStartRequest,
    SlotDownContent,
    WelcomeContent,
)
from ipc_bridge.wire.session import Session, slot_topic
from tests.server.test_bridge_integration import Simulator, assert_contiguous, kind, named
from tests.streams import Collector

pytestmark = pytest.mark.timeout(30)

ACK = {"type": "Ack", "origin": "server", "data": {"clientId": "0123456789ab", "pid": 1, "ppid": 0}}


@pytest.fixture
def bridge(sockdir: Path) -> Iterator[BridgeProcess]:
    args = ("--start-timeout", "5", "--reconnect-interval", "0.05", "--hugz-interval", "0.2")
    proc = start_bridge_process(sockdir / "b", args=args)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def client(bridge: BridgeProcess) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect(bridge.connection_file)
    try:
        yield c
    finally:
        await c.close(linger_ms=0)


@pytest.fixture
def simulator(sockdir: Path) -> Iterator[Simulator]:
    (sockdir / "ws").mkdir()
    sim = Simulator(sockdir / "h1.sock", sockdir / "ws").start()
    try:
        yield sim
    finally:
        sim.kill()


def count_snapshots(client: BridgeClient) -> list[int | None]:
    """The ``since_seq`` of every snapshot ``client`` asks for from now on."""
    asked: list[int | None] = []
    snapshot = client.snapshot

    async def counted(slot: str, since_seq: int | None = 0, limit: int = 10_000) -> typing.Any:
        asked.append(since_seq)
        return await snapshot(slot, since_seq, limit)

    client.snapshot = counted  # type: ignore[method-assign]
    return asked


async def subscribed(client: BridgeClient, slot: str) -> asyncio.Future[WelcomeContent]:
    """Once a stream of ``client`` has sent its subscription to ``slot``: the welcome it waits for."""
    welcomes = client._streams._welcomes
    while slot_topic(slot) not in welcomes:  # noqa: ASYNC110 - lets the collector's task start
        await asyncio.sleep(0)
    return welcomes[slot_topic(slot)]


async def test_a_stream_opened_first_gets_every_event_live_exactly_once_in_order(
    simulator: Simulator, client: BridgeClient
) -> None:
    asked = count_snapshots(client)
    stream = Collector(client, "w1", since_seq=0)
    try:
        welcome = await subscribed(client, "w1")
        task = await client.attach_start("w1", str(simulator.path), "write hello", connect_timeout=10)
        await stream.wait(named("taskIdle", task))
        assert (await welcome).seq == 0  # the slot did not exist yet: nothing to fetch
        assert_contiguous(stream.events)  # from seq 1, no gap, no repeat
        assert stream.events[0].msg_type == "slot_up"
        created = next(e for e in stream.events if e.event_name == "taskCreated")
        assert created.task_id == task and created.parent["msg_type"] == "attach_start"
        assert asked == []  # no round trip beyond the request itself
        assert len(stream.events) > 10
    finally:
        await stream.close()


async def test_a_stream_opened_after_the_reply_fills_from_the_replay_buffer(
    simulator: Simulator, client: BridgeClient
) -> None:
    task = await client.attach_start("w1", str(simulator.path), "write hello", connect_timeout=10)
    asked = count_snapshots(client)
    stream = Collector(client, "w1", since_seq=0)
    try:
        await stream.wait(named("taskIdle", task))
        assert_contiguous(stream.events)
        assert stream.events[0].msg_type == "slot_up" and asked and asked[0] == 0
    finally:
        await stream.close()


async def test_close_detach_sends_close_task_then_detaches(
    simulator: Simulator, client: BridgeClient
) -> None:
    stream = Collector(client, "w1", since_seq=0)
    try:
        await subscribed(client, "w1")
        task = await client.attach_start("w1", str(simulator.path), "write hello", connect_timeout=10)
        await stream.wait(named("taskIdle", task))
        assert await client.close_detach("w1") is True
        assert simulator.proc is not None and await asyncio.to_thread(simulator.proc.wait, 10) == 0
        down = await stream.wait(kind("slot_down"))
        assert isinstance(down.content, SlotDownContent) and down.content.reason == "detached"
        assert [(s.slot, s.state, s.owner) for s in await client.slots()] == [("w1", "detached", None)]
        assert await client.close_detach("w1") is False  # nothing to close: detached all the same
        with pytest.raises(UnknownSlot):
            await client.close_detach("w2")
        assert_contiguous(stream.events)
    finally:
        await stream.close()


async def test_an_attach_that_fails_attaches_nothing(
    sockdir: Path, simulator: Simulator, client: BridgeClient
) -> None:
    with pytest.raises(ConnectFailed):
        await client.attach_start("w1", str(sockdir / "nobody.sock"), "hi", connect_timeout=0.2)
    assert await client.slots() == []
    bad = AttachStartRequest(slot="w1", socket_path=str(simulator.path), command={"commandName": "CloseTask"})
    with pytest.raises(InvalidCommand, match="takes StartNewTask"):
        await client.request("attach_start", bad)
    assert await client.slots() == []


async def test_a_retried_attach_start_starts_one_task(
    simulator: Simulator, bridge: BridgeProcess, client: BridgeClient
) -> None:
    """Lazy Pirate resends reuse the msg_id: every copy gets the first one's reply."""
    session = Session(bridge.key)
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(bridge.connection.command_endpoint)
    stream = Collector(client, "w1", since_seq=0)
    try:
        msg_id = session.new_msg_id()
        command = {"commandName": "StartNewTask", "data": {"text": "x"}}
        req = AttachStartRequest(slot="w1", socket_path=str(simulator.path), command=command)
        for _ in range(3):  # back to back: the later ones arrive while the first is in flight
            await dealer.send_multipart(session.serialize("attach_start", req, msg_id=msg_id))
        replies = [session.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 10)) for _ in range(3)]
        task_ids = {AttachStartReply.model_validate(r.content).task_id for r in replies}
        assert len(task_ids) == 1 and None not in task_ids
        await client.query("w1", "GetModes")  # handled in order: a second task would show before it
        await stream.wait(named("modesResponse"))
        assert [e.task_id for e in stream.events if e.event_name == "taskCreated"] == list(task_ids)
        assert [e.msg_type for e in stream.events].count("slot_up") == 1
    finally:
        dealer.close()
        await stream.close()


HostSide = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def scripted_host(path: Path, after_ack: HostSide) -> tuple[asyncio.Server, asyncio.Queue[bytes]]:
    """A node-ipc host that acks, then does ``after_ack``; then what it reads goes, frame by frame, to
    the queue returned (``b""`` when the bridge hangs up)."""
    frames: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(ACK))
        try:
            await after_ack(reader, writer)
            while True:
                frames.put_nowait(await reader.readuntil(DELIMITER))
        except (asyncio.IncompleteReadError, ConnectionError):
            frames.put_nowait(b"")
        finally:
            writer.close()

    return await asyncio.start_unix_server(serve, str(path)), frames


async def test_a_start_that_times_out_leaves_the_slot_attached(sockdir: Path, client: BridgeClient) -> None:
    """A host that acks but never creates a task: the attach holds, the start fails, close_detach
    still delivers the CloseTask before it hangs up."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass

    server, frames = await scripted_host(sockdir / "mute.sock", mute)
    try:
        with pytest.raises(StartFailed) as failed:
            await client.attach_start(
                "w1", str(sockdir / "mute.sock"), "hi", connect_timeout=5, start_timeout=0.3
            )
        assert isinstance(failed.value.cause, CommandTimeout)
        assert str(failed.value) == "task_command: no taskCreated within 0.3 s"  # as start_task says it
        assert failed.value.slot.state == "up"
        assert [s.state for s in await client.slots()] == ["up"]
        assert await client.close_detach("w1") is True
        read = [await asyncio.wait_for(frames.get(), 10) for _ in range(3)]
        assert [b"StartNewTask" in read[0], b"CloseTask" in read[1], read[2]] == [True, True, b""]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_host_gone_between_attach_and_start_fails_the_start(
    sockdir: Path, client: BridgeClient
) -> None:
    async def gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(DELIMITER)  # the StartNewTask: the host dies before creating the task
        raise ConnectionError

    server, _ = await scripted_host(sockdir / "dies.sock", gone)
    stream = Collector(client, "w1", since_seq=0)
    try:
        await subscribed(client, "w1")
        with pytest.raises(StartFailed) as failed:
            await client.attach_start("w1", str(sockdir / "dies.sock"), "hi", connect_timeout=5)
        assert isinstance(failed.value.cause, SlotDown)
        await stream.wait(kind("slot_down"))
        # The socket still accepts, so the bridge may reconnect (slot_up again) before this line runs.
        assert [e.msg_type for e in stream.events][:2] == ["slot_up", "slot_down"]
        assert_contiguous(stream.events)
        (info,) = await client.slots()
        assert info.owner == client.session.session  # still ours: the worker detaches it
        await client.detach("w1")
    finally:
        await stream.close()
        server.close()
        await server.wait_closed()
