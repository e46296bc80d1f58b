"""The bridge process between real simulator processes and the worker client.

Every host is ``orchestrate simulate`` in its own process (so it can be SIGKILLed), every bridge is
``python -m ipc_bridge.server.cli`` started by the launcher; fixtures kill whatever a test leaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import ConnectFailed, Event, EventGap, InvalidCommand, SlotDown, SlotExists
from ipc_bridge.roo.framing import encode_frame
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.wire.messages import (
    SlotDownContent,
    SlotUpContent,
    TaskCommandReply,
    TaskCommandRequest,
    TaskEventContent,
)
from ipc_bridge.wire.session import Session, slot_topic
from tests.streams import Collector

pytestmark = pytest.mark.timeout(30)

ORCHESTRATE = Path(sys.executable).with_name("orchestrate")
FAST = ("--time-scale", "0.05", "--status-delay", "0.1")
HANG = {"simulate": {"outcome": "hang", "text": "thinking"}}


class Simulator:
    """``orchestrate simulate`` on one socket path, as a child process."""

    def __init__(self, path: Path, workspace: Path) -> None:
        self.path = path
        self.workspace = workspace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Simulator:
        self.proc = subprocess.Popen(
            [
                str(ORCHESTRATE),
                "simulate",
                "--socket",
                str(self.path),
                "--workspace",
                str(self.workspace),
                *FAST,
            ],
            stdin=subprocess.DEVNULL,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


@pytest.fixture
def simulators(sockdir: Path) -> Iterator[Callable[[str], Simulator]]:
    made: list[Simulator] = []
    workspace = sockdir / "ws"
    workspace.mkdir()

    def start(name: str) -> Simulator:
        sim = Simulator(sockdir / f"{name}.sock", workspace).start()
        made.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in made:
            sim.kill()


def _bridge(sockdir: Path, *args: str, **kwargs: object) -> BridgeProcess:
    base = ("--start-timeout", "5", "--reconnect-interval", "0.05", "--hugz-interval", "0.2")
    return start_bridge_process(sockdir / "b", args=(*base, *args), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def bridge(sockdir: Path) -> Iterator[BridgeProcess]:
    proc = _bridge(sockdir)
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


def named(name: str, task_id: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e.event_name == name and (task_id is None or e.task_id == task_id)


def kind(msg_type: str) -> Callable[[Event], bool]:
    return lambda e: e.msg_type == msg_type


def at_seq(seq: int) -> Callable[[Event], bool]:
    return lambda e: e.seq == seq


def seq_of(event: Event) -> int:
    assert event.seq is not None
    return event.seq


def assert_contiguous(events: list[Event], first: int = 1) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))


# --------------------------------------------------------------------------------------------- tests


async def test_start_task_returns_the_new_id_even_over_an_older_task(
    simulators: Callable[[str], Simulator], client: BridgeClient
) -> None:
    sim = simulators("h1")
    info = await client.attach("w1", str(sim.path), connect_timeout=10)
    assert sim.proc is not None and info.state == "up" and info.pid == sim.proc.pid
    stream = Collector(client, "w1")
    try:
        first = await client.start_task("w1", "one", HANG)
        await stream.wait(named("taskStarted", first))
        second = await client.start_task("w1", "two", HANG)
        assert second != first
        created = await stream.wait(named("taskCreated", second))
        aborted = await stream.wait(named("taskAborted", first))
        assert aborted.seq is not None and created.seq is not None and aborted.seq < created.seq
        # Events carry the StartNewTask that caused them; the old task's keep the old parent.
        first_created = await stream.wait(named("taskCreated", first))
        assert created.parent["msg_type"] == "task_command"
        assert created.parent["session"] == client.session.session
        assert created.parent_msg_id != first_created.parent_msg_id
        assert aborted.parent_msg_id == first_created.parent_msg_id
        assert all(e.parent_msg_id == created.parent_msg_id for e in stream.events if e.task_id == second)
        assert_contiguous(stream.events)
        assert stream.events[0].msg_type == "slot_up"
    finally:
        await stream.close()


async def test_a_repeated_start_task_starts_one_task(
    simulators: Callable[[str], Simulator], bridge: BridgeProcess, client: BridgeClient
) -> None:
    """Lazy Pirate resends reuse the msg_id: the bridge answers both sends from one StartNewTask."""
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    stream = Collector(client, "w1")
    session = Session(bridge.key)
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(bridge.connection.command_endpoint)
    try:
        msg_id = session.new_msg_id()
        req = TaskCommandRequest(slot="w1", command={"commandName": "StartNewTask", "data": {"text": "x"}})
        for _ in range(3):  # back to back: the later ones arrive while the first is in flight
            await dealer.send_multipart(session.serialize("task_command", req, msg_id=msg_id))
        replies = [session.deserialize(await asyncio.wait_for(dealer.recv_multipart(), 10)) for _ in range(3)]
        task_ids = {TaskCommandReply.model_validate(r.content).task_id for r in replies}
        assert len(task_ids) == 1 and None not in task_ids
        # The simulator handles commands in order: once GetModes is answered, a second StartNewTask
        # would have shown its taskCreated.
        await client.query("w1", "GetModes")
        await stream.wait(named("modesResponse"))
        assert [e.task_id for e in stream.events if e.event_name == "taskCreated"] == list(task_ids)
    finally:
        dealer.close()
        await stream.close()


async def test_every_command_gets_a_reply(
    simulators: Callable[[str], Simulator], client: BridgeClient
) -> None:
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    stream = Collector(client, "w1")
    try:
        modes = await client.query("w1", "GetModes")
        assert "code" in {m["slug"] for m in modes}
        assert "init" in {c["name"] for c in await client.query("w1", "GetCommands")}
        assert "simulator/model" in await client.query("w1", "GetModels")
        response = await stream.wait(named("modesResponse"))
        assert response.task_id is None and response.topic == slot_topic("w1")
        assert response.parent["msg_type"] == "task_command"

        task = await client.start_task("w1", "work", HANG)
        await stream.wait(named("taskStarted", task))
        await client.send_message("w1", "queued please")
        queued = await stream.wait(named("queuedMessagesUpdated", task))
        assert isinstance(queued.content, TaskEventContent)
        message_id = queued.content.event["payload"][1][0]["id"]
        await client.delete_queued_message("w1", message_id)
        await stream.wait(
            lambda e: (
                isinstance(e.content, TaskEventContent)
                and e.event_name == "queuedMessagesUpdated"
                and e.content.event["payload"][1] == []
            )
        )
        await client.cancel("w1")
        await stream.wait(named("taskAborted", task))
        await stream.wait(named("taskResumable", task))
        await client.resume("w1", task)
        await client.close_task("w1")  # the simulated window closes: its socket goes away
        down = await stream.wait(kind("slot_down"))
        assert isinstance(down.content, SlotDownContent) and "closed" in down.content.reason

        for bad in ({"commandName": "Nope"}, {"commandName": "StartNewTask", "data": {"text": 5}}):
            with pytest.raises(InvalidCommand):
                await client.task_command("w1", bad)
        with pytest.raises(SlotDown):
            await client.cancel("w1")
        assert_contiguous(stream.events)
    finally:
        await stream.close()


async def test_late_subscriber_recovers_every_event(
    simulators: Callable[[str], Simulator], bridge: BridgeProcess, client: BridgeClient
) -> None:
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    live = Collector(client, "w1")
    late_client = await BridgeClient.connect(bridge.connection)
    late: Collector | None = None
    try:
        task = await client.start_task("w1", "write hello")
        idle = await live.wait(named("taskIdle", task))
        assert_contiguous(live.events)
        assert len(live.events) > 15

        late = Collector(late_client, "w1", since_seq=0)
        await late.wait(lambda e: e.seq == idle.seq)
        assert [(e.seq, e.msg_type, e.content, e.parent) for e in late.events] == [
            (e.seq, e.msg_type, e.content, e.parent) for e in live.events
        ]
        # From a seq in the middle; and one page of a snapshot.
        middle = await late_client.wait_for("w1", lambda e: True, 5, since_seq=10)
        assert middle.seq == 11
        last = seq_of(idle)
        reply, events = await late_client.snapshot("w1", since_seq=last - 3, limit=2)
        assert [e.seq for e in events] == [last - 2, last - 1] and reply.more and reply.complete
        reply, events = await late_client.snapshot("w1", since_seq=None)
        assert events == [] and reply.last_seq == last
    finally:
        await live.close()
        if late is not None:
            await late.close()
        await late_client.close(linger_ms=0)


async def test_a_stream_welcomed_at_its_own_seq_needs_no_snapshot(
    simulators: Callable[[str], Simulator], bridge: BridgeProcess, client: BridgeClient
) -> None:
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    first = await client.start_task("w1", "write hello")
    idle = await client.wait_for("w1", named("taskIdle", first), 10, since_seq=0)
    last = seq_of(idle)
    fresh = await BridgeClient.connect(bridge.connection)
    snapshots: list[int | None] = []
    snapshot = fresh.snapshot

    async def counted(slot: str, since_seq: int | None, limit: int | None = None) -> typing.Any:
        snapshots.append(since_seq)
        return await snapshot(slot, since_seq) if limit is None else await snapshot(slot, since_seq, limit)

    fresh.snapshot = counted  # type: ignore[method-assign]
    caught_up = Collector(fresh, "w1", since_seq=last)  # its welcome says the slot is at `last`
    behind: Collector | None = None
    try:
        # Start the next task once the stream is welcomed (its welcome then names `last`).
        welcomes = fresh._streams._welcomes
        while slot_topic("w1") not in welcomes:  # noqa: ASYNC110 - lets the collector's task start
            await asyncio.sleep(0)
        assert (await asyncio.wait_for(asyncio.shield(welcomes[slot_topic("w1")]), 10)).seq == last
        second = await client.start_task("w1", "write again")
        await caught_up.wait(named("taskIdle", second))
        assert_contiguous(caught_up.events, first=last + 1)
        assert snapshots == []
        # Another stream of the same client shares the topic: it cannot trust the earlier welcome.
        behind = Collector(fresh, "w1", since_seq=last - 3)
        await behind.wait(at_seq(last - 2))
        assert snapshots and snapshots[0] == last - 3
        assert behind.events[0].seq == last - 2
    finally:
        await caught_up.close()
        if behind is not None:
            await behind.close()
        await fresh.close(linger_ms=0)


async def test_a_dropped_event_is_detected_and_filled(
    simulators: Callable[[str], Simulator],
    bridge: BridgeProcess,
    client: BridgeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    witness_client = await BridgeClient.connect(bridge.connection)
    victim = Collector(client, "w1")
    witness = Collector(witness_client, "w1")
    topic = slot_topic("w1")
    caplog.set_level(logging.INFO, logger="ipc_bridge.client.event_stream")
    try:
        await victim.wait(kind("slot_up"))
        await witness.wait(kind("slot_up"))
        for phase in ("live event", "hugz"):
            # The victim's SUB filters locally: what arrives while unsubscribed is lost to it.
            client._sub.unsubscribe(topic)
            lost = seq_of(witness.events[-1]) + 1
            await witness_client.query("w1", "GetModes")
            await witness.wait(at_seq(lost))
            client._sub.subscribe(topic)
            if phase == "live event":
                await witness_client.query("w1", "GetModes")  # seq lost+1 reveals the gap
            # else: the next idle hugz carries seq == lost and reveals the missing tail
            await victim.wait(at_seq(lost))
            assert_contiguous(victim.events)
        assert [e.seq for e in victim.events] == [e.seq for e in witness.events][: len(victim.events)]
        assert sum("gap after seq" in r.getMessage() for r in caplog.records) >= 2
    finally:
        await victim.close()
        await witness.close()
        await witness_client.close(linger_ms=0)


async def test_a_gap_older_than_the_replay_buffer_raises(
    sockdir: Path, simulators: Callable[[str], Simulator]
) -> None:
    sim = simulators("h1")
    bridge = _bridge(sockdir, "--buffer-events", "5")
    c = await BridgeClient.connect(bridge.connection)
    try:
        await c.attach("w1", str(sim.path), connect_timeout=10)
        task = await c.start_task("w1", "write hello")
        idle = await c.wait_for("w1", named("taskIdle", task), 10, since_seq=None)
        last = seq_of(idle)
        assert last > 10
        with pytest.raises(EventGap) as err:
            await c.wait_for("w1", lambda e: True, 5, since_seq=0)
        assert err.value.expected == 1 and err.value.available == last - 4
        recent = await c.wait_for("w1", lambda e: True, 5, since_seq=last - 2)
        assert recent.seq == last - 1
    finally:
        await c.close(linger_ms=0)
        bridge.kill()


async def test_host_killed_mid_task_then_back_on_the_same_path(
    simulators: Callable[[str], Simulator], client: BridgeClient
) -> None:
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    stream = Collector(client, "w1")
    try:
        task = await client.start_task("w1", "work", HANG)
        await stream.wait(named("taskStarted", task))
        sim.kill()
        down = await stream.wait(kind("slot_down"))
        assert isinstance(down.content, SlotDownContent) and "closed" in down.content.reason
        with pytest.raises(SlotDown, match="slot w1"):
            await client.start_task("w1", "again")
        with pytest.raises(SlotDown):
            await client.query("w1", "GetModes")
        assert [s.state for s in await client.slots()] == ["down"]

        restarted = simulators("h1")
        up = await stream.wait(lambda e: e.msg_type == "slot_up" and e.seq != 1)
        assert isinstance(up.content, SlotUpContent) and restarted.proc is not None
        assert up.content.pid == restarted.proc.pid
        task2 = await client.start_task("w1", "after the restart")
        await stream.wait(named("taskIdle", task2))
        assert_contiguous(stream.events)
        assert [s.state for s in await client.slots()] == ["up"]
    finally:
        await stream.close()


async def test_attach_detach_and_reattach(
    sockdir: Path, simulators: Callable[[str], Simulator], client: BridgeClient
) -> None:
    with pytest.raises(ConnectFailed):
        await client.attach("w1", str(sockdir / "nobody.sock"), connect_timeout=0.2)
    assert await client.slots() == []
    sim = simulators("h1")
    await client.attach("w1", str(sim.path), connect_timeout=10)
    with pytest.raises(SlotExists):
        await client.attach("w1", str(sim.path))
    stream = Collector(client, "w1")
    try:
        await client.detach("w1")
        down = await stream.wait(kind("slot_down"))
        assert isinstance(down.content, SlotDownContent) and down.content.reason == "detached"
        with pytest.raises(SlotDown, match="detached"):
            await client.cancel("w1")
        await client.attach("w1", str(sim.path), connect_timeout=10)
        await stream.wait(lambda e: e.msg_type == "slot_up" and e.seq == 3)  # the seq goes on
        assert_contiguous(stream.events)
    finally:
        await stream.close()


async def test_detached_slots_are_forgotten_beyond_the_keep_limit(
    sockdir: Path, simulators: Callable[[str], Simulator]
) -> None:
    # A run attaches a fresh slot per attempt: a bridge that kept every detached one grew ~200 kB each.
    bridge = _bridge(sockdir, "--keep-detached", "2")
    c = await BridgeClient.connect(bridge.connection)
    try:
        sim = simulators("h1")
        for n in range(5):
            await c.attach(f"w{n}", str(sim.path), connect_timeout=10)
            await c.detach(f"w{n}")
        assert sorted(s.slot for s in await c.slots()) == ["w3", "w4"]
        await c.attach("w3", str(sim.path), connect_timeout=10)  # a kept slot re-attaches, seq going on
        (w3,) = [s for s in await c.slots() if s.slot == "w3"]
        assert w3.state == "up" and w3.seq == 3
        await c.attach("w0", str(sim.path), connect_timeout=10)  # a forgotten one starts afresh
        (w0,) = [s for s in await c.slots() if s.slot == "w0"]
        assert w0.seq == 1
    finally:
        await c.close(linger_ms=0)
        bridge.kill()


async def test_attach_at_startup_and_shutdown_notice(
    sockdir: Path, simulators: Callable[[str], Simulator]
) -> None:
    path = sockdir / "h1.sock"
    bridge = _bridge(sockdir, attach={"w1": str(path)})
    c = await BridgeClient.connect(bridge.connection)
    stream = Collector(c, "w1")
    try:
        simulators("h1")  # the host comes after the bridge: the slot connects when it listens
        await stream.wait(kind("slot_up"))
        task = await c.start_task("w1", "hi", HANG)
        await stream.wait(named("taskStarted", task))
        assert await asyncio.to_thread(bridge.stop) == 0
        stopping = await stream.wait(kind("bridge_stopping"))
        assert stopping.seq == len(stream.events)
        assert sorted(os.listdir(sockdir / "b")) == []
    finally:
        await stream.close()
        await c.close(linger_ms=0)
        bridge.kill()


async def test_start_task_times_out_when_no_task_is_created(sockdir: Path) -> None:
    """A host that acks but never creates a task (a policy block looks like this): an error reply."""
    ack = {"type": "Ack", "origin": "server", "data": {"clientId": "0123456789ab", "pid": 1, "ppid": 0}}
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(encode_frame(ack))
        await reader.read()  # until the bridge goes away

    server = await asyncio.start_unix_server(silent, str(sockdir / "mute.sock"))
    bridge = _bridge(sockdir, "--start-timeout", "0.3")
    c = await BridgeClient.connect(bridge.connection)
    try:
        await c.attach("w1", str(sockdir / "mute.sock"), connect_timeout=5)
        with pytest.raises(Exception, match=r"no taskCreated within 0.3 s") as err:
            await c.start_task("w1", "hi")
        assert type(err.value).__name__ == "CommandTimeout"
    finally:
        await c.close(linger_ms=0)
        await asyncio.to_thread(bridge.stop)
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
