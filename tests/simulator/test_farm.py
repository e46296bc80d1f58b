"""The simulator farm: many simulated hosts in one process, opened and closed over a control socket.

In-process farms (``ipc_bridge.simulator.farm.SimulatorFarm``) test the protocol; ``orchestrate simulate
--farm`` subprocesses test the CLI and how a farm ends; ``orchestrator.hosts.farm.SimulatorFarm`` is the
worker's side (lazy start, restart, the ``Host`` contract); ``orchestrate run`` compares the farm with
process-per-host hosts on a small suite.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from ipc_bridge.roo.extension import ConnectTimeout, ExtensionConnection, connect
from ipc_bridge.roo.protocol import CloseTask, GetModes, StartNewTask, StartNewTaskData
from ipc_bridge.simulator.farm import FarmClient, FarmError
from ipc_bridge.simulator.farm import SimulatorFarm as Farm
from orchestrator.hosts.farm import FORKED_FARM_NAME, SimulatorFarm
from orchestrator.hosts.host import HostError
from orchestrator.results.records import read_records
from tests.ipc_waits import until_disconnected, until_event
from tests.run.test_run import EXERCISES, orchestrate

pytestmark = pytest.mark.timeout(30)

FAST = {"time_scale": 0.05, "status_delay": 0.1}


def start(script: dict[str, Any]) -> StartNewTask:
    return StartNewTask(data=StartNewTaskData(configuration={"simulate": script}, text="do it"))


def gone(path: str) -> bool:
    return not os.path.exists(path)


def sockets_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_socket())


async def modes(conn: ExtensionConnection) -> list[Any]:
    await conn.send_command(GetModes())
    return list((await until_event(conn, "modesResponse"))["payload"][0])


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


async def test_farm_opens_and_closes_hosts_on_request(farm: tuple[Farm, FarmClient], sockdir: Path) -> None:
    server, client = farm
    a, b = str(sockdir / "a.sock"), str(sockdir / "b.sock")
    ended_a = await client.open(a)
    ended_b = await client.open(b, workspace=sockdir)
    assert sorted((await client.request("list"))["hosts"]) == [a, b]
    assert os.stat(a).st_mode & 0o777 == 0o600
    conn_a, conn_b = await connect(a, timeout=5), await connect(b, timeout=5)
    try:
        assert await modes(conn_b)
        with pytest.raises(FarmError, match="already serves"):
            await client.open(b)
        with pytest.raises(FarmError, match="unknown open keys"):
            await client.request("open", socket=str(sockdir / "c.sock"), colour="red")
        with pytest.raises(FarmError, match="not a directory"):
            await client.open(str(sockdir / "c.sock"), workspace=sockdir / "missing")

        await client.request("close", socket=a)  # the farm's close: like CloseTask, a clean end
        assert await asyncio.wait_for(ended_a, 5) is False
        await until_disconnected(conn_a)
        assert gone(a)
        assert await modes(conn_b)  # the other host is untouched

        await conn_b.send_command(CloseTask())  # CloseTask on the host itself takes it out of the farm
        assert await asyncio.wait_for(ended_b, 5) is False
        await until_disconnected(conn_b)
        assert gone(b)
        assert (await client.request("list"))["hosts"] == []
        assert server.hosts == []
    finally:
        await conn_a.close()
        await conn_b.close()


async def test_crash_outcome_kills_only_its_host(farm: tuple[Farm, FarmClient], sockdir: Path) -> None:
    _, client = farm
    a, b = str(sockdir / "a.sock"), str(sockdir / "b.sock")
    ended_a, ended_b = await client.open(a), await client.open(b)
    conn_a, conn_b = await connect(a, timeout=5), await connect(b, timeout=5)
    try:
        await conn_a.send_command(start({"outcome": "crash", "duration": "1s"}))
        await until_event(conn_a, "taskStarted")
        await until_disconnected(conn_a)
        assert await asyncio.wait_for(ended_a, 5) is True
        assert gone(a)
        with pytest.raises(ConnectTimeout):  # nobody listens there any more
            await connect(a, timeout=0.2, retry_interval=0.05)

        await conn_b.send_command(start({"duration": "1s", "files": {"x.txt": "x"}}))
        await until_event(conn_b, "taskIdle")
        assert (sockdir / "x.txt").read_text() == "x"
        assert not ended_b.done()
        assert (await client.request("list"))["hosts"] == [b]
    finally:
        await conn_a.close()
        await conn_b.close()


async def test_kill_resets_connections_and_a_lost_owner_takes_its_hosts(
    farm: tuple[Farm, FarmClient], sockdir: Path
) -> None:
    server, client = farm
    a, b = str(sockdir / "a.sock"), str(sockdir / "b.sock")
    ended_a = await client.open(a)
    conn_a = await connect(a, timeout=5)
    try:
        await client.request("kill", socket=a)
        assert await asyncio.wait_for(ended_a, 5) is True
        await until_disconnected(conn_a)
        assert gone(a)
    finally:
        await conn_a.close()
    other = await FarmClient.connect(server.control_path)
    ended_b = await other.open(b)
    host_b = server.host(b)
    assert host_b is not None
    await other.close()  # its owner is gone: nobody would ever close this host
    assert await asyncio.wait_for(ended_b, 5) is True  # the client side sees its hosts as gone at once
    await asyncio.wait_for(host_b.wait_closed(), 5)
    assert gone(b)
    assert (await client.request("list"))["hosts"] == []  # the farm serves its other connection on


async def _start_farm_cli(control: Path, workspace: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "simulate",
        "--farm",
        str(control),
        "--workspace",
        str(workspace),
        "--time-scale",
        "0.05",
        "--status-delay",
        "0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert line["ready"] is True
    assert line["pid"] == proc.pid
    return proc


@pytest.mark.parametrize("how", ["eof", "shutdown", "sigterm"])
async def test_closing_the_farm_leaves_no_socket_file(sockdir: Path, how: str) -> None:
    control = sockdir / "ctl"
    proc = await _start_farm_cli(control, sockdir)
    client = await FarmClient.connect(control)
    try:
        hosts = [str(sockdir / f"h{i}.sock") for i in range(3)]
        ended = [await client.open(h) for h in hosts]
        conn = await connect(hosts[0], timeout=5)
        await conn.send_command(start({"outcome": "hang"}))
        await until_event(conn, "taskStarted")
        if how == "eof":
            await client.close()
        elif how == "shutdown":
            await client.request("shutdown")
        else:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await until_disconnected(conn)
        await conn.close()
        assert len(await asyncio.wait_for(asyncio.gather(*ended), 5)) == 3  # every host reported gone
        assert sockets_in(sockdir) == []
    finally:
        await client.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_refuses_socket_and_farm_together(sockdir: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "simulate",
        "--farm",
        str(sockdir / "ctl"),
        "--socket",
        str(sockdir / "h.sock"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"exclude each other" in err


# ----------------------------------------------------------------------- the worker's side of a farm


async def test_worker_side_host_contract_restart_and_close(sockdir: Path) -> None:
    farm = SimulatorFarm(str(sockdir / "ctl"), log_path=sockdir / "farm.log")
    try:
        first = await farm.host(str(sockdir / "h1.sock"), sockdir, **FAST)
        assert first.alive
        assert first.pid == farm.pid is not None
        conn = await connect(first.socket_path, timeout=5)
        await conn.send_command(CloseTask())
        assert await first.wait(5)  # CloseTask ends the host by itself
        assert not first.alive
        assert await first.stop() == 0
        assert await first.stop() == 0  # idempotent
        await conn.close()

        second = await farm.host(str(sockdir / "h2.sock"), sockdir, **FAST)
        assert not await second.wait(0.05)  # nothing ends it yet
        assert await second.stop(grace=5) == 0  # closed in the farm
        assert not second.alive
        assert gone(second.socket_path)

        with pytest.raises(HostError, match="not a directory"):
            await farm.host(str(sockdir / "h3.sock"), sockdir / "missing")

        third = await farm.host(str(sockdir / "h3.sock"), sockdir, **FAST)
        pid = farm.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the whole farm dies: every host in it is gone
        assert await third.wait(5)
        assert await third.stop() == 1
        assert gone(third.socket_path)

        fourth = await farm.host(str(sockdir / "h4.sock"), sockdir, **FAST)  # started again, on demand
        assert farm.starts == 2
        assert farm.pid != pid
        assert fourth.alive
    finally:
        await farm.close()
    assert not farm.running
    assert farm.pid is None
    assert sockets_in(sockdir) == []


# --------------------------------------------------------------------------- through orchestrate run

CASES = f"""
- id: good
  prompt: Implement two_fer.
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  simulate:
    files:
      two_fer.py: |
        def two_fer(name="you"):
            return f"One for {{name}}, one for me."
