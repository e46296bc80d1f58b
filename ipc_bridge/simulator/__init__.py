"""A simulated Roo Code extension host: the protocol of Roo's IpcServer + API with a scripted agent.

Used as the extension host when no VS Code exists (tests, CI, dry runs of a suite). See
docs/simulator.md for the script format and the engine differences it reproduces.
"""

from __future__ import annotations

from ipc_bridge.simulator.cli import run_simulator, serve
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.script import (
    DEFAULT_SCRIPT,
    Chaos,
    Script,
    ScriptError,
    chaos_outcome,
    load_script,
    normalize_engine,
    parse_script,
)
from ipc_bridge.simulator.server import IpcServer

__all__ = [
    "DEFAULT_SCRIPT",
    "Chaos",
    "IpcServer",
    "Script",
    "ScriptError",
    "SimulatorHost",
    "chaos_outcome",
    "load_script",
    "normalize_engine",
    "parse_script",
    "run_simulator",
    "serve",
]
