"""``orchestrate bridge``: run the node-ipc <-> ZeroMQ bridge until SIGTERM/SIGINT or ``shutdown``.

Also runnable as ``python -m ipc_bridge.server.cli`` (what :func:`ipc_bridge.server.launcher.start_bridge_process`
uses, so that the bridge never depends on the orchestrator package).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from ipc_bridge.redaction import receive_secrets, redact_process_output
from ipc_bridge.server.bridge import run_bridge
from ipc_bridge.server.config import BridgeConfig
from ipc_bridge.server.slots import SlotConfig
from ipc_bridge.server.tcp_listen import ListenError, TcpConfig, parse_listen
from ipc_bridge.wire.connection_file import KEY_ENV, BridgeAlreadyRunning, ConnectionInfo
from ipc_bridge.wire.curve import CurveError

log = logging.getLogger(__name__)


def _parse_attach(values: tuple[str, ...]) -> dict[str, str]:
    slots: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r} is not SLOT=PATH", param_hint="--attach")
        slots[name] = path
    return slots


def _tcp_config(
    listen: str | None,
    curve_dir: Path | None,
    insecure: bool,
    tcp_connection_file: Path | None,
    advertise: str | None,
    connection_file: Path,
) -> TcpConfig | None:
    """Checked before anything is bound: plain TCP is refused unless asked for by name."""
    if listen is None:
        for flag, given in (("--curve-dir", curve_dir), ("--insecure", insecure), ("--advertise", advertise)):
            if given:
                raise click.UsageError(f"{flag} only applies with --listen")
        return None
    tcp_file = tcp_connection_file or connection_file.with_name(
        f"{connection_file.stem}-tcp{connection_file.suffix or '.json'}"
    )
    if tcp_file.absolute() == connection_file.absolute():
        raise click.UsageError("--tcp-connection-file must differ from --connection-file")
    try:
        return TcpConfig(
            listen=parse_listen(listen),
            connection_file=tcp_file,
            keys_dir=curve_dir,
            insecure=insecure,
            advertise_host=advertise,
        )
    except ListenError as exc:
        raise click.UsageError(str(exc)) from None


@click.command()
@click.option(
    "--connection-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the connection file (mode 0600).",
)
@click.option(
    "--runtime-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Private (0700) directory for the ipc sockets and the lock [default: the connection file's dir].",
)
@click.option("--attach", "attach", multiple=True, metavar="SLOT=PATH", help="Attach a host at start-up.")
@click.option("--start-timeout", default=30.0, show_default=True, help="Seconds StartNewTask waits.")
@click.option("--query-timeout", default=10.0, show_default=True, help="Seconds a Get* command waits.")
@click.option("--reconnect-interval", default=0.5, show_default=True, help="Retry interval for lost hosts.")
@click.option("--buffer-events", default=100_000, show_default=True, help="Replay buffer per slot (events).")
@click.option(
    "--buffer-mib",
    default=64,
    show_default=True,
    help="Replay buffer per slot (MiB of memory its events take, not their length on the wire).",
)
@click.option("--xpub-hwm", default=1_000, show_default=True, help="XPUB send HWM per subscriber.")
@click.option("--hugz-interval", default=1.0, show_default=True, help="Idle heartbeat period (s).")
@click.option(
    "--keep-detached",
    default=64,
    show_default=True,
    type=click.IntRange(min=0),
    help="Detached slots whose replay buffers are kept for late subscribers; older ones are forgotten.",
)
@click.option("--ready-fd", type=int, help="Write 'ready' to this fd once serving (for launchers).")
@click.option(
    "--secrets-fd",
    type=int,
    help="Read a JSON list of secrets from this fd at start-up; they never appear in the log (for launchers).",
)
@click.option(
    "--listen",
    metavar="tcp://HOST:PORT",
    help="Also serve on TCP, for clients on other machines: commands on PORT, events on PORT+1 "
    "(PORT * or 0: any free ports). Needs --curve-dir (CURVE) or --insecure.",
)
@click.option(
    "--curve-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="CURVE keys for --listen (dirs 0700, secrets 0600): DIR/server.key_secret, the bridge's keypair; "
    "DIR/authorized/*.key, the public keys of the clients admitted (read at start-up); "
    "DIR/clients/watcher.key_secret, a client keypair handed out in the TCP connection file. "
    "Missing keypairs are created.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow --listen without CURVE: no encryption, no client authentication (HMAC signing stays on).",
)
@click.option(
    "--tcp-connection-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the connection file for remote clients (0600, it holds the client keypair) "
    "[default: NAME-tcp.json beside --connection-file].",
)
@click.option(
    "--advertise",
    metavar="HOST",
    help="Host remote clients dial, in the TCP connection file [default: the listen address; this "
    "machine's name when listening on * / 0.0.0.0].",
)
def bridge(
    connection_file: Path,
    runtime_dir: Path | None,
    attach: tuple[str, ...],
    start_timeout: float,
    query_timeout: float,
    reconnect_interval: float,
    buffer_events: int,
    buffer_mib: int,
    xpub_hwm: int,
    hugz_interval: float,
    keep_detached: int,
    ready_fd: int | None,
    secrets_fd: int | None,
    listen: str | None,
    curve_dir: Path | None,
    insecure: bool,
    tcp_connection_file: Path | None,
    advertise: str | None,
) -> None:
    """Run the node-ipc <-> ZeroMQ bridge: commands on a ROUTER, events on an XPUB.

    Both are bound on ipc endpoints in the private runtime directory, and with --listen also on TCP,
    where the bridge is a CURVE server that admits only the client keys in --curve-dir/authorized.
    The TCP connection file (--tcp-connection-file) is what `orchestrate watch` needs on the other
    machine; copy it there over a secure channel, like an ssh key.
    """
    if secrets_fd is not None:
        redact_process_output(receive_secrets(secrets_fd))
    tcp = _tcp_config(listen, curve_dir, insecure, tcp_connection_file, advertise, connection_file)
    if tcp is not None and tcp.insecure:
        click.secho(
            f"WARNING: --insecure: {listen} will serve plain TCP, unencrypted and without client "
            "authentication. Anyone who can reach it can read every event.",
            err=True,
            fg="red",
            bold=True,
        )
    config = BridgeConfig(
        runtime_dir=runtime_dir or connection_file.parent,
        connection_file=connection_file,
        key=os.environ.get(KEY_ENV) or None,
        slot=SlotConfig(
            start_timeout=start_timeout,
            query_timeout=query_timeout,
            reconnect_interval=reconnect_interval,
            buffer_events=buffer_events,
            buffer_bytes=buffer_mib * 1024 * 1024,
        ),
        xpub_hwm=xpub_hwm,
        hugz_interval=hugz_interval,
        detached_keep=keep_detached,
        attach=_parse_attach(attach),
        tcp=tcp,
    )

    def ready(info: ConnectionInfo) -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    try:
        asyncio.run(run_bridge(config, ready))
    except (BridgeAlreadyRunning, ListenError, CurveError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    bridge()