- id: wrong
  prompt: Implement leap_year.
  workspace: {EXERCISES}/python/leap
  check: python3 -m unittest -q
  simulate:
    files: {{leap.py: "def leap_year(year):\\n    return True\\n"}}
- id: asks
  prompt: Implement leap_year.
  simulate: {{outcome: followup, duration: 1s}}
- id: crash
  prompt: Implement leap_year.
  simulate: {{outcome: crash, duration: 1s}}
"""


def _outcomes(tmp: Path, options: str) -> list[tuple[str, int, str, bool | None, str]]:
    suite = tmp / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            name: t
            target: {{kind: simulator, slots: 3, options: {{time_scale: 0.05, status_delay: 0.1{options}}}}}
            defaults: {{timeout: 30s, retries: 1, retry_backoff: 100ms, ask_timeout: 1s}}
            cases:
            """
        )
        + CASES
    )
    res = orchestrate("run", str(suite), "--results", str(tmp / "r"), "--run-id", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp / "r" / "r" / "results.jsonl")
    return sorted((r.case_id, r.attempt, r.status.value, r.passed, r.reason) for r in records)


def _orphaned_farms() -> list[int]:
    """Farm processes whose run is over (their control socket's directory is gone)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--farm" in argv[:-1]:
            control = Path(os.fsdecode(argv[argv.index(b"--farm") + 1]))
            if not control.parent.exists():
                pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.timeout(180)
def test_farm_and_process_per_host_give_the_same_outcomes(tmp_path: Path) -> None:
    (tmp_path / "farm").mkdir()
    (tmp_path / "proc").mkdir()
    farmed = _outcomes(tmp_path / "farm", "")
    # A worker's farm stops once the worker is gone (its control connection closes): an exit this
    # process cannot wait on, hence the polling.
    deadline = time.monotonic() + 10
    while _orphaned_farms() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _orphaned_farms() == []
    assert farmed == _outcomes(tmp_path / "proc", ", process_per_host: true")
    by_case = {(c, n): (status, passed, reason) for c, n, status, passed, reason in farmed}
    assert by_case[("good", 1)][:2] == ("completed", True)
    assert by_case[("wrong", 1)][:2] == ("completed", False)
    assert by_case[("asks", 1)][0] == "stuck"
    # The crash resets the bridge's connection: the slot goes down, an infra error, retried.
    assert by_case[("crash", 1)] == ("infra_error", None, "extension host disconnected")
    assert by_case[("crash", 2)][0] == "infra_error"


PREFORK = """
import asyncio, json, os, signal, sys
from pathlib import Path
from orchestrator.hosts.farm import SimulatorFarm
from ipc_bridge.roo.extension import connect
from ipc_bridge.roo.protocol import GetModes

