"""The bridge over TCP with CURVE: remote clients with the key from the TCP connection file drive slots
and follow events; key files are private; ``orchestrate watch`` prints a slot's events.

Bridges are ``python -m ipc_bridge.server.cli`` started by the launcher, hosts are ``orchestrate
simulate`` children; fixtures kill whatever a test leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import zmq

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import Event
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.server.tcp_listen import ListenError, TcpListen, parse_listen
from ipc_bridge.wire.connection_file import ConnectionInfo, read_connection_file
from ipc_bridge.wire.curve import CurveError, client_options, create_keypair, load_keypair

pytestmark = pytest.mark.timeout(60)

ORCHESTRATE = Path(sys.executable).with_name("orchestrate")
FAST = ("--time-scale", "0.05", "--status-delay", "0.1")
BRIDGE_ARGS = ("--start-timeout", "5", "--reconnect-interval", "0.05", "--hugz-interval", "0.2")


def start_tcp_bridge(sockdir: Path, *args: str) -> BridgeProcess:
    listen = ("--listen", "tcp://127.0.0.1:*", "--curve-dir", str(sockdir / "keys"))
    return start_bridge_process(sockdir / "b", args=(*BRIDGE_ARGS, *listen, *args))


def tcp_file(bridge: BridgeProcess) -> Path:
    return bridge.connection_file.with_name("bridge-tcp.json")


@pytest.fixture
def tcp_bridge(sockdir: Path) -> Iterator[BridgeProcess]:
    proc = start_tcp_bridge(sockdir)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def simulator(sockdir: Path) -> Iterator[Path]:
    """``orchestrate simulate`` on ``sockdir/h1.sock``; yields the socket path."""
    workspace = sockdir / "ws"
    workspace.mkdir()
    path = sockdir / "h1.sock"
    argv = [str(ORCHESTRATE), "simulate", "--socket", str(path), "--workspace", str(workspace), *FAST]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        yield path
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def remote(tcp_bridge: BridgeProcess) -> AsyncIterator[BridgeClient]:
    """A client connected with the TCP connection file only, as on another machine."""
    client = await BridgeClient.connect(tcp_file(tcp_bridge))
    try:
        yield client
    finally:
        await client.close(linger_ms=0)


def named(name: str, task_id: str) -> Callable[[Event], bool]:
    return lambda e: e.event_name == name and e.task_id == task_id


# ------------------------------------------------------------------------------------ over tcp


async def test_an_authorized_client_drives_a_slot_and_follows_its_events_over_tcp(
    tcp_bridge: BridgeProcess, remote: BridgeClient, simulator: Path
) -> None:
    info = remote.info
    assert info.transport == "tcp"
    assert info.command_endpoint.startswith("tcp://127.0.0.1:")
    assert info.event_endpoint.startswith("tcp://127.0.0.1:")
    assert info.command_endpoint != info.event_endpoint
    assert info.curve_serverkey and info.curve_publickey and info.curve_secretkey
    assert info.key == tcp_bridge.connection.key  # HMAC signing stays on over CURVE

    slot = await remote.attach("w1", str(simulator), connect_timeout=10)
    assert slot.state == "up" and slot.owner == remote.session.session
    task = await remote.start_task("w1", "write hello")
    idle = await remote.wait_for("w1", named("taskIdle", task), 20, since_seq=0)
    assert idle.slot == "w1" and idle.parent["session"] == remote.session.session

    # The ipc endpoints serve on the same sockets: a local client sees the very same events.
    local = await BridgeClient.connect(tcp_bridge.connection_file)
    try:
        assert local.info.transport == "ipc" and local.info.curve_serverkey is None
        reply, events = await local.snapshot("w1", since_seq=0)
        _, remote_events = await remote.snapshot("w1", since_seq=0)
        assert idle.seq is not None and reply.last_seq >= idle.seq
        assert [(e.seq, e.content) for e in events] == [(e.seq, e.content) for e in remote_events]
        assert [s.slot for s in await local.slots()] == ["w1"]
    finally:
        await local.close(linger_ms=0)


async def test_key_files_and_dirs_are_private_and_the_server_key_survives_a_restart(
    sockdir: Path,
) -> None:
    keys = sockdir / "keys"
    bridge = start_tcp_bridge(sockdir)
    try:
        first = read_connection_file(tcp_file(bridge))
        for directory in (keys, keys / "authorized", keys / "clients"):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        secrets = [keys / "server.key_secret", keys / "clients" / "watcher.key_secret", tcp_file(bridge)]
        for secret in secrets:
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert load_keypair(keys / "server.key_secret").public == first.curve_serverkey
        watcher = load_keypair(keys / "clients" / "watcher.key_secret")
        assert (watcher.public, watcher.secret) == (first.curve_publickey, first.curve_secretkey)
        assert (keys / "authorized" / "watcher.key").read_text() == (
            keys / "clients" / "watcher.key"
        ).read_text()
    finally:
        assert bridge.stop() == 0
    assert not tcp_file(bridge).exists()  # removed at shutdown, like the ipc connection file

    bridge = start_tcp_bridge(sockdir)
    try:
        second = read_connection_file(tcp_file(bridge))
        assert (second.curve_serverkey, second.curve_publickey) == (
            first.curve_serverkey,
            first.curve_publickey,
        )
        assert second.session != first.session
    finally:
        bridge.kill()


# ------------------------------------------------------------------------------------- watch


async def _read_until(
    stream: asyncio.StreamReader, predicate: Callable[[str], bool], timeout: float = 20
) -> list[str]:
    lines: list[str] = []

    async def read() -> None:
        while True:
            raw = await stream.readline()
            assert raw, f"watch ended its output; it printed {lines}"
            lines.append(raw.decode().rstrip("\n"))
            if predicate(lines[-1]):
                return

    await asyncio.wait_for(read(), timeout)
    return lines


@contextlib.asynccontextmanager
async def watching(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(ORCHESTRATE), "watch", *args, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_watch_prints_a_running_slots_events_and_stops_on_ctrl_c(
    tcp_bridge: BridgeProcess, remote: BridgeClient, simulator: Path
) -> None:
    await remote.attach("w1", str(simulator), connect_timeout=10)
    task = await remote.start_task("w1", "write hello", {"simulate": {"outcome": "hang", "text": "thinking"}})
    await remote.wait_for("w1", named("taskStarted", task), 10, since_seq=0)

    async with watching(str(tcp_file(tcp_bridge)), "--slot", "w1", "--since", "0") as proc:
        assert proc.stdout is not None
        lines = await _read_until(proc.stdout, lambda line: " taskStarted " in line)
        assert " w1 #1 slot_up " in f" {lines[0]}"
        assert any(f"taskCreated {task}" in line for line in lines)
        # Live events after the replay: the task is hanging until we cancel it.
        await remote.cancel("w1")
        await _read_until(proc.stdout, lambda line: f"taskAborted {task}" in line)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) in (0, 130)

    # Without --slot, slots are discovered; --json prints the raw messages.
    async with watching(str(tcp_file(tcp_bridge)), "--json", "--since", "0") as proc:
        assert proc.stdout is not None
        lines = await _read_until(proc.stdout, lambda line: json.loads(line)["msg_type"] == "slot_up")
        message = json.loads(lines[-1])
        assert message["content"]["slot"] == "w1" and message["content"]["seq"] == 1
        assert message["topic"] == "slot.w1." and message["header"]["session"] == remote.bridge_session
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def test_watch_reports_a_bad_connection_file(sockdir: Path) -> None:
    bad = sockdir / "bad.json"
    bad.write_text('{"transport": "carrier-pigeon"}')
    result = subprocess.run([str(ORCHESTRATE), "watch", str(bad)], capture_output=True, timeout=30)
    assert result.returncode == 1 and b"transport" in result.stderr and not result.stdout


# ------------------------------------------------------------------------------- unit: pieces


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tcp://127.0.0.1:5555", ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")),
        ("tcp://*:7000", ("tcp://*:7000", "tcp://*:7001")),
        ("tcp://0.0.0.0:*", ("tcp://0.0.0.0:*", "tcp://0.0.0.0:*")),
        ("tcp://localhost:0", ("tcp://localhost:*", "tcp://localhost:*")),
        ("tcp://[::1]:6000", ("tcp://[::1]:6000", "tcp://[::1]:6001")),
    ],
)
def test_listen_gives_commands_port_and_events_port_plus_one(value: str, expected: tuple[str, str]) -> None:
    assert parse_listen(value).endpoints() == expected


def test_ipv6_listen_sets_ipv6() -> None:
    assert parse_listen("tcp://[::1]:6000") == TcpListen("[::1]", 6000)
    assert parse_listen("tcp://[::1]:6000").ipv6 and not parse_listen("tcp://h:1").ipv6


@pytest.mark.parametrize(
    "value",
    [
        "ipc:///tmp/x",
        "tcp://host",
        "tcp://:5555",
        "tcp://::1:5555",
        "tcp://h:65535",
        "tcp://h:-1",
        "tcp://h:http",
        "tcp://[::1:5",
    ],
)
def test_bad_listen_values_are_refused(value: str) -> None:
    with pytest.raises(ListenError):
        parse_listen(value)


def _info(**fields: object) -> ConnectionInfo:
    base: dict[str, object] = {
        "command_endpoint": "ipc:///r/c.ipc",
        "event_endpoint": "ipc:///r/e.ipc",
        "key": "k",
        "bridge_pid": 1,
        "session": "s",
        "runtime_dir": "/r",
    }
    return ConnectionInfo.model_validate({**base, **fields})


def test_connection_files_stay_backward_compatible() -> None:
    old = _info()  # what a 1.1 bridge wrote: no transport-specific fields
    assert old.transport == "ipc" and old.curve_serverkey is None and client_options(old) == {}
    with pytest.raises(ValueError, match="transport"):
        _info(transport="udp")


def test_client_options_follow_the_connection_file(sockdir: Path) -> None:
    server, client = zmq.curve_keypair(), zmq.curve_keypair()
    tcp = {"transport": "tcp", "command_endpoint": "tcp://h:1", "event_endpoint": "tcp://h:2"}
    assert client_options(_info(**tcp)) == {}  # plain TCP (an --insecure bridge)
    keys = {"curve_serverkey": server[0].decode(), "curve_publickey": client[0].decode()}
    with pytest.raises(CurveError, match="no client keypair"):
        client_options(_info(**tcp, **keys))
    options = client_options(_info(**tcp, **keys, curve_secretkey=client[1].decode()))
    assert options == {
        zmq.CURVE_SERVERKEY: server[0],
        zmq.CURVE_PUBLICKEY: client[0],
        zmq.CURVE_SECRETKEY: client[1],
    }
    six = {**tcp, "command_endpoint": "tcp://[::1]:1", "event_endpoint": "tcp://[::1]:2"}
    assert client_options(_info(**six)) == {zmq.IPV6: 1}


def test_a_secret_key_readable_by_others_is_refused(sockdir: Path) -> None:
    public, secret = create_keypair(sockdir / "k", "alice")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((sockdir / "k").stat().st_mode) == 0o700
    assert load_keypair(secret).public == load_keypair(secret).public != ""
    secret.chmod(0o644)
    with pytest.raises(CurveError, match="chmod 600"):
        load_keypair(secret)
    public.chmod(0o600)
    with pytest.raises(CurveError, match="no secret key"):
        load_keypair(public)
