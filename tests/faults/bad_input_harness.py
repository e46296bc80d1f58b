"""An in-process bridge with a client on the bridge's own zmq context, and a fake extension host that the
test scripts byte by byte: what the bad-input tests need to see the bridge's counters and buffers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipc_bridge.client.bridge_client import BridgeClient, Event
from ipc_bridge.roo.framing import FrameDecoder, decode_frame, encode_frame
from ipc_bridge.server.bridge import Bridge
from ipc_bridge.server.config import BridgeConfig
from ipc_bridge.server.slots import SlotConfig

CLIENT_ID = "0123456789ab"
ACK: dict[str, Any] = {
    "type": "Ack",
    "origin": "server",
    "data": {"clientId": CLIENT_ID, "pid": 4242, "ppid": 1},
}


def event(name: str, *payload: Any) -> dict[str, Any]:
    return {"type": "TaskEvent", "origin": "server", "data": {"eventName": name, "payload": list(payload)}}


def frame(name: str, *payload: Any) -> bytes:
    return encode_frame(event(name, *payload))


def frame_of_size(size: int, name: str = "message") -> bytes:
    """A valid event frame whose JSON (without the delimiter) is exactly ``size`` bytes."""
    base = len(encode_frame(event(name, "t", ""))) - 1
    assert size >= base
    return encode_frame(event(name, "t", "x" * (size - base)))


@dataclass
class HostConn:
    """One connection the bridge made to the fake host."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    commands: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Script = Callable[[HostConn, int], Awaitable[None]]
"""``(connection, index)``: what the host does after accepting its ``index``-th connection (from 0)."""


async def send_ack(conn: HostConn, index: int) -> None:
    await conn.send(encode_frame(ACK))


class FakeHost:
    """A node-ipc server on ``path`` run by the test: each connection runs ``script`` (default: Ack),
    then the host reads the bridge's commands until it disconnects. ``on_command`` may answer them."""

    def __init__(
        self,
        path: Path,
        script: Script = send_ack,
        on_command: Callable[[HostConn, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.path = path
        self.script = script
        self.on_command = on_command
        self.connections: list[HostConn] = []
        self.accepted: asyncio.Queue[HostConn] = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeHost:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = HostConn(reader, writer)
        index = len(self.connections)
        self.connections.append(conn)
        self.accepted.put_nowait(conn)
        try:
            reading = asyncio.ensure_future(self._read_commands(conn))
            try:
                await self.script(conn, index)
                await reading
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        except (ConnectionError, OSError):
            pass
        finally:
            conn.closed.set()
            writer.close()
            self._tasks.discard(task)

    async def _read_commands(self, conn: HostConn) -> None:
        decoder = FrameDecoder()
        while chunk := await conn.reader.read(65536):
            for raw in decoder.feed(chunk):
                command = decode_frame(raw)
                conn.commands.append(command)
                if self.on_command is not None:
                    await self.on_command(conn, command)
        conn.closed.set()


@contextlib.asynccontextmanager
async def inproc_bridge(
    sockdir: Path, slot: SlotConfig | None = None, **config: Any
) -> AsyncIterator[tuple[Bridge, BridgeClient]]:
    """A started :class:`Bridge` in this process and a client on its context (one context per process)."""
    runtime = sockdir / "b"
    cfg = BridgeConfig(
        runtime_dir=runtime,
        connection_file=runtime / "bridge.json",
        slot=slot or SlotConfig(),
        linger_ms=0,
        drain_ms=0,
        **config,
    )
    bridge = Bridge(cfg)
    info = await bridge.start()
    client: BridgeClient | None = None
    try:
        assert bridge.ctx is not None
        client = BridgeClient(info, ctx=bridge.ctx, timeout=2.5, retries=2)
        yield bridge, client
    finally:
        if client is not None:
            await client.close(linger_ms=0)
        await bridge.shutdown()


def named(name: str, task_id: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e.event_name == name and (task_id is None or e.task_id == task_id)


def assert_contiguous(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
