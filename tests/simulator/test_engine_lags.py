"""The simulator's default timing is the real engine's (issue #14 item 5): ~2 s before the socket listens,
tens of ms from StartNewTask to taskCreated and on to taskStarted, the 2 s status lag; ``time_scale``
scales the lags with the script, ``engine_lags: false`` leaves them out.

Only lower bounds are asserted on wall time: the planned timeline never emits early, whatever the load.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ipc_bridge.roo.extension import connect
from ipc_bridge.roo.protocol import CancelTask
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.lags import CREATE_TO_START, FIRST_CREATE, STARTUP, EngineLags
from tests.simulator.sim_events import Event, collect, named, start_cmd

pytestmark = pytest.mark.timeout(60)


def test_the_draws_are_seeded_scaled_and_within_the_measured_ranges() -> None:
    first, again, fast = EngineLags(7, 1.0), EngineLags(7, 1.0), EngineLags(7, 0.05)
    draws = [first.startup(), first.create(first=True), first.start()]
    assert draws == [again.startup(), again.create(first=True), again.start()]
    assert [fast.startup(), fast.create(first=True), fast.start()] == pytest.approx([d * 0.05 for d in draws])
    for value, (low, high) in zip(draws, (STARTUP, FIRST_CREATE, CREATE_TO_START), strict=True):
        assert low <= value <= high


async def test_a_host_with_default_timing_lags_like_the_engine(sockdir: Path) -> None:
    """Default options: the socket listens after the start-up lag, the first task is created and started
    after theirs, and taskIdle follows the completion ask by the real 2 s (against the orchestrator's 3 s
    completion grace)."""
    (sockdir / "ws").mkdir()
    host = SimulatorHost(
        sockdir / "h.sock", sockdir / "ws", seed=3, script={"duration": "200ms", "write_delay": 0}
    )
    expected = EngineLags(3, 1.0)
    startup, create, start = expected.startup(), expected.create(first=True), expected.start()
    t0 = time.monotonic()
    await host.start()
    try:
        assert time.monotonic() - t0 >= startup
        conn = await connect(host.socket_path, timeout=5)
        try:
            seen: dict[str, float] = {}
            sent = time.monotonic()
            await conn.send_command(start_cmd())

            def note(ev: Event) -> bool:
                name = str(ev["eventName"])
                if name == "message" and ev["payload"][0]["message"].get("ask") == "completion_result":
                    name = "ask:completion_result"
                seen.setdefault(name, time.monotonic())
                return name == "taskIdle"

            await collect(conn, note, timeout=30)
        finally:
            await conn.close()
    finally:
        await host.stop()
    assert seen["taskCreated"] - sent >= create
    # times as received carry the event loop's noise: a tenth off the planned lags
    assert seen["taskStarted"] - seen["taskCreated"] >= start * 0.9
    assert seen["taskIdle"] - seen["ask:completion_result"] >= 2.0 * 0.9


async def test_time_scale_speeds_the_lags_up_and_engine_lags_false_leaves_them_out(sockdir: Path) -> None:
    durations = {}
    for name, options in (("fast", {"time_scale": 0.05}), ("none", {"engine_lags": False})):
        host = SimulatorHost(sockdir / f"{name}.sock", sockdir, status_delay=0.1, **options)
        t0 = time.monotonic()
        await host.start()
        durations[name] = time.monotonic() - t0
        await host.stop()
    assert durations["fast"] >= STARTUP[0] * 0.05
    # without lags a host listens at once: well under the least real start-up, even on a busy machine
    assert durations["none"] < STARTUP[0]


def _first_create(seed: int) -> float:
    lags = EngineLags(seed, 1.0)
    lags.startup()
    return lags.create(first=True)


async def test_a_cancel_before_the_task_exists_finds_no_task(sockdir: Path) -> None:
    """Until taskCreated the engine has no task to cancel: the CancelTask is dropped, the task starts."""
    seed = next(s for s in range(1000) if _first_create(s) > 0.1)  # a lag that the cancel falls well into
    script = {"duration": "100ms"}
    async with SimulatorHost(sockdir / "c.sock", sockdir, seed=seed, status_delay=0.1, script=script) as host:
        conn = await connect(host.socket_path, timeout=5)
        try:
            await conn.send_command(start_cmd())
            await conn.send_command(CancelTask())
            events = await collect(conn, named("taskIdle"), timeout=30)
        finally:
            await conn.close()
    names = [e["eventName"] for e in events]
    assert "taskAborted" not in names and names.count("taskCreated") == 1


def test_a_suite_turns_the_lags_off_for_every_kind_of_simulated_host(tmp_path: Path) -> None:
    from orchestrator.hosts.host import HostPlace
    from orchestrator.hosts.simulated import host_params
    from orchestrator.hosts.simulator_process import simulator_argv
    from orchestrator.suite.plan import AttemptKey
    from orchestrator.suite.targets import SimulatorTarget

    key = AttemptKey(case_id="c", model_id="m", repeat=0, config_hash="h" * 16)
    place = HostPlace("w0-1", tmp_path, tmp_path, tmp_path, key, 1)
    params = host_params(SimulatorTarget(options={"engine_lags": False}), place)
    assert params["engine_lags"] is False  # what a farm's open gets
    assert "--no-engine-lags" in simulator_argv(**params)  # what a process per host gets
    assert "engine_lags" not in host_params(SimulatorTarget(), place)  # the simulator's default: on
