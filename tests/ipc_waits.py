"""Waiting on a node-ipc connection to an extension host: for an event, or for the host to go away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ipc_bridge.roo.extension import Disconnected, ExtensionConnection


async def until_event(
    conn: ExtensionConnection,
    name: str,
    timeout: float = 5.0,
    recv: Callable[[ExtensionConnection], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The data of the next TaskEvent ``name`` on ``conn`` (``recv`` reads a message; default: as is)."""
    read = recv or (lambda c: c.recv_data())

    async def loop() -> dict[str, Any]:
        while True:
            data = await read(conn)
            if data.get("type") == "TaskEvent" and data["data"]["eventName"] == name:
                return dict(data["data"])

    return await asyncio.wait_for(loop(), timeout)


async def until_disconnected(conn: ExtensionConnection, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while True:
            await conn.recv_data()

    with pytest.raises(Disconnected):
        await asyncio.wait_for(loop(), timeout)
