#!/usr/bin/env python
"""The bridge's peak memory under a single-host flood (issue #10, section 4), with its default caps.

    .venv/bin/python benchmarks/bridge_memory.py [--json] [--events 300000] [--scenario tiny ...]

For each scenario a fresh bridge process (``start_bridge_process``, default caps) gets two hosts:
``interop/roo_server.js --stream N --size B`` floods N ``message`` events of about B bytes once the
StartNewTask goes out, and a second plain ``roo_server.js`` is asked GetModes again and again while the
flood lasts. Subscribers: ``live`` follows the flood slot with ``BridgeClient.events`` (filling gaps by
snapshot), ``stalled`` is a SUB that subscribes and never reads (its XPUB queue fills to its bound).
Printed: the bridge's peak RSS (``VmHWM`` from /proc), the flood's events per second as the host wrote
them, how many GetModes the other slot answered and the slowest of them. Target: peak <= 300 MiB.

A measurement, not a test: exits 0 whatever the figures; 1 means the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Children, loadavg, private_tempdir

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.client.types import EventGap
from ipc_bridge.server.launcher import start_bridge_process

TARGET_MIB = 300
SCENARIOS = {
    # name: (events, bytes per event, subscriber)
    "tiny": (None, 1, "stalled"),
    "tiny-live": (None, 1, "live"),
    "100k": (3_000, 100_000, "stalled"),
    "1m": (400, 1_000_000, "live"),
}


@dataclass
class Result:
    scenario: str
    events: int
    size: int
    subscriber: str
    peak_rss_mib: float
    host_rate: float | None
    other_slot_answers: int
    other_slot_slowest_ms: float
    flood_seq: int


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


async def follow(client: BridgeClient) -> None:
    """A live subscriber: reads the flood slot until taskIdle (a gap it cannot fill ends it)."""
    with contextlib.suppress(EventGap):
        async for event in client.events("flood", since_seq=0):
            if event.event_name == "taskIdle":
                return


async def scenario(name: str, events: int, size: int, subscriber: str, workdir: Path) -> Result:
    children = Children(workdir)
    run = workdir / name
    run.mkdir()
    flood_sock, quiet_sock = run / "f.sock", run / "q.sock"
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)
    stalled.linger = 0
    client: BridgeClient | None = None
    try:
        flooder = await children.node(
            "roo_server.js",
            "--socket",
            str(flood_sock),
            "--stream",
            str(events),
            "--size",
            str(size),
            name="flood",
        )
        await flooder.wait_for(lambda line: "listening" in line, 20)
        quiet = await children.node("roo_server.js", "--socket", str(quiet_sock), name="quiet")
        await quiet.wait_for(lambda line: "listening" in line, 20)
        bridge = children.add_bridge(await asyncio.to_thread(start_bridge_process, run / "b"))
        client = await BridgeClient.connect(bridge.connection)
        await client.attach("flood", str(flood_sock), connect_timeout=10)
        await client.attach("quiet", str(quiet_sock), connect_timeout=10)
        reader = None
        if subscriber == "stalled":
            stalled.connect(bridge.connection.event_endpoint)
            stalled.subscribe(b"slot.flood.")
            await client.subscribe("flood")
        else:
            reader = asyncio.ensure_future(follow(client))
            await client.subscribe("flood")
        await client.start_task("flood", "go")
        streamed = asyncio.ensure_future(flooder.wait_for(lambda line: "streamed" in line, 600))
        answers, slowest = 0, 0.0
        while not streamed.done():
            start = time.perf_counter()
            await client.query("quiet", "GetModes", timeout=60)
            slowest = max(slowest, time.perf_counter() - start)
            answers += 1
        line = await streamed
        await client.query("flood", "GetModes", timeout=120)  # after every flood event
        if reader is not None:
            await asyncio.wait_for(reader, 120)
        (info,) = [s for s in await client.slots() if s.slot == "flood"]
        return Result(
            name,
            events,
            size,
            subscriber,
            round(peak_rss_mib(bridge.pid), 1),
            line.get("emit_rate"),
            answers,
            round(slowest * 1000, 1),
            info.seq,
        )
    finally:
        stalled.close()
        ctx.term()
        if client is not None:
            await client.close()
        await children.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events of the tiny scenarios")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with private_tempdir("rbmem-") as workdir:
        for name in args.scenario or list(SCENARIOS):
            events, size, subscriber = SCENARIOS[name]
            results.append(await scenario(name, events or args.events, size, subscriber, workdir))
    if args.json:
        print(
            orjson.dumps(
                {"target_mib": TARGET_MIB, "loadavg": loadavg(), "results": [asdict(r) for r in results]}
            ).decode()
        )
        return 0
    print(f"bridge peak RSS under a single-host flood (default caps; target <= {TARGET_MIB} MiB)")
    print(
        f"{'scenario':<10} {'events':>8} {'bytes':>9} {'subscriber':<10} {'peak MiB':>9} "
        f"{'host ev/s':>10} {'other slot':>10} {'slowest ms':>10}"
    )
    for r in results:
        rate = f"{r.host_rate:,.0f}" if r.host_rate else "-"
        print(
            f"{r.scenario:<10} {r.events:>8} {r.size:>9} {r.subscriber:<10} {r.peak_rss_mib:>9.1f} "
            f"{rate:>10} {r.other_slot_answers:>10} {r.other_slot_slowest_ms:>10.1f}"
        )
    print(f"load average: {loadavg()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except Exception as exc:  # the benchmark itself failed
        print(f"bridge_memory: {exc!r}", file=sys.stderr)
        sys.exit(1)
