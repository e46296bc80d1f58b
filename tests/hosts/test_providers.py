"""Each target kind's provider, constructed from its target: what it decides (selection, timeouts, the
prelaunch default, socket leases, a launched host's command line and environment) and, for launched
hosts, that what it decides is what a real process gets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.hosts.command import CommandProvider
from orchestrator.hosts.host import HostError, HostPlace
from orchestrator.hosts.launched import Unleased
from orchestrator.hosts.process import ProcessHost
from orchestrator.hosts.provider import host_provider
from orchestrator.hosts.simulated import host_seed
from orchestrator.hosts.simulator_farm import SimulatorFarmProvider
from orchestrator.hosts.simulator_process import SimulatorProcessProvider
from orchestrator.hosts.socket_lease import SocketLeaseProvider, SocketLeases
from orchestrator.hosts.vscode import VscodeProvider
from orchestrator.suite.plan import AttemptKey
from orchestrator.suite.targets import CommandTarget, SimulatorTarget, SocketTarget, VscodeTarget

KEY = AttemptKey("case", "model", 0, "0123456789abcdef")


def _place(root: Path, *, slot: str = "w0-1", leased: str | None = None, number: int = 1) -> HostPlace:
    workspace, work = root / "ws", root / "work"
    workspace.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    return HostPlace(slot, workspace, root, work, KEY, number, leased)


def _sockets(*names: str) -> SocketTarget:
    return SocketTarget(sockets=[Path("/run/hosts") / n for n in names])


# ------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize(
    ("target", "provider"),
    [
        (SimulatorTarget(), SimulatorFarmProvider),
        (SimulatorTarget(options={"process_per_host": False}), SimulatorFarmProvider),
        (SimulatorTarget(options={"process_per_host": True}), SimulatorProcessProvider),
        (VscodeTarget(), VscodeProvider),
        (CommandTarget(argv=["host", "{socket}"]), CommandProvider),
        (_sockets("a.sock"), SocketLeaseProvider),
    ],
)
def test_each_kind_has_its_provider(target: Any, provider: type) -> None:
    chosen = host_provider(target)
    assert type(chosen) is provider
    assert chosen.target is target  # type: ignore[attr-defined]


# ------------------------------------------------------------------------- timeouts and executor


def test_launched_hosts_take_their_targets_timeouts() -> None:
    for target in (
        SimulatorTarget(launch_timeout=7, close_grace=3),
        SimulatorTarget(launch_timeout=7, close_grace=3, options={"process_per_host": True}),
        VscodeTarget(launch_timeout=7, close_grace=3),
        CommandTarget(argv=["x"], launch_timeout=7, close_grace=3),
    ):
        provider = host_provider(target)
        assert (provider.launch_timeout, provider.close_grace) == (7.0, 3.0)
        assert provider.executor == "local" and provider.not_on_ray is None
    assert host_provider(CommandTarget(argv=["x"])).close_grace == 10.0
    assert host_provider(VscodeTarget(executor="ray")).executor == "ray"


def test_a_leased_host_is_attached_within_connect_timeout_and_never_waited_for() -> None:
    provider = host_provider(SocketTarget(sockets=[Path("/run/a.sock")], connect_timeout=12))
    assert provider.launch_timeout == 12.0
    assert provider.close_grace == 0.0
    assert provider.executor == "local"
    assert provider.not_on_ray is not None and "socket target" in provider.not_on_ray


# ------------------------------------------------------------------------------------- prelaunch


@pytest.mark.parametrize("process_per_host", [False, True])
def test_the_simulator_readies_a_slot_s_worth_ahead_by_default(process_per_host: bool) -> None:
    opts = {"process_per_host": process_per_host}
    assert host_provider(SimulatorTarget(slots=8, options=opts)).prelaunch(budget=False) == 8
    assert host_provider(SimulatorTarget(slots=8, prelaunch=3, options=opts)).prelaunch(budget=False) == 3
    # under a budget only what the suite asks for: a readied attempt may overshoot it
    assert host_provider(SimulatorTarget(slots=8, options=opts)).prelaunch(budget=True) == 0
    assert host_provider(SimulatorTarget(slots=8, prelaunch=3, options=opts)).prelaunch(budget=True) == 3
    # Ray nodes ready nothing ahead, whatever the suite says
    ray = SimulatorTarget(slots=8, prelaunch=3, executor="ray", options=opts)
    assert host_provider(ray).prelaunch(budget=False) == 0


def test_windows_are_readied_ahead_only_when_asked_for() -> None:
    for target in (VscodeTarget(slots=4), CommandTarget(slots=4, argv=["x", "{socket}"])):
        assert host_provider(target).prelaunch(budget=False) == 0
    assert host_provider(VscodeTarget(slots=4, prelaunch=2)).prelaunch(budget=False) == 2
    assert host_provider(CommandTarget(argv=["x"], prelaunch=1)).prelaunch(budget=True) == 1


def test_nothing_is_readied_on_a_leased_host() -> None:
    provider = host_provider(_sockets("a.sock", "b.sock"))
    assert provider.prelaunch(budget=False) == 0


def test_a_socket_target_is_refused_on_ray_and_beyond_its_sockets(tmp_path: Path) -> None:
    for name in ("a.sock", "b.sock"):
        (tmp_path / name).touch()
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\ntarget: {kind: socket, sockets: [a.sock, b.sock]}\ncases: [{id: a, prompt: x}]\n"
    )
    results = tmp_path / "results"
    for args, line in (
        (["--ray", "auto"], "--ray: a socket target attaches to hosts already running on this machine"),
        (["--slots", "3"], "--slots: 3 is more than the 2 sockets listed"),
    ):
        res = CliRunner().invoke(main, ["run", str(suite), "--results", str(results), *args])
        assert res.exit_code == 2, res.output
        assert line in res.stderr
    assert not results.exists()


# ---------------------------------------------------------------------------------------- leases


def test_sockets_are_leased_one_job_at_a_time_and_take_turns() -> None:
    leases = host_provider(_sockets("a.sock", "b.sock")).leases()
    assert isinstance(leases, SocketLeases)
    assert leases.free
    assert leases.take("j1") == "/run/hosts/a.sock"
    assert leases.take("j2") == "/run/hosts/b.sock"
    assert not leases.free
    with pytest.raises(LookupError):
        leases.take("j3")
    leases.give_back("j1")
    leases.give_back("j1")  # idempotent: a socket is never free twice
    leases.give_back("never-leased")
    assert leases.free
    assert leases.take("j3") == "/run/hosts/a.sock"
    assert not leases.free
    leases.give_back("j2")
    leases.give_back("j3")
    # given back in that order, taken in that order
    assert [leases.take("j4"), leases.take("j5")] == ["/run/hosts/b.sock", "/run/hosts/a.sock"]


def test_each_run_leases_the_sockets_afresh() -> None:
    provider = host_provider(_sockets("a.sock"))
    first = provider.leases()
    first.take("j1")
    assert not first.free and provider.leases().free


def test_launched_hosts_lease_nothing() -> None:
    for target in (SimulatorTarget(), VscodeTarget(), CommandTarget(argv=["x"])):
        leases = host_provider(target).leases()
        assert isinstance(leases, Unleased)
        assert leases.free and leases.take("j1") is None and leases.free


async def test_a_socket_job_attaches_to_the_socket_it_leased(tmp_path: Path) -> None:
    provider = host_provider(_sockets("a.sock"))
    assert provider.farm(tmp_path, tmp_path, 0) is None
    assert await provider.open(_place(tmp_path, leased="/run/hosts/a.sock"), None) == (
        None,
        "/run/hosts/a.sock",
    )
    with pytest.raises(HostError, match="without a leased socket"):
        await provider.open(_place(tmp_path), None)


# ------------------------------------------------------------------------------- launch commands


def test_vscode_opens_the_workspace_in_a_new_window_with_its_own_user_data(tmp_path: Path) -> None:
    target = VscodeTarget(
        code="/opt/code/bin/code",
        args=["--log", "trace"],
        xvfb=False,
        extensions_dir=tmp_path / "ext",
        env={"EXTRA": "yes"},
    )
    place = _place(tmp_path)
    command = VscodeProvider(target).command(place)
    assert command.argv == [
        "/opt/code/bin/code",
        "--wait",
        "--disable-workspace-trust",
        "--disable-gpu",
        "--no-sandbox",
        "--password-store=basic",
        f"--user-data-dir={place.work_dir / 'w0-1.vscode'}",
        "--log",
        "trace",
        f"--extensions-dir={tmp_path / 'ext'}",
        "-n",
        str(place.workspace),
    ]
    assert command.env == {"EXTRA": "yes"}
    shared = VscodeProvider(VscodeTarget(code="/opt/code", xvfb=False, user_data_dir=tmp_path / "ud"))
    assert f"--user-data-dir={tmp_path / 'ud'}" in shared.command(place).argv


def test_vscode_runs_under_xvfb_when_asked_or_without_a_display(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = _place(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    xvfb = bindir / "xvfb-run"
    xvfb.write_text("#!/bin/sh\n")
    xvfb.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setenv("DISPLAY", ":0")
    assert VscodeProvider(VscodeTarget(code="/c", xvfb=True)).command(place).argv[:3] == [
        str(xvfb),
        "-a",
        "/c",
    ]
    assert VscodeProvider(VscodeTarget(code="/c")).command(place).argv[0] == "/c"  # auto, with a display
    monkeypatch.delenv("DISPLAY")
    assert VscodeProvider(VscodeTarget(code="/c")).command(place).argv[0] == str(xvfb)
    assert VscodeProvider(VscodeTarget(code="/c", xvfb=False)).command(place).argv[0] == "/c"
    xvfb.unlink()
    with pytest.raises(HostError, match="xvfb-run is not installed"):
        VscodeProvider(VscodeTarget(code="/c")).command(place)


def test_a_command_gets_its_placeholders_filled_in(tmp_path: Path) -> None:
    target = CommandTarget(
        argv=["node", "cli.js", "--socket", "{socket}", "--workspace={workspace}", "n{slot}"],
        env={"SLOT": "slot-{slot}", "WHERE": "{workspace}", "PLAIN": "yes"},
    )
    place = _place(tmp_path, slot="w1-4")
    command = CommandProvider(target).command(place)
    socket = str(tmp_path / "w1-4.sock")
    assert place.socket_path == socket
    assert command.argv == [
        "node",
        "cli.js",
        "--socket",
        socket,
        f"--workspace={place.workspace}",
        "nw1-4",
    ]
    assert command.env == {"SLOT": "slot-w1-4", "WHERE": str(place.workspace), "PLAIN": "yes"}
    assert command.cwd is None  # the workspace


def test_doubled_braces_in_a_command_are_literal_braces(tmp_path: Path) -> None:
    target = CommandTarget(
        argv=["sh", "-c", "echo {{literal}} {{{socket}}}", '--json={{"slot": "{slot}"}}'],
        env={"JSON": '{{"ws": "{workspace}"}}'},
    )
    place = _place(tmp_path, slot="w0-1")
    command = CommandProvider(target).command(place)
    assert command.argv == [
        "sh",
        "-c",
        f"echo {{literal}} {{{place.socket_path}}}",
        '--json={"slot": "w0-1"}',
    ]
    assert command.env == {"JSON": f'{{"ws": "{place.workspace}"}}'}


def test_a_simulated_process_gets_the_suite_s_options_and_its_own_seed(tmp_path: Path) -> None:
    target = SimulatorTarget(
        engine="3.50.4",
        options={"process_per_host": True, "time_scale": 0.5, "status_delay": 0.1, "seed": 7},
    )
    place = _place(tmp_path, number=2)
    command = SimulatorProcessProvider(target).command(place)
    assert command.argv == [
        sys.executable,
        "-m",
        "orchestrator",
        "simulate",
        "--engine",
        "3.50.4",
        "--time-scale",
        "0.5",
        "--status-delay",
        "0.1",
        "--seed",
        str(host_seed(7, KEY, 2)),
        "--workspace",
        str(place.workspace),
    ]
    assert command.env == {}
    bare = SimulatorProcessProvider(SimulatorTarget(options={"process_per_host": True})).command(place)
    assert bare.argv[4:] == ["--seed", str(host_seed(None, KEY, 2)), "--workspace", str(place.workspace)]


def test_seeds_differ_between_tries_and_replay_for_the_same_one() -> None:
    assert host_seed(7, KEY, 1) == host_seed(7, KEY, 1)
    assert (
        len({host_seed(7, KEY, 1), host_seed(7, KEY, 2), host_seed(8, KEY, 1), host_seed(None, KEY, 1)}) == 4
    )


def test_a_worker_s_farm_is_made_only_for_farmed_simulator_hosts(tmp_path: Path) -> None:
    farm = host_provider(SimulatorTarget(launch_timeout=9)).farm(tmp_path, tmp_path / "work", 3)
    assert farm is not None
    assert farm.control_path == str(tmp_path / "farm-w3.sock")
    assert farm.log_path == tmp_path / "work" / "farm-w3.log"
    assert farm.ready_timeout == 9.0
    assert farm.pid is None  # not started
    for target in (
        SimulatorTarget(options={"process_per_host": True}),
        VscodeTarget(),
        CommandTarget(argv=["x"]),
    ):
        assert host_provider(target).farm(tmp_path, tmp_path, 3) is None


async def test_a_farmed_host_needs_its_worker_s_farm(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="simulator farm"):
        await SimulatorFarmProvider(SimulatorTarget()).open(_place(tmp_path), None)


def test_a_socket_path_too_long_for_sun_path_is_refused(tmp_path: Path) -> None:
    place = _place(tmp_path, slot="w" * 120)
    with pytest.raises(HostError, match="shorter runtime dir"):
        CommandProvider(CommandTarget(argv=["x", "{socket}"])).command(place)


# ------------------------------------------------------------------------------ a real launch


REPORT = """\
import json, os, sys
with open(sys.argv[1], "w") as fh:
    json.dump({"argv": sys.argv[2:], "cwd": os.getcwd(), "socket": os.environ["ROO_CODE_IPC_SOCKET_PATH"],
               "slot": os.environ.get("SLOT"), "tmpdir": os.environ["TMPDIR"]}, fh)
