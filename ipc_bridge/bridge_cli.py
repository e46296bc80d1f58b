"""``orchestrate bridge``: run the node-ipc <-> ZeroMQ bridge until SIGTERM/SIGINT or ``shutdown``.

Also runnable as ``python -m ipc_bridge.bridge_cli`` (what :func:`ipc_bridge.launcher.start_bridge_process`
uses, so that the bridge never depends on the orchestrator package).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from .bridge import BridgeConfig, run_bridge
from .connection_file import BridgeAlreadyRunning, ConnectionInfo
from .slots import SlotConfig

KEY_ENV = "ORCHESTRATE_BRIDGE_KEY"
"""The HMAC key may come from the environment (never argv: other users can read argv with ps)."""

log = logging.getLogger(__name__)


def _parse_attach(values: tuple[str, ...]) -> dict[str, str]:
    slots: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r} is not SLOT=PATH", param_hint="--attach")
        slots[name] = path
    return slots


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
@click.option("--buffer-mib", default=256, show_default=True, help="Replay buffer per slot (MiB).")
@click.option("--xpub-hwm", default=100_000, show_default=True, help="XPUB send HWM per subscriber.")
@click.option("--hugz-interval", default=1.0, show_default=True, help="Idle heartbeat period (s).")
@click.option("--ready-fd", type=int, help="Write 'ready' to this fd once serving (for launchers).")
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
    ready_fd: int | None,
) -> None:
    """Run the node-ipc <-> ZeroMQ bridge: commands on a ROUTER, events on an XPUB."""
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
        attach=_parse_attach(attach),
    )

    def ready(info: ConnectionInfo) -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    try:
        asyncio.run(run_bridge(config, ready))
    except BridgeAlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    bridge()
