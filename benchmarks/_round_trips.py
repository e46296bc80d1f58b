"""The round trips of bridge_throughput.py: GetModes -> modesResponse through node-ipc, our direct
connection, two ZeroMQ echoes (the transport alone) and the bridge, each timed one at a time."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import zmq
import zmq.asyncio
from _common import NODE_WAIT, Children, CpuMeter, percentiles, start_roo_server, stop_roo_server

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.roo.extension import connect as connect_extension
from ipc_bridge.roo.protocol import GetModes
from ipc_bridge.server.launcher import BridgeProcess
from ipc_bridge.wire.messages import TaskCommandRequest
from ipc_bridge.wire.session import Session
from ipc_bridge.wire.zmq_loop import Reader, Sender, plain_socket, send_frames

MAIN = Path(__file__).with_name("bridge_throughput.py")
"""Runs the echo servers (``--zmq-echo``, ``--zmq-echo-plain``)."""
SLOT = "bench"
AttachBridge = Callable[[Children, Path, Path], Awaitable[tuple[BridgeProcess, BridgeClient, int]]]


async def rtt_node(children: Children, sock: Path, opts: Any) -> dict[str, Any]:
    # bench_rtt.js alternates validated and raw round trips: twice the count gives each the full count.
    proc = await children.node(
        "bench_rtt.js",
        *("--socket", str(sock), "--count", str(2 * opts.round_trips), "--warmup", str(opts.warmup)),
        *("--timeout", str(opts.timeout)),
    )
    summary = await proc.wait_for(lambda line: line.get("summary") is True, opts.timeout + NODE_WAIT)
    await proc.stop()
    return summary


async def timed(
    opts: Any, pids: dict[str, int | None], round_trip: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """``opts.round_trips`` round trips one at a time after ``opts.warmup``: percentiles (us) and the CPU
    per round trip of ``pids`` (``None``: this process)."""
    for _ in range(opts.warmup):
        await round_trip()
    cpu = CpuMeter(pids)
    samples: list[float] = []
    for _ in range(opts.round_trips):
        t0 = time.perf_counter_ns()
        await round_trip()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return {**percentiles(samples), "cpu_us": cpu.per_unit_us(opts.round_trips)}


async def rtt_direct(sock: Path, opts: Any) -> dict[str, Any]:
    conn = await connect_extension(str(sock), timeout=NODE_WAIT)
    command = GetModes()

    async def get_modes() -> None:
        await conn.send_command(command)
        while True:
            data = await conn.recv_data()
            if data.get("type") == "TaskEvent" and data["data"].get("eventName") == "modesResponse":
                return

    try:
        return await timed(opts, {"worker": None}, get_modes)
    finally:
        await conn.close()


async def rtt_zmq_echo(children: Children, tmp: Path, opts: Any) -> dict[str, Any]:
    endpoint = f"ipc://{tmp}/echo.ipc"
    server = await children.start("zmq-echo", [sys.executable, str(MAIN), "--zmq-echo", endpoint])
    await server.wait_for(lambda line: "listening" in line, NODE_WAIT)
    dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    # A request of the same shape and size as BridgeClient.query's, built once: transport cost only.
    request = TaskCommandRequest(slot=SLOT, command={"commandName": "GetModes"})
    frames = Session("00" * 32).serialize("task_command", request)

    async def echo() -> None:
        await dealer.send_multipart(frames)
        await dealer.recv_multipart()

    try:
        result = await timed(opts, {"worker": None, "echo": server.pid}, echo)
    finally:
        dealer.close(linger=0)
    await server.stop()
    return result


async def zmq_plain_echo_server(endpoint: str) -> None:
    """``--zmq-echo-plain``: the echo on the bridge's own transport (``ipc_bridge.wire.zmq_loop``: a plain
    ROUTER read from the loop, replies sent at once)."""
    router = plain_socket(zmq.asyncio.Context.instance(), zmq.ROUTER)
    router.linger = 0
    router.bind(endpoint)

    def echo(frames: list[bytes]) -> None:
        send_frames(router, frames)
        reader.poke()

    reader = Reader(router, echo)
    reader.start(asyncio.get_running_loop())
    print(orjson.dumps({"listening": endpoint}).decode(), flush=True)
    await asyncio.Event().wait()


async def rtt_zmq_plain_echo(children: Children, tmp: Path, opts: Any) -> dict[str, Any]:
    """The transport floor of the bridge path: worker and bridge both use these plain sockets."""
    endpoint = f"ipc://{tmp}/plain-echo.ipc"
    argv = [sys.executable, str(MAIN), "--zmq-echo-plain", endpoint]
    server = await children.start("zmq-echo-plain", argv)
    await server.wait_for(lambda line: "listening" in line, NODE_WAIT)
    loop = asyncio.get_running_loop()
    dealer = plain_socket(zmq.asyncio.Context.instance(), zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    replies: list[asyncio.Future[list[bytes]]] = []

    def on_reply(frames: list[bytes]) -> None:
        if replies and not replies[-1].done():
            replies[-1].set_result(frames)

    reader = Reader(dealer, on_reply)
    sender = Sender(reader)
    reader.start(loop)
    request = TaskCommandRequest(slot=SLOT, command={"commandName": "GetModes"})
    frames = Session("00" * 32).serialize("task_command", request)

    async def echo() -> None:
        replies.append(loop.create_future())
        await sender.send(frames)
        await replies[-1]
        replies.clear()

    try:
        result = await timed(opts, {"worker": None, "echo": server.pid}, echo)
    finally:
        reader.stop()
        dealer.close(linger=0)
    await server.stop()
    return result


async def rtt_bridge(
    children: Children, tmp: Path, sock: Path, opts: Any, attach: AttachBridge
) -> dict[str, Any]:
    bridge, client, _ = await attach(children, tmp / "bridge2", sock)

    async def query() -> None:
        await client.query(SLOT, "GetModes")

    try:
        modes = await client.query(SLOT, "GetModes")
        if not (isinstance(modes, list) and modes and "slug" in modes[0]):
            raise RuntimeError(f"GetModes through the bridge returned {modes!r}")
        result = await timed(opts, {"worker": None, "bridge": bridge.pid}, query)
    finally:
        await client.close(linger_ms=0)
    await asyncio.get_running_loop().run_in_executor(None, bridge.stop)
    return result


async def round_trips(children: Children, tmp: Path, opts: Any, attach: AttachBridge) -> dict[str, Any]:
    """``attach``: starts a bridge with the server attached as a slot (bridge_throughput.bridge_with_slot)."""
    sock = tmp / "rtt.sock"
    server = await start_roo_server(children, sock)
    node = await rtt_node(children, sock, opts)
    direct = await rtt_direct(sock, opts)
    echo = await rtt_zmq_echo(children, tmp, opts)
    plain_echo = await rtt_zmq_plain_echo(children, tmp, opts)
    bridged = await rtt_bridge(children, tmp, sock, opts, attach)
    server_invalid = await stop_roo_server(server)
    return {
        "node_raw": node["raw"],
        "node_validated": node["validated"],
        "python_direct": direct,
        "zmq_echo": echo,
        "zmq_plain_echo": plain_echo,
        "bridge": bridged,
        "invalid": node["invalid"] + server_invalid,
    }
