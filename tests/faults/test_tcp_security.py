"""Who does not get in over TCP: unknown CURVE keys (refused by ZAP), clients without CURVE, and plain TCP
unless ``--insecure`` was asked for by name.

The handshake outcome is read from the client socket's monitor (``HANDSHAKE_FAILED_AUTH`` is the ZAP
refusal), next to what a real :class:`BridgeClient` sees: requests that are never answered.
"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import zmq
import zmq.asyncio
from click.testing import CliRunner
from zmq.utils.monitor import recv_monitor_message

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import BridgeLost, BridgeTimeout
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.wire.connection_file import ConnectionInfo, read_connection_file
from ipc_bridge.wire.curve import authorize, create_keypair, ensure_server_keys, load_keypair
from orchestrator.cli.main import main

pytestmark = pytest.mark.timeout(60)

BRIDGE_ARGS = ("--hugz-interval", "0.2")
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _start(sockdir: Path, *args: str, stderr: IO[bytes] | None = None) -> BridgeProcess:
    return start_bridge_process(
        sockdir / "b", args=(*BRIDGE_ARGS, "--listen", "tcp://127.0.0.1:*", *args), stderr=stderr
    )


def _tcp_info(bridge: BridgeProcess) -> ConnectionInfo:
    return read_connection_file(bridge.connection_file.with_name("bridge-tcp.json"))


@pytest.fixture
def bridge_log(sockdir: Path) -> Iterator[IO[bytes]]:
    with open(sockdir / "bridge.log", "w+b") as fh:
        yield fh


@pytest.fixture
def alice(sockdir: Path) -> tuple[str, str]:
    """A user's own keypair, authorized before the bridge starts."""
    public, secret = create_keypair(sockdir / "alice", "alice")
    authorize(sockdir / "keys", public, "alice")
    pair = load_keypair(secret)
    return pair.public, pair.secret


@pytest.fixture
def curve_bridge(sockdir: Path, alice: tuple[str, str], bridge_log: IO[bytes]) -> Iterator[BridgeProcess]:
    proc = _start(sockdir, "--curve-dir", str(sockdir / "keys"), stderr=bridge_log)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def ctx() -> zmq.asyncio.Context:
    return zmq.asyncio.Context.instance()  # the process's one context, as BridgeClient uses


async def _handshake(
    ctx: zmq.asyncio.Context, info: ConnectionInfo, keys: tuple[str, str] | None, endpoint: str = "command"
) -> tuple[int, int]:
    """(event, value) of the first handshake outcome of a DEALER/SUB dialing the bridge with ``keys``."""
    sock = ctx.socket(zmq.DEALER if endpoint == "command" else zmq.SUB)
    sock.linger = 0
    if keys is not None:
        assert info.curve_serverkey is not None
        sock.curve_serverkey = info.curve_serverkey.encode()
        sock.curve_publickey, sock.curve_secretkey = keys[0].encode(), keys[1].encode()
    monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
    try:
        sock.connect(info.command_endpoint if endpoint == "command" else info.event_endpoint)
        event: dict[str, Any] = await asyncio.wait_for(recv_monitor_message(monitor), 15)  # type: ignore[arg-type]
        return event["event"], event["value"]
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


