"""StartNewTask's deadline travels with the request (issue #10, section 2): a suite's ``start_timeout``
above the bridge's own ``--start-timeout`` used to have no effect, because the bridge's default
answered first. Scaled down: the bridge's default is 0.5 s here and the host takes 1.5 s to create the
task."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ipc_bridge.client.types import CommandTimeout
from ipc_bridge.server.slots import SlotConfig
from ipc_bridge.wire.messages import TaskCommandRequest
from tests.faults.bad_input_harness import FakeHost, HostConn, frame, inproc_bridge

pytestmark = pytest.mark.timeout(60)

BRIDGE_DEFAULT = 0.5
HOST_DELAY = 1.5


async def slow_host(conn: HostConn, command: dict[str, Any]) -> None:
    """Creates a task ``HOST_DELAY`` s after each StartNewTask, as a loaded VS Code window does."""
    data = command.get("data")
    if isinstance(data, dict) and data.get("commandName") == "StartNewTask":
        await asyncio.sleep(HOST_DELAY)
        await conn.send(frame("taskCreated", f"t{len(conn.commands)}"))


async def test_the_request_deadline_outlasts_the_bridge_default(sockdir: Path) -> None:
    async with (
        FakeHost(sockdir / "h.sock", on_command=slow_host) as host,
        inproc_bridge(sockdir, SlotConfig(start_timeout=BRIDGE_DEFAULT)) as (_, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        # The suite's start_timeout (45 s in the issue; 3 s here) is what the bridge waits.
        assert await client.start_task("w1", "go", start_timeout=3 * HOST_DELAY) == "t1"
        # Without one, the bridge's default still applies, and it is shorter than the host's delay.
        with pytest.raises(CommandTimeout, match=re.escape(f"within {BRIDGE_DEFAULT:g} s")):
            await client.start_task("w1", "go")
        # A deadline shorter than the default is honoured too: the request's, not the larger one.
        with pytest.raises(CommandTimeout, match=re.escape("within 0.2 s")):
            await client.start_task("w1", "go", start_timeout=0.2)


def test_the_deadline_is_part_of_the_request_model() -> None:
    req = TaskCommandRequest(slot="w1", command={"commandName": "StartNewTask"}, start_timeout=45)
    assert req.model_dump()["start_timeout"] == 45
    assert TaskCommandRequest(slot="w1", command={}).start_timeout is None  # older clients
    for bad in (0, -1, -1e-9):
        with pytest.raises(ValidationError, match="start_timeout"):
            TaskCommandRequest(slot="w1", command={}, start_timeout=bad)
