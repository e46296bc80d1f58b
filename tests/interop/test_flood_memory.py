"""A host flooding tiny events must not grow the bridge past its caps (issue #10, section 4): with the
default caps the bridge process's peak RSS stays under 300 MiB, and another slot keeps answering.

Tiny events are the worst case per byte: what an event costs the bridge in Python objects and queue
entries is many times its length on the wire (it was ~9 KiB per buffered event, 909 MiB for a flood).
A subscriber that stops reading is there too: it makes the XPUB queue fill up to its bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.server.launcher import start_bridge_process
from tests.conftest import requires_node
from tests.interop.peers import Processes

pytestmark = [pytest.mark.interop, requires_node, pytest.mark.timeout(300)]

EVENTS = 150_000
RSS_CAP_KIB = 300 * 1024


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


async def test_a_flood_of_tiny_events_keeps_the_bridge_under_its_memory_cap(
    procs: Processes, sockdir: Path
) -> None:
    flood_sock, quiet_sock = sockdir / "flood.sock", sockdir / "quiet.sock"
    flooder, _ = await procs.roo_server(flood_sock, "--stream", str(EVENTS), "--size", "1")
    await procs.roo_server(quiet_sock)
    bridge = await asyncio.to_thread(start_bridge_process, sockdir / "b")  # default caps
    client = await BridgeClient.connect(bridge.connection)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)  # subscribes, then never reads
    stalled.linger = 0
    try:
        await client.attach("flood", str(flood_sock), connect_timeout=10)
        await client.attach("quiet", str(quiet_sock), connect_timeout=10)
        stalled.connect(bridge.connection.event_endpoint)
        stalled.subscribe(b"slot.flood.")
        await client.subscribe("flood")  # welcomed: the XPUB knows both subscriptions now
        await client.start_task("flood", "go")
        answered = 0
        streamed = asyncio.ensure_future(flooder.wait_for(lambda line: "streamed" in line, timeout=240))
        while not streamed.done():  # the other slot answers while the flood goes on
            modes = await client.query("quiet", "GetModes", timeout=30)
            assert any(mode["slug"] == "code" for mode in modes)
            answered += 1
        await streamed
        # Answered after every flood event the host wrote before it: the bridge has read them all.
        await client.query("flood", "GetModes", timeout=60)
        (info,) = [s for s in await client.slots() if s.slot == "flood"]
        assert info.state == "up" and info.seq >= EVENTS + 3
        assert answered >= 1
        peak = peak_rss_kib(bridge.pid)
        assert peak <= RSS_CAP_KIB, f"bridge peak RSS {peak / 1024:.0f} MiB"
    finally:
        stalled.close()
        ctx.term()
        await client.close()
        await asyncio.to_thread(bridge.stop)