@pytest.fixture
async def stranger(curve_bridge: BridgeProcess) -> AsyncIterator[BridgeClient]:
    """A client with a well-formed but unknown keypair: the bridge's key, its HMAC key, not its trust."""
    public, secret = zmq.curve_keypair()
    info = _tcp_info(curve_bridge).model_copy(
        update={"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}
    )
    client = BridgeClient(info, timeout=0.5, retries=1, heartbeat_interval=None)
    try:
        yield client
    finally:
        await client.close(linger_ms=0)


async def test_an_unknown_key_is_refused_by_zap_and_gets_nothing(
    ctx: zmq.asyncio.Context,
    curve_bridge: BridgeProcess,
    alice: tuple[str, str],
    stranger: BridgeClient,
    bridge_log: IO[bytes],
) -> None:
    info = _tcp_info(curve_bridge)
    # Controls: the handed-out watcher key and a user key dropped into authorized/ both get in.
    watcher = (info.curve_publickey or "", info.curve_secretkey or "")
    assert await _handshake(ctx, info, watcher) == (zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)
    assert await _handshake(ctx, info, alice, "event") == (zmq.EVENT_HANDSHAKE_SUCCEEDED, 0)

    unknown = (stranger.info.curve_publickey or "", stranger.info.curve_secretkey or "")
    assert await _handshake(ctx, info, unknown) == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
    assert await _handshake(ctx, info, unknown, "event") == (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400)
    with pytest.raises((BridgeTimeout, BridgeLost)):
        await stranger.slots()
    with pytest.raises((BridgeTimeout, BridgeLost)):
        await stranger.subscribe("w1")
    bridge_log.seek(0)
    log = bridge_log.read().decode()
    assert "refused by ZAP" in log and unknown[0] in log
    assert watcher[0] not in log  # admitted keys are not warned about

    # The bridge is unharmed: the watcher's client works on.
    async with await BridgeClient.connect(info) as client:
        assert await client.slots() == []


async def test_a_client_without_curve_gets_nothing(
    ctx: zmq.asyncio.Context, curve_bridge: BridgeProcess
) -> None:
    info = _tcp_info(curve_bridge)
    plain = info.model_copy(
        update={"curve_serverkey": None, "curve_publickey": None, "curve_secretkey": None}
    )
    for endpoint in ("command", "event"):
        event, _ = await _handshake(ctx, plain, None, endpoint)
        # NULL against a CURVE server; when the server hangs up before its error command is read, the
        # failure comes without detail.
        assert event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    client = BridgeClient(plain, timeout=0.5, retries=1, heartbeat_interval=None)
    try:
        with pytest.raises((BridgeTimeout, BridgeLost)):
            await client.heartbeat()
    finally:
        await client.close(linger_ms=0)


def test_plain_tcp_is_refused_without_insecure_and_binds_nothing(sockdir: Path) -> None:
    runtime = sockdir / "b"
    conn = runtime / "bridge.json"
    argv = ["bridge", "--connection-file", str(conn), "--listen", "tcp://127.0.0.1:*"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0
    assert "refusing to listen on tcp://127.0.0.1:* without CURVE" in result.output
    assert "--insecure" in result.output and "--curve-dir" in result.output
    assert not runtime.exists()  # no runtime dir, no lock, no socket, no connection file

    for extra, message in [
        (["--insecure", "--curve-dir", str(sockdir / "k")], "exclude each other"),
        (["--listen", "udp://h:1", "--insecure"], "expected tcp://HOST:PORT"),
        (["--insecure", "--tcp-connection-file", str(conn)], "must differ from --connection-file"),
    ]:
        result = CliRunner().invoke(main, [*argv, *extra])
        assert result.exit_code != 0 and message in result.output
    for flag in (["--insecure"], ["--curve-dir", str(sockdir / "k")]):
        result = CliRunner().invoke(main, ["bridge", "--connection-file", str(conn), *flag])
        assert result.exit_code != 0 and "only applies with --listen" in result.output
    assert not runtime.exists() and not (sockdir / "k").exists()


async def test_insecure_serves_plain_tcp_with_a_loud_warning(sockdir: Path, bridge_log: IO[bytes]) -> None:
    bridge = _start(sockdir, "--insecure", stderr=bridge_log)
    try:
        info = _tcp_info(bridge)
        assert info.transport == "tcp" and info.curve_serverkey is None and info.curve_secretkey is None
        assert info.key == bridge.connection.key
        async with await BridgeClient.connect(info) as client:
            reply = await client.heartbeat()
            assert reply.session == bridge.connection.session
    finally:
        bridge.kill()
    bridge_log.seek(0)
    log = bridge_log.read().decode()
    assert "WARNING: --insecure" in log and "INSECURE: serving plain TCP" in log


async def test_insecure_still_checks_the_hmac(sockdir: Path) -> None:
    bridge = _start(sockdir, "--insecure")
    try:
        forged = _tcp_info(bridge).model_copy(update={"key": "0" * 64})
        client = BridgeClient(forged, timeout=0.5, retries=1, heartbeat_interval=None)
        try:
            with pytest.raises((BridgeTimeout, BridgeLost)):
                await client.slots()
        finally:
            await client.close(linger_ms=0)
    finally:
        bridge.kill()


def test_a_port_in_use_fails_cleanly(sockdir: Path) -> None:
    """The bind fails after the ZAP handler started: the bridge still exits promptly and removes its
    files (a ZAP socket left open would hang the context's termination)."""
    runtime = sockdir / "b"
    with zmq.Context() as context, context.socket(zmq.REP) as taken:
        port = taken.bind_to_random_port("tcp://127.0.0.1")
        argv = [
            sys.executable,
            "-m",
            "ipc_bridge.server.cli",
            "--connection-file",
            str(runtime / "bridge.json"),
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--curve-dir",
            str(sockdir / "keys"),
        ]
        result = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        taken.close(linger=0)
    assert result.returncode == 1
    assert f"cannot listen on tcp://127.0.0.1:{port}" in result.stderr.decode()
    assert sorted(p.name for p in runtime.iterdir()) == []
    secret = sockdir / "keys" / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def _break_world_writable_authorized(keys: Path, outside: Path) -> Path:
    (keys / "authorized").chmod(0o777)
    return keys / "authorized"


def _break_open_keys_dir(keys: Path, outside: Path) -> Path:
    keys.chmod(0o755)
    return keys


def _break_world_writable_key(keys: Path, outside: Path) -> Path:
    key = keys / "authorized" / "watcher.key"
    key.chmod(0o666)
    return key


def _break_symlinked_key(keys: Path, outside: Path) -> Path:
    public, _ = create_keypair(outside, "mallory")
    link = keys / "authorized" / "mallory.key"
    link.symlink_to(public)
    return link


def _break_readable_secret(keys: Path, outside: Path) -> Path:
    secret = keys / "server.key_secret"
    secret.chmod(0o640)
    return secret


def _break_symlinked_authorized_dir(keys: Path, outside: Path) -> Path:
    elsewhere = outside / "auth"
    outside.mkdir()
    (keys / "authorized").rename(elsewhere)
    (keys / "authorized").symlink_to(elsewhere)
    return keys / "authorized"


@pytest.mark.parametrize(
    ("damage", "fix"),
    [
        (_break_world_writable_authorized, "chmod 700"),
        (_break_open_keys_dir, "chmod 700"),
        (_break_world_writable_key, "chmod go-w"),
        (_break_symlinked_key, "symlink"),
        (_break_readable_secret, "chmod 600"),
        (_break_symlinked_authorized_dir, "symlink"),
    ],
)
def test_keys_others_could_change_are_refused_at_start(
    sockdir: Path, damage: Callable[[Path, Path], Path], fix: str
) -> None:
    """StrictModes: any local user who can write authorized/ (or a key in it, or what a symlink there
    points to) could let anyone in. The bridge refuses to start, naming the path and the fix."""
    keys = sockdir / "keys"
    ensure_server_keys(keys)  # a valid directory first: the damage is the only thing wrong
    culprit = damage(keys, sockdir / "outside")
    conn = sockdir / "b" / "bridge.json"
    argv = [
        "bridge",
        "--connection-file",
        str(conn),
        "--listen",
        "tcp://127.0.0.1:*",
        "--curve-dir",
        str(keys),
    ]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0
    assert str(culprit) in result.output and fix in result.output, result.output
    assert not conn.exists() and not conn.with_name("bridge-tcp.json").exists()
