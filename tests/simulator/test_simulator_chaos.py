"""Injected faults of the simulator: the ``chaos`` draw and the ``freeze`` outcome.

The draw is a pure function of the host seed, so every test picks its seeds by asking
:func:`chaos_outcome` first, then checks that a host with that seed does what the draw said.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.roo.extension import ConnectTimeout, ExtensionConnection, connect
from ipc_bridge.roo.protocol import CancelTask, CloseTask, GetModes, StartNewTask, StartNewTaskData
from ipc_bridge.simulator.farm import FarmClient
from ipc_bridge.simulator.farm import SimulatorFarm as Farm
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.script import Chaos, ScriptError, chaos_outcome, parse_script
from tests.ipc_waits import until_disconnected, until_event

pytestmark = pytest.mark.timeout(20)

FAST = {"time_scale": 0.05, "status_delay": 0.1}
HALF = {"crash": 0.5, "freeze": 0.25}
QUIET = 0.5
"""How long a frozen host is watched for a reaction that must not come."""


def start(script: dict[str, Any]) -> StartNewTask:
    return StartNewTask(data=StartNewTaskData(configuration={"simulate": script}, text="do it"))


def seed_for(*outcomes: str | None, chaos: dict[str, float] = HALF) -> int:
    """The first host seed whose successive tasks draw ``outcomes``."""
    for seed in itertools.count():
        if all(chaos_outcome(seed, chaos, n) == want for n, want in enumerate(outcomes)):
            return seed
    raise AssertionError("unreachable")


_received: Counter[int] = Counter()
"""Frames read per connection (by id): what a host sent before it froze is still on its way."""


async def recv(conn: ExtensionConnection) -> dict[str, Any]:
    data = await conn.recv_data()
    _received[id(conn)] += 1
    return data


async def _until_event(conn: ExtensionConnection, name: str, timeout: float = 5.0) -> dict[str, Any]:
    return await until_event(conn, name, timeout, recv=recv)


def gone(path: str) -> bool:
    return not os.path.exists(path)


async def assert_silent(conn: ExtensionConnection, host: SimulatorHost) -> None:
    """Nothing more than what ``host`` (frozen, its only client ``conn``) sent before it froze arrives."""
    sent = host.server.stats.frames_out - 1  # the Ack went out before any event
    for _ in range(sent - _received[id(conn)]):
        await asyncio.wait_for(recv(conn), 5)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(conn.recv_data(), QUIET)


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    _received.clear()  # ids of closed connections are reused


@pytest.fixture
async def farm(sockdir: Path) -> AsyncIterator[tuple[Farm, FarmClient]]:
    server = Farm(sockdir / "ctl", {**FAST, "workspace": str(sockdir)})
    await server.start()
    client = await FarmClient.connect(server.control_path)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


# ------------------------------------------------------------------------------------------ draw


def test_the_draw_is_a_pure_function_of_seed_chaos_and_task() -> None:
    draws = [chaos_outcome(seed, HALF, task) for seed in range(200) for task in range(3)]
    assert draws == [chaos_outcome(seed, Chaos(**HALF), task) for seed in range(200) for task in range(3)]
    assert set(draws) == {"crash", "freeze", None}
    # the task index matters: a host's second task is not doomed to repeat its first one's fate
    assert [chaos_outcome(s, HALF, 0) for s in range(200)] != [chaos_outcome(s, HALF, 1) for s in range(200)]
    assert chaos_outcome(7, None) is None


@pytest.mark.parametrize(("crash", "freeze"), [(0.01, 0.01), (0.05, 0.05), (0.3, 0.6)])
def test_draws_follow_the_probabilities(crash: float, freeze: float) -> None:
    n = 40_000
    counts = Counter(chaos_outcome(seed, {"crash": crash, "freeze": freeze}) for seed in range(n))
    for outcome, p in (("crash", crash), ("freeze", freeze)):
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[outcome] - n * p) < 5 * sigma, (outcome, counts)


def test_the_bands_at_their_edges() -> None:
    seeds = range(500)
    assert {chaos_outcome(s, {}) for s in seeds} == {None}
    assert {chaos_outcome(s, {"crash": 1}) for s in seeds} == {"crash"}
    assert {chaos_outcome(s, {"freeze": 1}) for s in seeds} == {"freeze"}
    assert {chaos_outcome(s, {"crash": 0.5, "freeze": 0.5}) for s in seeds} == {"crash", "freeze"}


@pytest.mark.parametrize(
    ("chaos", "message"),
    [
        ({"crash": 0.7, "freeze": 0.4}, "must be <= 1"),
        ({"crash": -0.1}, "chaos.crash"),
        ({"freeze": 1.5}, "chaos.freeze"),
        ({"hang": 0.1}, "unknown key 'chaos.hang'"),
    ],
)
def test_bad_chaos_is_a_script_error(chaos: dict[str, float], message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script({"chaos": chaos})


# ---------------------------------------------------------------------------------------- freeze


async def test_freeze_ignores_every_command_but_stop_still_ends_the_host(sockdir: Path) -> None:
    (sockdir / "ws").mkdir()
    host = SimulatorHost(sockdir / "f.sock", sockdir / "ws", **FAST)
    await host.start()
    try:
        conn = await connect(host.socket_path, timeout=5)
        try:
            await conn.send_command(start({"outcome": "freeze", "duration": "1s"}))
            await _until_event(conn, "taskStarted")
            await asyncio.wait_for(host.wait_frozen(), 5)
            for command in (CancelTask(), GetModes(), CloseTask()):
                await conn.send_command(command)
            await assert_silent(conn, host)  # no taskAborted, no modesResponse, no goodbye
            assert not host.closed
            assert stat.S_ISSOCK(os.stat(host.socket_path).st_mode)
            with pytest.raises(ConnectTimeout):  # a stopped process accepts but never sends its Ack
                await connect(host.socket_path, timeout=QUIET)

            await asyncio.wait_for(host.stop(), 5)
            await until_disconnected(conn)
            assert host.closed
            assert gone(host.socket_path)
        finally:
            await conn.close()
    finally:
        await host.stop()


async def test_a_frozen_host_in_a_farm_blocks_no_other_and_closes_on_request(
    farm: tuple[Farm, FarmClient], sockdir: Path
) -> None:
    server, client = farm
    a, b = str(sockdir / "a.sock"), str(sockdir / "b.sock")
    ended_a, ended_b = await client.open(a), await client.open(b)
    conn_a, conn_b = await connect(a, timeout=5), await connect(b, timeout=5)
    try:
        await conn_a.send_command(start({"outcome": "freeze", "duration": "1s"}))
        frozen = server.host(a)
        assert frozen is not None
        await asyncio.wait_for(frozen.wait_frozen(), 5)
        await conn_a.send_command(CloseTask())

        await conn_b.send_command(start({"duration": "1s", "files": {"x.txt": "x"}}))
        await _until_event(conn_b, "taskIdle")  # the farm's other host runs on meanwhile
        assert not ended_a.done() and sorted(server.hosts) == [a, b]

        await client.request("close", timeout=5, socket=a)
        assert await asyncio.wait_for(ended_a, 5) is False
        await until_disconnected(conn_a)
        assert gone(a)
        assert not ended_b.done()
    finally:
        await conn_a.close()
        await conn_b.close()


# ----------------------------------------------------------------------------------------- chaos


async def test_chaos_crash_behaves_like_the_crash_outcome(
    farm: tuple[Farm, FarmClient], sockdir: Path
) -> None:
    _, client = farm
    script = {"chaos": HALF, "duration": "1s", "files": {"c.txt": "c"}}
    crashed, spared = str(sockdir / "c.sock"), str(sockdir / "s.sock")
    ended_c = await client.open(crashed, seed=seed_for("crash"))
    ended_s = await client.open(spared, seed=seed_for(None))
    conn_c, conn_s = await connect(crashed, timeout=5), await connect(spared, timeout=5)
    try:
        await conn_c.send_command(start(script))
        await conn_s.send_command(start(script))
        await until_disconnected(conn_c)
        assert await asyncio.wait_for(ended_c, 5) is True  # announced as a crash, like outcome: crash
        assert gone(crashed)
        assert (sockdir / "c.txt").read_text() == "c"  # the work before the crash was done
        await _until_event(conn_s, "taskIdle")  # the scripted outcome where the draw spared the task
        assert not ended_s.done()
    finally:
        await conn_c.close()
        await conn_s.close()


async def test_chaos_freeze_and_the_draw_of_a_hosts_later_task(sockdir: Path) -> None:
    (sockdir / "ws").mkdir()
    script = {"chaos": HALF, "duration": "1s"}
    async with (
        SimulatorHost(sockdir / "h.sock", sockdir / "ws", seed=seed_for(None, "freeze"), **FAST) as host,
        await connect(host.socket_path, timeout=5) as conn,
    ):
        await conn.send_command(start(script))
        await _until_event(conn, "taskIdle")  # the first task was spared: it completed
        assert not host.frozen
        await conn.send_command(start(script))
        await _until_event(conn, "taskStarted")
        await asyncio.wait_for(host.wait_frozen(), 5)
        await conn.send_command(CancelTask())
        await assert_silent(conn, host)
