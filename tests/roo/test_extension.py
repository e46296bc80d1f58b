"""The client side of one extension socket: retry until it listens, Ack, bad frames, disconnect.

The peers here are raw asyncio socket servers writing bytes, because these tests are about what a
misbehaving or slow peer does; tests/interop drives the same client against the real node-ipc 12.0.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ipc_bridge.roo.extension import ConnectTimeout, Disconnected, connect
from ipc_bridge.roo.framing import DecoderStats, FrameDecoder, decode_frame, encode_frame
from ipc_bridge.roo.protocol import AckMessage, CancelTask, TaskEventMessage

ACK = {"type": "Ack", "origin": "server", "data": {"clientId": "0123456789ab", "pid": 1, "ppid": 0}}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(path: Path, handler: Handler) -> AsyncIterator[asyncio.AbstractServer]:
    server = await asyncio.start_unix_server(handler, str(path))
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def event(name: str, *payload: object) -> dict[str, object]:
    return {"type": "TaskEvent", "origin": "server", "data": {"eventName": name, "payload": list(payload)}}


async def test_retries_until_the_extension_listens(sockdir: Path) -> None:
    path = sockdir / "late.sock"
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(ACK))
        await writer.drain()
        got.put_nowait(await reader.readuntil(b"\x0c"))
        writer.close()

    connecting = asyncio.ensure_future(connect(str(path), timeout=10, retry_interval=0.05))
    await asyncio.sleep(0.2)  # the point of the test: nobody listens yet for a while
    assert not connecting.done()
    async with serve(path, handler):
        conn = await connecting
        assert conn.client_id == "0123456789ab"
        await conn.send_command(CancelTask())
        frame = await asyncio.wait_for(got.get(), 5)
        assert decode_frame(frame[:-1]) == {
            "type": "TaskCommand",
            "origin": "client",
            "clientId": "0123456789ab",
            "data": {"commandName": "CancelTask"},
        }
        await conn.close()


async def test_gives_up_at_the_deadline(sockdir: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectTimeout):
        await connect(str(sockdir / "never.sock"), timeout=0.3, retry_interval=0.05)
    assert time.monotonic() - start < 2


async def test_peer_that_never_acks_times_out(sockdir: Path) -> None:
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    async with serve(sockdir / "mute.sock", silent):
        with pytest.raises(ConnectTimeout, match="no Ack"):
            await connect(str(sockdir / "mute.sock"), timeout=0.3)
        hold.set()


async def test_bad_frames_are_counted_and_skipped(sockdir: Path) -> None:
    async def noisy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(ACK))
        writer.write(b"{bad json\x0c")
        writer.write(b'{"data":{"no":"type"}}\x0c')
        writer.write(encode_frame({"type": "TaskEvent", "origin": "server", "data": {"payload": []}}))
        writer.write(
            b'{"type":"message","data":{"type":"TaskEvent","data":{"eventName":"x","payload":[NaN]}}}\x0c'
        )
        # a good event split mid-frame, byte by byte
        good = encode_frame(event("taskCreated", "t1"))
        for i in range(len(good)):
            writer.write(good[i : i + 1])
            await writer.drain()
        writer.close()

    async with serve(sockdir / "noisy.sock", noisy):
        conn = await connect(str(sockdir / "noisy.sock"), timeout=5)
        events = [e async for e in conn.events()]
        assert [(e.eventName, e.task_id) for e in events] == [("taskCreated", "t1")]
        assert conn.stats.bad_frames == 4
        assert not conn.connected
        await conn.close()


async def test_disconnect_is_detected_and_reconnect_gets_a_new_ack(sockdir: Path) -> None:
    acks = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ack = {**ACK, "data": {**ACK["data"], "clientId": next(acks)}}  # type: ignore[dict-item]
        writer.write(encode_frame(ack) + encode_frame(event("taskIdle", "t")))
        await writer.drain()
        writer.close()

    async with serve(sockdir / "flaky.sock", once):
        conn = await connect(str(sockdir / "flaky.sock"), timeout=5)
        msg = await conn.recv()
        assert isinstance(msg, TaskEventMessage)
        with pytest.raises(Disconnected):
            await conn.recv()
        with pytest.raises(Disconnected):
            await conn.send_command(CancelTask())
        await conn.open(timeout=5)
        assert conn.client_id == "bbbbbbbbbbbb"
        await conn.close()


async def test_oversized_frame_does_not_end_the_connection(sockdir: Path) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(ACK))
        writer.write(encode_frame(event("message", "x" * 5000)))
        writer.write(encode_frame(event("taskIdle", "t")))
        await writer.drain()
        writer.close()

    async with serve(sockdir / "big.sock", big):
        conn = await connect(str(sockdir / "big.sock"), timeout=5, max_frame_size=1000)
        names = [e.eventName async for e in conn.events()]
        assert names == ["taskIdle"]
        await conn.close()


def test_decoder_stats_default() -> None:
    assert FrameDecoder().stats == DecoderStats()
    assert AckMessage.model_validate(ACK).data.clientId == "0123456789ab"
