"""A flood of events through the bridge must not starve the subscriber's event loop: its heartbeats keep
going (so the bridge never expires its slot) and the consumer sees events as they come."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.server.launcher import start_bridge_process
from tests.conftest import requires_node
from tests.interop.peers import Processes

pytestmark = [pytest.mark.interop, requires_node, pytest.mark.timeout(120)]

EVENTS = 30_000


async def test_subscriber_loop_keeps_turning_during_a_flood(procs: Processes, sockdir: Path) -> None:
    sock = sockdir / "flood.sock"
    await procs.roo_server(sock, "--stream", str(EVENTS), "--size", "400")
    bridge = await asyncio.to_thread(start_bridge_process, sockdir / "b")
    client = await BridgeClient.connect(bridge.connection)
    names: list[str] = []
    seen_at_ticks: list[int] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            seen_at_ticks.append(len(names))

    tick = asyncio.ensure_future(ticker())
    try:
        await client.attach("flood", str(sock), connect_timeout=10)  # owned by this client's session
        async with contextlib.aclosing(client.events("flood", since_seq=0)) as stream:
            await client.start_task("flood", "go")
            async for event in stream:
                if event.msg_type == "task_event":
                    names.append(event.event_name or "")
                    if event.event_name == "taskIdle":
                        break
        assert names.count("message") == EVENTS
        (info,) = [s for s in await client.slots() if s.slot == "flood"]
        assert info.state == "up"
        assert info.owner == client.session.session  # never expired for silence
        # The loop turned while the flood came in, not only before and after it: other tasks ran
        # between batches of events (a count of turns, not a clock: it holds on a busy machine).
        during = {n for n in seen_at_ticks if 0 < n < EVENTS}
        assert len(during) >= 10, f"the loop turned at only {len(during)} points of the flood"
    finally:
        stop.set()
        await tick
        await client.close()
        await asyncio.to_thread(bridge.stop)
