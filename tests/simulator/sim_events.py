"""Helpers of the simulator tests: a StartNewTask, and collecting a task's events from a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ipc_bridge.roo.extension import ExtensionConnection
from ipc_bridge.roo.protocol import (
    StartNewTask,
    StartNewTaskData,
)

Event = dict[str, Any]

FAST = {"time_scale": 0.05, "status_delay": 0.1}


def start_cmd(script: dict[str, Any] | None = None, text: str = "do it", **config: Any) -> StartNewTask:
    if script is not None:
        config["simulate"] = script
    return StartNewTask(data=StartNewTaskData(configuration=config, text=text))


async def collect(
    conn: ExtensionConnection, until: Callable[[Event], bool], timeout: float = 5.0
) -> list[Event]:
    """TaskEvents up to and including the first one matching ``until``."""
    events: list[Event] = []

    async def loop() -> list[Event]:
        while True:
            data = await conn.recv_data()
            if data.get("type") == "TaskEvent":
                events.append(data["data"])
                if until(data["data"]):
                    return events

    return await asyncio.wait_for(loop(), timeout)


def named(name: str) -> Callable[[Event], bool]:
    return lambda ev: ev["eventName"] == name


def created(kind: str) -> Callable[[Event], bool]:
    def pred(ev: Event) -> bool:
        if ev["eventName"] != "message" or ev["payload"][0]["action"] != "created":
            return False
        msg = ev["payload"][0]["message"]
        return f"{msg['type']}:{msg.get(msg['type'])}" == kind

    return pred


def kinds(events: list[Event]) -> list[str]:
    """Event names, with created messages as say:X / ask:X (updates left out)."""
    out = []
    for ev in events:
        if ev["eventName"] != "message":
            out.append(ev["eventName"])
        elif ev["payload"][0]["action"] == "created":
            msg = ev["payload"][0]["message"]
            out.append(f"{msg['type']}:{msg.get(msg['type'])}")
    return out