print("reported")
"""


async def test_a_launched_command_host_gets_what_its_provider_decided(sockdir: Path) -> None:
    report, script = sockdir / "report.json", sockdir / "report.py"
    script.write_text(REPORT)
    (sockdir / "elsewhere").mkdir()
    target = CommandTarget(
        argv=[sys.executable, str(script), str(report), "{socket}", "{workspace}"],
        env={"SLOT": "slot-{slot}"},
        cwd=sockdir / "elsewhere",
    )
    place = _place(sockdir, slot="w0-7")
    host, socket_path = await host_provider(target).open(place, None)
    assert isinstance(host, ProcessHost)
    try:
        assert await host.wait(60.0)
    finally:
        await host.stop(grace=1.0)
    assert socket_path == place.socket_path == str(sockdir / "w0-7.sock")
    seen = json.loads(report.read_text())
    assert seen["argv"] == [socket_path, str(place.workspace)]
    assert seen["cwd"] == str(sockdir / "elsewhere")  # the suite's cwd, not the workspace
    assert seen["socket"] == socket_path
    assert seen["slot"] == "slot-w0-7"
    assert seen["tmpdir"] == str(place.tmpdir)
    assert host.log_path == place.log_path and place.log_path.read_text() == "reported\n"
    assert not place.tmpdir.exists()  # removed with the host
    assert host.ended_by_itself is None  # stopped by us, after it exited 0: not a crash to report