d = Path(sys.argv[1])
farm = SimulatorFarm(str(d / "ctl"), log_path=d / "farm.log")
adopt = sys.argv[2] == "adopt"
assert farm.prefork()
forked = farm._forked[0]
out = {"forked": forked}

async def main():
    if adopt:
        host = await farm.host(str(d / "h1.sock"), d, time_scale=0.05, status_delay=0.05)
        out["pid"], out["starts"] = farm.pid, farm.starts
        out["name"] = Path(f"/proc/{forked}/comm").read_text().strip()
        conn = await connect(host.socket_path, timeout=5)
        await conn.send_command(GetModes())
        out["modes"] = len((await conn.recv()).data.payload[0])
        await conn.close()
        os.kill(forked, signal.SIGKILL)  # the forked farm dies: the next host gets a fresh one
        await host.wait(5)
        await host.stop()  # its socket file stays behind a killed farm: the worker removes it
        await farm.host(str(d / "h2.sock"), d)
        out["restarted"], out["starts_after"] = farm.pid, farm.starts
    await farm.close()

asyncio.run(main())
print(json.dumps(out))
"""


@pytest.mark.parametrize("adopt", ["adopt", "never-used"])
def test_a_preforked_farm_serves_restarts_and_is_reaped(sockdir: Path, adopt: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PREFORK, str(sockdir), adopt], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout.splitlines()[-1])
    forked = out["forked"]
    if adopt == "adopt":
        assert out["pid"] == forked and out["starts"] == 1  # the forked process was the farm
        assert out["name"] == FORKED_FARM_NAME  # told apart from its worker in ps, top, the benchmarks
        assert out["modes"] > 0
        assert out["starts_after"] == 2 and out["restarted"] not in (None, forked)
    # Reaped, not a zombie: no such process any more.
    assert not Path(f"/proc/{forked}").exists()
    assert sockets_in(sockdir) == []


def test_no_prefork_inside_an_event_loop(sockdir: Path) -> None:
    async def inside() -> bool:
        return SimulatorFarm(str(sockdir / "ctl")).prefork()

    assert asyncio.run(inside()) is False
