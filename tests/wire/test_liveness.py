"""Application heartbeats both ways: the bridge expires silent clients and releases their slots, and a
client notices a dead, stopped or silent bridge (``BridgeLost``) instead of waiting forever.

Real bridge and simulator processes; the client that dies is a child process SIGKILLed mid-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.bridge_watch import BridgeWatch
from ipc_bridge.client.types import BridgeLost, BridgeRestarted, Event, SlotExists
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.server.slots import OWNER_EXPIRED
from ipc_bridge.wire.connection_file import read_connection_file
from ipc_bridge.wire.liveness import PeerRegistry, Ticker
from ipc_bridge.wire.messages import SlotDownContent, SlotsRequest
from ipc_bridge.wire.session import BRIDGE_TOPIC, Session

pytestmark = pytest.mark.timeout(30)

ORCHESTRATE = Path(sys.executable).with_name("orchestrate")

# A worker in miniature: attach a slot, say so, then just live (heartbeats) until killed.
OWNER_SCRIPT = """
import asyncio, sys
from ipc_bridge.client.bridge_client import BridgeClient

async def main():
    conn, slot, path, interval = sys.argv[1:5]
    client = await BridgeClient.connect(conn, heartbeat_interval=float(interval))
    await client.attach(slot, path, connect_timeout=10)
    print("attached", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def simulator(sockdir: Path, processes: list[subprocess.Popen[bytes]]) -> Callable[[str], str]:
    """Start ``orchestrate simulate`` on ``<sockdir>/<name>.sock``; returns the socket path."""
    workspace = sockdir / "ws"
    workspace.mkdir()

    def start(name: str) -> str:
        path = str(sockdir / f"{name}.sock")
        argv = [str(ORCHESTRATE), "simulate", "--socket", path, "--workspace", str(workspace)]
        processes.append(subprocess.Popen([*argv, "--time-scale", "0.05"], stdin=subprocess.DEVNULL))
        return path

    return start


@pytest.fixture
def start_owner(processes: list[subprocess.Popen[bytes]]) -> Callable[..., subprocess.Popen[bytes]]:
    """Run OWNER_SCRIPT: a client process that attaches ``slot`` and heartbeats every ``interval``."""

    def start(conn: Path, slot: str, path: str, interval: float) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-c", OWNER_SCRIPT, str(conn), slot, path, str(interval)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        processes.append(proc)
        return proc

    return start


def _bridge(sockdir: Path, hugz: float, **kwargs: object) -> BridgeProcess:
    args = ("--hugz-interval", str(hugz), "--reconnect-interval", "0.05")
    return start_bridge_process(sockdir / "b", args=args, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def connected(bridge: BridgeProcess, **kwargs: object) -> AsyncGenerator[BridgeClient, None]:
    client = await BridgeClient.connect(bridge.connection_file, **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.close(linger_ms=0)


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait for a condition that no event announces (e.g. ``bridge_lost`` cleared), with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Follower:
    """``client.events(slot, 0)`` in the background: records events, ends with the stream's error."""

    def __init__(self, client: BridgeClient, slot: str) -> None:
        self.events: list[Event] = []
        self.up = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(client, slot))

    async def _run(self, client: BridgeClient, slot: str) -> None:
        async with contextlib.aclosing(client.events(slot, since_seq=0)) as stream:
            async for event in stream:
                self.events.append(event)
                if event.msg_type == "slot_up":
                    self.up.set()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


# ------------------------------------------------------------------------------ bridge -> client


async def test_a_killed_client_loses_its_slots_a_live_one_keeps_them(
    sockdir: Path, simulator: Callable[[str], str], start_owner: Callable[..., subprocess.Popen[bytes]]
) -> None:
    static = simulator("h0")
    bridge = _bridge(sockdir, 0.2, attach={"w0": static})  # attached at start-up: nobody owns it
    try:
        orphaned, kept = simulator("h1"), simulator("h2")
        owner = start_owner(bridge.connection_file, "w1", orphaned, 0.5)
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 15)
        assert line == b"attached\n"
        async with connected(bridge, heartbeat_interval=0.2) as live:
            hb = await live.heartbeat()
            assert (hb.hugz_interval, hb.liveness) == (0.2, 3)
            await live.attach("w2", kept, connect_timeout=10)
            slots = {s.slot: s for s in await live.slots()}
            assert slots["w1"].state == "up"
            assert slots["w1"].owner not in (None, live.session.session)
            with pytest.raises(SlotExists):  # held by the other client
                await live.attach("w1", orphaned)

            async with contextlib.aclosing(live.events("w1", since_seq=0)) as stream:
                first = await asyncio.wait_for(stream.__anext__(), 5)  # subscribed, replayed slot_up
                assert first.msg_type == "slot_up"
                owner.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                # Only heartbeats go out from `live` from here on: they must keep w2 (window 3 x 0.2 s)
                # while w1's owner (3 x 0.5 s) is expired.
                down = await asyncio.wait_for(stream.__anext__(), 10)
                elapsed = time.monotonic() - killed
            assert down.msg_type == "slot_down" and isinstance(down.content, SlotDownContent)
            assert down.content.reason == OWNER_EXPIRED
            # Not on disconnect: after the owner's silence exceeded 3 of its announced 0.5 s intervals.
            assert 0.9 < elapsed < 4.0, elapsed

            slots = {s.slot: s for s in await live.slots()}
            assert slots["w1"].state == "detached" and slots["w1"].last_error == OWNER_EXPIRED
            assert slots["w2"].state == "up"
            assert slots["w2"].owner == live.session.session
            assert slots["w0"].state == "up" and slots["w0"].owner is None
            # Released, not leaked: another worker can take the host over.
            info = await live.attach("w1", orphaned, connect_timeout=10)
            assert info.state == "up" and info.owner == live.session.session
    finally:
        bridge.kill()


# ------------------------------------------------------------------------------ client -> bridge


async def test_a_stopped_bridge_is_lost_then_found_again(
    sockdir: Path, simulator: Callable[[str], str]
) -> None:
    # hugz 0.4 s: the client gives up after 1.2 s of silence, longer than the bridge waits for it
    # (3 x 0.2 s): the stopped bridge must not count its own pause as the client's silence.
    bridge = _bridge(sockdir, 0.4)
    assert read_connection_file(bridge.connection_file).hugz_interval == 0.4
    try:
        async with connected(bridge, heartbeat_interval=0.2) as client:
            assert client.watch.window == pytest.approx(1.2)
            await client.attach("w1", simulator("h1"), connect_timeout=10)
            follower = Follower(client, "w1")
            lost_at: list[tuple[float, BridgeLost]] = []
            client.on_lost.append(lambda exc: lost_at.append((time.monotonic(), exc)))
            try:
                await asyncio.wait_for(follower.up.wait(), 5)
                os.kill(bridge.pid, signal.SIGSTOP)
                stopped = time.monotonic()
                pending = asyncio.ensure_future(
                    client.task_command("w1", {"commandName": "GetModes"}, timeout=30)
                )
                with pytest.raises(BridgeLost):
                    await asyncio.wait_for(pending, 5)
                with pytest.raises(BridgeLost):
                    await asyncio.wait_for(follower.task, 5)
                assert len(lost_at) == 1 and client.bridge_lost is lost_at[0][1]
                assert 0.6 < lost_at[0][0] - stopped < 3.0
                assert lost_at[0][1].session == bridge.connection.session

                # Known lost: fail fast, no Lazy Pirate rounds.
                started = time.monotonic()
                with pytest.raises(BridgeLost):
                    await client.slots()
                with pytest.raises(BridgeLost):
                    await client.subscribe("w1")
                assert time.monotonic() - started < 0.5

                os.kill(bridge.pid, signal.SIGCONT)
                await until(lambda: client.bridge_lost is None, 5)
                (slot,) = await client.slots()  # same session: no restart, and our slot was kept
                assert slot.state == "up" and slot.owner == client.session.session
                assert client.bridge_session == bridge.connection.session
            finally:
                os.kill(bridge.pid, signal.SIGCONT)
                await follower.close()
    finally:
        bridge.kill()


async def test_a_killed_bridge_is_lost_and_its_successor_is_a_restart(
    sockdir: Path, simulator: Callable[[str], str]
) -> None:
    bridge = _bridge(sockdir, 0.2)
    successor: BridgeProcess | None = None
    try:
        async with connected(bridge, heartbeat_interval=0.2) as client:
            await client.attach("w1", simulator("h1"), connect_timeout=10)
            follower = Follower(client, "w1")
            restarts: list[BridgeRestarted] = []
            client.on_restart.append(restarts.append)
            try:
                await asyncio.wait_for(follower.up.wait(), 5)
                bridge.kill()
                killed = time.monotonic()
                pending = asyncio.ensure_future(
                    client.request_message("slots", SlotsRequest(), timeout=30, retries=0)
                )
                with pytest.raises(BridgeLost):
                    await asyncio.wait_for(pending, 5)
                with pytest.raises(BridgeLost):
                    await asyncio.wait_for(follower.task, 5)
                assert time.monotonic() - killed < 3.0
                with pytest.raises(BridgeLost):
                    await client.heartbeat()
                assert not restarts

                # Same endpoints and key: the client hears the new session and reports a restart.
                successor = _bridge(sockdir, 0.2, key=bridge.key)
                await until(lambda: client.bridge_lost is None, 5)
                assert [r.new for r in restarts] == [successor.connection.session]
                assert (await client.heartbeat()).session == successor.connection.session
                assert await client.slots() == []
            finally:
                await follower.close()
    finally:
        bridge.kill()
        if successor is not None:
            successor.kill()


async def test_an_idle_client_stays_alive_on_hugz_alone(sockdir: Path) -> None:
    bridge = _bridge(sockdir, 0.2)
    sub = zmq.asyncio.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    try:
        sub.subscribe(BRIDGE_TOPIC)
        sub.connect(bridge.connection.event_endpoint)
        async with connected(bridge, heartbeat_interval=None) as client:
            lost: list[BridgeLost] = []
            client.on_lost.append(lost.append)
            session = Session(bridge.key)
            hugz = 0
            while hugz < 10:  # 2 s: over three liveness windows of 0.6 s, no stream, no request
                msg = session.deserialize(await asyncio.wait_for(sub.recv_multipart(), 5))
                hugz += msg.msg_type == "hugz"
            assert not lost and client.bridge_lost is None
            assert (await client.heartbeat()).session == bridge.connection.session
    finally:
        sub.close()
        bridge.kill()


# -------------------------------------------------------------------------------------- the parts


def test_peer_registry_expires_silent_sessions_and_forgives_its_own_stalls() -> None:
    peers = PeerRegistry(interval=1.0, liveness=3)
    peers.seen("a", 0.0)
    peers.seen("b", 0.0)
    peers.announce("b", 0.2, 0.0)
    peers.announce("a", "bogus", 0.0)  # ignored: not a positive number
    assert peers.tick() == pytest.approx(0.05)
    assert [p.session for p in peers.expire(0.5)] == []
    assert [p.session for p in peers.expire(0.61)] == ["b"]
    assert "b" not in peers and "a" in peers
    peers.seen("a", 2.0)
    peers.credit(10.0, now=12.5)  # the bridge itself was stopped for 10 s
    assert peers.expire(14.9) == []
    assert [p.session for p in peers.expire(15.1)] == ["a"]


async def test_bridge_watch_guards_waits() -> None:
    watch = BridgeWatch(hugz_interval=0.1, liveness=3)
    loop = asyncio.get_running_loop()
    assert await watch.guard(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(asyncio.TimeoutError):
        await watch.guard(asyncio.sleep(5), 0.01)
    assert watch.check(loop.time(), "s") is None
    never: asyncio.Future[None] = loop.create_future()
    waiting = asyncio.ensure_future(watch.guard(never, 30))
    await asyncio.sleep(0)  # let it start waiting
    lost = watch.check(loop.time() + 0.31, "s")
    assert isinstance(lost, BridgeLost) and watch.lost is lost
    with pytest.raises(BridgeLost):
        await waiting
    assert never.cancelled()
    coro = asyncio.sleep(0)
    with pytest.raises(BridgeLost):
        await watch.guard(coro, 1)  # fails fast and closes the coroutine it never ran
    assert coro.cr_frame is None
    assert watch.heard(loop.time()) is True and watch.lost is None
    assert watch.heard(loop.time()) is False


async def test_ticker_reports_a_stall() -> None:
    # The clock is the test's: a real one on a loaded machine makes any wake-up a whole tick late.
    readings = iter([10.0, 10.15, 10.35, 11.0])
    ticker = Ticker(clock=lambda: next(readings))
    assert await ticker.sleep(0.1) == (10.15, 0.0)  # late by less than a tick: an ordinary wake-up
    assert await ticker.sleep(0.1) == (10.35, 0.0)
    now, stall = await ticker.sleep(0.1)  # woke 0.55 s late: the process was stopped or blocked
    assert now == 11.0 and stall == pytest.approx(0.55)
