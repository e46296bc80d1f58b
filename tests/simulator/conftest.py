"""A simulator host (fast timing) in a private socket directory, and a connection to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ipc_bridge.roo.extension import ExtensionConnection, connect
from ipc_bridge.simulator.host import SimulatorHost
from tests.simulator.sim_events import FAST


@pytest.fixture
async def host(sockdir: Path) -> AsyncIterator[SimulatorHost]:
    (sockdir / "ws").mkdir()
    h = SimulatorHost(sockdir / "h.sock", sockdir / "ws", **FAST)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def client(host: SimulatorHost) -> AsyncIterator[ExtensionConnection]:
    conn = await connect(host.socket_path, timeout=5)
    try:
        yield conn
    finally:
        await conn.close()
