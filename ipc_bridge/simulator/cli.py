"""``orchestrate simulate``: serve a simulated Roo Code extension host on a socket until CloseTask, or
(``--farm``) a farm of them opened and closed over a control socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import orjson

from ipc_bridge.simulator.farm import SimulatorFarm, serve_farm
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.script import ScriptError, host_options, load_script, normalize_engine

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 103  # sun_path is 108 bytes on Linux, 104 on macOS, NUL included


async def serve(host: SimulatorHost, *, handle_signals: bool = True) -> None:
    """Run ``host`` until CloseTask, a crash, or SIGTERM/SIGINT (which stop it cleanly)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    await host.start()
    try:
        for sig in signals:
            loop.add_signal_handler(sig, host.request_stop)
        await host.wait_closed()
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await host.stop()


def run_simulator(
    socket_path: str,
    *,
    workspace: str | os.PathLike[str] | None = None,
    engine: str = "3.52",
    script: Mapping[str, Any] | str | Path | None = None,
    seed: int = 0,
    time_scale: float = 1.0,
    status_delay: float = 2.0,
    engine_lags: bool = True,
    on_crash: Callable[[], None] | None = None,
    handle_signals: bool = True,
) -> int:
    """Serve one simulated host in a fresh event loop; returns the exit status (0 on a clean end)."""
    host = SimulatorHost(
        socket_path,
        workspace=workspace,
        engine=engine,
        script=script,
        seed=seed,
        time_scale=time_scale,
        status_delay=status_delay,
        engine_lags=engine_lags,
        on_crash=on_crash,
    )
    asyncio.run(serve(host, handle_signals=handle_signals))
    return 0


def run_farm(control_path: str, *, defaults: Mapping[str, Any] | None = None) -> int:
    """Serve a farm in a fresh event loop; prints ``{"ready": true, ...}`` once its control socket listens."""
    farm = SimulatorFarm(control_path, defaults)

    def ready() -> None:
        # The one line a launcher waits for (readiness is a line, never a sleep); logs go to stderr.
        click.echo(orjson.dumps({"ready": True, "control": control_path, "pid": os.getpid()}).decode())

    asyncio.run(serve_farm(farm, on_ready=ready))
    return 0


def _crash_now() -> None:
    # The crash outcome: die at once, no socket cleanup, no goodbye (like a killed VS Code window).
    logging.shutdown()
    os._exit(1)


EPILOG = """\b
Script format (YAML or JSON; every key optional; full reference in docs/simulator.md):
  outcome: completed | aborted | hang | followup | crash | api_error | api_error_noauto
  duration: 2s              total time of the agent's own work ("500ms", "1m" or seconds):
                            taskStarted -> completion ask with jitter: 0; waits on outside
                            things come on top (start lag, write_delay, an answer, a
                            subtask's own work, a command that runs, API retries)
  text: "I will ..."        assistant text streamed first;  chunks: 1
  files: {"a.py": "..."}    files written into the workspace (write_to_file calls)
  tools: [{tool: apply_diff, path: a.py, search: x, replace: y}, ...]
  tokens: {in: 1200, out: 300}   cost: 0.012   completion: "Done."
  subtasks: [{...a script...}]   engine: "3.52"   seed: 7
A task's StartNewTask configuration may carry its own script under the key
"simulate"; its keys override the --script file's.
"""


@click.command("simulate", epilog=EPILOG)
@click.option(
    "--socket",
    "socket_path",
    envvar="ROO_CODE_IPC_SOCKET_PATH",
    show_envvar=True,
    default=None,
    help="Path of the unix socket to serve (taken over if it exists).",
)
@click.option(
    "--farm",
    "farm_path",
    metavar="CONTROL_SOCKET",
    default=None,
    help="Serve a farm of hosts instead of one: hosts are opened and closed by requests on this control "
    "socket (see ipc_bridge.simulator.farm). The other options are the hosts' defaults. Prints one JSON "
    "line once the control socket listens; stops when its last control connection closes.",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory the simulated agent writes files into.  [default: the current directory]",
)
@click.option(
    "--engine",
    default="3.52",
    show_default=True,
    metavar="3.52|3.50",
    help="Engine whose completion events to reproduce: 3.52 (no taskCompleted) or 3.50; full versions "
    "such as 3.52.1 are accepted.",
)
@click.option(
    "--script",
    "script_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML/JSON script for every task (see below).  [default: complete after writing hello.txt]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of task ids and timing jitter.")
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiplies every scripted duration (0.05 = 20x faster).",
)
@click.option(
    "--status-delay",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between an ask and its taskIdle/taskInteractive/taskResumable, as in the engine.",
)
@click.option(
    "--engine-lags/--no-engine-lags",
    default=True,
    show_default=True,
    help="The engine's own lags (~2 s to listen, tens of ms to create and start a task), scaled by "
    "--time-scale; --no-engine-lags leaves them out.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    socket_path: str | None,
    farm_path: str | None,
    workspace: Path | None,
    engine: str,
    script_file: Path | None,
    seed: int,
    time_scale: float,
    status_delay: float,
    engine_lags: bool,
) -> None:
    """Serve a simulated Roo Code extension host on a unix socket.

    Speaks the extension's IPC protocol (node-ipc framing, Ack, task commands and events) with a
    scripted, deterministic agent instead of a model. Runs until CloseTask, SIGTERM or SIGINT, then
    removes the socket and exits 0.
    """
    if farm_path is not None:
        if ctx.get_parameter_source("socket_path") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--socket and --farm exclude each other")
        socket_path = None
        if len(os.fsencode(farm_path)) > MAX_SOCKET_PATH:
            raise click.BadParameter(f"longer than {MAX_SOCKET_PATH} bytes", param_hint="--farm")
    elif socket_path is None:
        raise click.UsageError("give --socket (or ROO_CODE_IPC_SOCKET_PATH), or --farm")
    elif len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise click.BadParameter(f"longer than {MAX_SOCKET_PATH} bytes", param_hint="--socket")
    try:
        engine = normalize_engine(engine)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine") from exc
    try:
        host_options(seed=seed, time_scale=time_scale, status_delay=status_delay, engine_lags=engine_lags)
    except ScriptError as exc:
        raise click.BadParameter(str(exc)) from exc
    if workspace is not None and not workspace.is_dir():
        raise click.BadParameter(f"{workspace} is not a directory", param_hint="--workspace")
    try:
        script = load_script(script_file) if script_file is not None else None
    except ScriptError as exc:
        raise click.BadParameter(str(exc), param_hint="--script") from exc
    if farm_path is not None:
        defaults: dict[str, Any] = {"engine": engine, "seed": seed, "time_scale": time_scale}
        defaults |= {"status_delay": status_delay, "script": script, "workspace": workspace}
        defaults |= {"engine_lags": engine_lags}
        run_farm(farm_path, defaults={k: v for k, v in defaults.items() if v is not None})
        return
    assert socket_path is not None
    run_simulator(
        socket_path,
        workspace=workspace,
        engine=engine,
        script=script,
        seed=seed,
        time_scale=time_scale,
        status_delay=status_delay,
        engine_lags=engine_lags,
        on_crash=_crash_now,
    )
