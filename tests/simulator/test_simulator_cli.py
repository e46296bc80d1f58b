"""``orchestrate simulate``: the simulated host as a process (its socket, CloseTask, SIGTERM, crash, scripts)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.roo.extension import Disconnected, connect
from ipc_bridge.roo.protocol import (
    CloseTask,
)
from ipc_bridge.simulator.script import normalize_engine
from tests.conftest import ROOT
from tests.simulator.sim_events import collect, named, start_cmd

pytestmark = pytest.mark.timeout(20)


# ------------------------------------------------------------------------------------------- CLI


def orchestrate(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    code = "from orchestrator.cli.main import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 10) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


@pytest.mark.timeout(60)
async def test_cli_runs_a_task_and_exits_on_close_task(sockdir: Path) -> None:
    sock, ws = sockdir / "cli.sock", sockdir / "ws"
    ws.mkdir()
    script = sockdir / "script.yaml"
    script.write_text("files:\n  two_fer.py: |\n    def two_fer(): pass\ncompletion: done\n")
    options = {
        "--socket": sock,
        "--workspace": ws,
        "--script": script,
        "--time-scale": 0.05,
        "--status-delay": 0.1,
    }
    proc = orchestrate("simulate", *(str(x) for pair in options.items() for x in pair))
    try:
        async with await connect(str(sock), timeout=30, retry_interval=0.05) as conn:
            await conn.send_command(start_cmd())
            await collect(conn, named("taskIdle"))
            await conn.send_command(CloseTask())
            with pytest.raises(Disconnected):
                await collect(conn, lambda ev: False)
    finally:
        code, err = await asyncio.to_thread(finish, proc)
    assert code == 0, err
    assert not sock.exists()
    assert (ws / "two_fer.py").read_text() == "def two_fer(): pass\n"


@pytest.mark.timeout(60)
async def test_cli_takes_the_socket_from_the_environment_and_stops_on_sigterm(sockdir: Path) -> None:
    sock = sockdir / "env.sock"
    proc = orchestrate("simulate", env={**os.environ, "ROO_CODE_IPC_SOCKET_PATH": str(sock)})
    try:
        async with await connect(str(sock), timeout=30, retry_interval=0.05):
            pass
        proc.send_signal(signal.SIGTERM)
    finally:
        code, err = await asyncio.to_thread(finish, proc)
    assert code == 0, err
    assert not sock.exists()


@pytest.mark.timeout(60)
async def test_cli_crash_outcome_kills_the_process(sockdir: Path) -> None:
    sock = sockdir / "crash.sock"
    argv = ["--socket", str(sock), "--workspace", str(sockdir), "--time-scale", "0.05", "--engine", "3.50.4"]
    proc = orchestrate("simulate", *argv)
    try:
        async with await connect(str(sock), timeout=30, retry_interval=0.05) as conn:
            await conn.send_command(start_cmd({"outcome": "crash"}))
            with pytest.raises(Disconnected):
                await collect(conn, lambda ev: False)
    finally:
        code, err = await asyncio.to_thread(finish, proc)
    assert code == 1, err


def test_engine_versions() -> None:
    assert [normalize_engine(v) for v in ("3.52", "3.52.1", "3.50.4", 3.5, 3.52)] == [
        "3.52",
        "3.52",
        "3.50",
        "3.50",
        "3.52",
    ]
    with pytest.raises(ValueError, match="unknown engine"):
        normalize_engine("3.40")


def test_cli_rejects_a_bad_script(sockdir: Path) -> None:
    script = sockdir / "bad.yaml"
    script.write_text("outcome: finished\n")
    proc = orchestrate("simulate", "--socket", str(sockdir / "x.sock"), "--script", str(script))
    code, err = finish(proc)
    assert code == 2 and "outcome" in err and not (sockdir / "x.sock").exists()
