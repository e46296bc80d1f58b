"""Plain ZeroMQ sockets driven from the asyncio loop (ipc_bridge.wire.zmq_loop): no message is missed, a
flood leaves the loop turning, and a send the socket refuses goes out once it can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from ipc_bridge.wire.zmq_loop import DRAIN_LIMIT, Reader, Sender, plain_socket, send_frames

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.term()


async def test_reader_gets_every_message_and_lets_the_loop_turn(
    ctx: zmq.asyncio.Context, sockdir: Path
) -> None:
    endpoint = f"ipc://{sockdir}/pair.ipc"
    pull, push = plain_socket(ctx, zmq.PULL), plain_socket(ctx, zmq.PUSH)
    pull.bind(endpoint)
    push.connect(endpoint)
    count = 5 * DRAIN_LIMIT
    for i in range(count):  # all queued before the reader starts: one flood
        send_frames(push, [b"n", str(i).encode()])
    received: list[int] = []
    turns_seen: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def on_message(frames: list[bytes]) -> None:
        received.append(int(frames[1]))
        if len(received) == count:
            done.set_result(None)

    async def other_task() -> None:
        while not done.done():
            turns_seen.append(len(received))
            await asyncio.sleep(0)

    reader = Reader(pull, on_message)
    try:
        assert pull.poll(5000)  # the flood has reached the PULL: blocks briefly, before the loop matters
        other = asyncio.ensure_future(other_task())
        reader.start(asyncio.get_running_loop())
        await asyncio.wait_for(done, 10)
        await other
    finally:
        reader.stop()
        pull.close(linger=0)
        push.close(linger=0)
    assert received == list(range(count))
    # The other task ran between batches, not only once the flood was over.
    assert any(0 < n < count for n in turns_seen)


async def test_sender_holds_a_refused_message_until_the_peer_is_there(
    ctx: zmq.asyncio.Context, sockdir: Path
) -> None:
    endpoint = f"ipc://{sockdir}/cmd.ipc"
    dealer = plain_socket(ctx, zmq.DEALER)
    dealer.setsockopt(zmq.IMMEDIATE, 1)  # no connection: sends are refused (zmq.Again)
    dealer.connect(endpoint)
    replies: list[list[bytes]] = []
    two_replies = asyncio.get_running_loop().create_future()

    def on_reply(frames: list[bytes]) -> None:
        replies.append(frames)
        if len(replies) == 2:
            two_replies.set_result(None)

    reader = Reader(dealer, on_reply)
    sender = Sender(reader)
    reader.start(asyncio.get_running_loop())
    router = plain_socket(ctx, zmq.ROUTER)
    router_reader = Reader(router, lambda frames: send_frames(router, [frames[0], b"pong", frames[1]]))
    try:
        assert not sender.try_send([b"skipped"])  # refused now: try_send does not wait
        first = asyncio.ensure_future(sender.send([b"one"]))
        second = asyncio.ensure_future(sender.send([b"two"]))
        withdrawn = asyncio.ensure_future(sender.send([b"withdrawn"]))
        await asyncio.sleep(0)
        assert not first.done()
        withdrawn.cancel()
        router.bind(endpoint)
        router_reader.start(asyncio.get_running_loop())
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        await asyncio.wait_for(two_replies, 10)
        assert replies == [[b"pong", b"one"], [b"pong", b"two"]]  # in order; the withdrawn one never
        assert sender.try_send([b"three"])
    finally:
        router_reader.stop()
        reader.stop()
        router.close(linger=0)
        dealer.close(linger=0)
