"""What the scripted agent needs from the host it runs in (:class:`HostLink`), and the built-in modes both
name (modesResponse, the newTask ask)."""

from __future__ import annotations

from typing import Any, Protocol

from ipc_bridge.simulator.task import TaskInstance

MODE_NAMES = {
    "architect": "🏗️ Architect",
    "code": "💻 Code",
    "ask": "❓ Ask",
    "debug": "🪲 Debug",
    "orchestrator": "🪃 Orchestrator",
}
"""Built-in modes, as modesResponse and the newTask ask name them."""


class HostLink(Protocol):
    """What the agent needs from the host."""

    time_scale: float
    status_delay: float
    usage_window: float

    def emit(self, name: str, *payload: Any) -> None: ...

    def next_ts(self) -> int: ...

    def new_task_id(self) -> str: ...

    def start_lag(self) -> float: ...

    def set_current(self, instance: TaskInstance) -> None: ...

    def crash(self) -> None: ...

    def freeze(self) -> None: ...
