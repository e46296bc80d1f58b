"""The simulator's host options (seed, time_scale, status_delay) have one definition: what a suite's
``target.options`` may hold is what the simulator itself accepts, so a value the simulator would refuse
at its first attempt is refused when the suite is loaded instead, with the same words."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.simulator.farm import FarmError, SimulatorFarm
from ipc_bridge.simulator.host import SimulatorHost
from orchestrator.suite.config import load_suite
from orchestrator.suite.yaml_loader import SuiteError
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(60)

BAD = [
    pytest.param({"time_scale": 0}, "time_scale", "greater than 0", id="time-scale-zero"),
    pytest.param({"time_scale": -1}, "time_scale", "greater than 0", id="time-scale-negative"),
    pytest.param({"time_scale": "fast"}, "time_scale", "valid number", id="time-scale-fast"),
    pytest.param({"time_scale": math.nan}, "time_scale", "finite number", id="time-scale-nan"),
    pytest.param({"time_scale": 1e9}, "time_scale", "less than or equal to 1000", id="time-scale-huge"),
    pytest.param(
        {"status_delay": -0.5}, "status_delay", "greater than or equal to 0", id="status-delay-negative"
    ),
    pytest.param({"seed": True}, "seed", "expected a number", id="seed-bool"),
    pytest.param({"engine_lags": "sometimes"}, "engine_lags", "valid boolean", id="engine-lags-text"),
]


def suite_with(directory: Path, options: dict[str, Any]) -> Path:
    shown = ", ".join(f"{k}: {'.nan' if v != v else v}" for k, v in options.items())
    path = directory / "suite.yaml"
    path.write_text(
        f"name: t\ntarget:\n  kind: simulator\n  options: {{{shown}}}\ncases: [{{id: a, prompt: x}}]\n"
    )
    return path


@pytest.mark.parametrize(("options", "key", "what"), BAD)
def test_the_suite_refuses_what_the_host_refuses(
    sockdir: Path, tmp_path: Path, options: dict[str, Any], key: str, what: str
) -> None:
    with pytest.raises(ValueError, match=key) as host_error:
        SimulatorHost(str(sockdir / "x.sock"), **options)
    assert what.lower() in str(host_error.value).lower()
    with pytest.raises(SuiteError) as suite_error:
        load_suite(suite_with(tmp_path, options), env={})
    assert [(p.line, p.key) for p in suite_error.value.problems] == [(4, f"target.options.{key}")]
    assert what.lower() in suite_error.value.problems[0].message.lower()


@pytest.mark.parametrize(("options", "key", "what"), BAD)
async def test_the_farm_refuses_them_too(sockdir: Path, options: dict[str, Any], key: str, what: str) -> None:
    farm = SimulatorFarm(sockdir / "farm.sock")
    with pytest.raises(FarmError, match=key):
        await farm.open_host(str(sockdir / "x.sock"), **options)
    assert farm.hosts == []


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--time-scale", "0"], "time_scale"),
        (["--status-delay", "-1"], "status_delay"),
        (["--time-scale", "inf"], "finite"),
    ],
)
def test_the_simulate_command_refuses_them_too(sockdir: Path, args: list[str], what: str) -> None:
    argv = [sys.executable, "-m", "orchestrator", "simulate", "--socket", str(sockdir / "x.sock"), *args]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stderr
    assert what in proc.stderr
    assert not (sockdir / "x.sock").exists()


def test_accepted_options_reach_the_hosts_as_written(tmp_path: Path) -> None:
    given = {"time_scale": 0.05, "status_delay": 0, "seed": 7, "process_per_host": True}
    suite = load_suite(suite_with(tmp_path, given), env={})
    assert suite.target.options == given  # type: ignore[union-attr]
    assert SimulatorHost(str(tmp_path / "x.sock"), time_scale=0.05, status_delay=0, seed=7).time_scale == 0.05


def test_the_engine_is_checked_against_the_simulator_list_and_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text("name: t\ntarget: {kind: simulator, engine: 3.50.4}\ncases: [{id: a, prompt: x}]\n")
    assert load_suite(path, env={}).target.engine == "3.50.4"  # type: ignore[union-attr]
    path.write_text("name: t\ntarget: {kind: simulator, engine: '4.0'}\ncases: [{id: a, prompt: x}]\n")
    with pytest.raises(SuiteError) as error:
        load_suite(path, env={})
    assert "target.engine: unknown engine '4.0': use 3.52 or 3.50" in str(error.value)
