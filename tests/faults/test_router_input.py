"""Bad input on the bridge's ROUTER (issue #4): garbage, wrong frame counts, bad or missing signatures,
replays, oversized and unknown requests get an error reply or are dropped with a log line, are counted
in ``heartbeat_reply.rejected``, and the bridge stays up: after each, a valid request on the same
DEALER is answered, and it is the next reply (so a dropped message got none). Then a fuzzer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from ipc_bridge.client.types import InvalidCommand
from ipc_bridge.log_limits import LOG_BURST
from ipc_bridge.server.bad_input import REJECT_REASONS
from ipc_bridge.server.bridge import Bridge
from ipc_bridge.server.slots import SlotConfig
from ipc_bridge.wire.messages import REQUESTS, HeartbeatReply
from ipc_bridge.wire.session import DELIM, VERSION, Message, Session, new_key
from tests.faults.bad_input_harness import FakeHost, HostConn, frame, inproc_bridge

pytestmark = pytest.mark.timeout(60)

Frames = list[bytes]


@pytest.fixture
async def bridge(sockdir: Path) -> AsyncIterator[Bridge]:
    async with inproc_bridge(sockdir, max_msg_size=64 * 1024) as (b, _):
        yield b


@contextlib.asynccontextmanager
async def dealer_for(bridge: Bridge) -> AsyncIterator[zmq.asyncio.Socket]:
    assert bridge.ctx is not None and bridge.info is not None
    sock = bridge.ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(bridge.info.command_endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)


@pytest.fixture
async def dealer(bridge: Bridge) -> AsyncIterator[zmq.asyncio.Socket]:
    async with dealer_for(bridge) as sock:
        yield sock


@pytest.fixture
def session(bridge: Bridge) -> Session:
    return Session(bridge.key)


async def next_reply(dealer: zmq.asyncio.Socket, session: Session, timeout: float = 5) -> Message:
    frames = await asyncio.wait_for(dealer.recv_multipart(), timeout)
    return session.deserialize(frames)


async def heartbeat(dealer: zmq.asyncio.Socket, session: Session) -> HeartbeatReply:
    """A valid request; its reply must be the next message (nothing sent before got a reply)."""
    msg_id = session.new_msg_id()
    await dealer.send_multipart(session.serialize("heartbeat", {}, msg_id=msg_id))
    reply = await next_reply(dealer, session)
    assert (reply.msg_type, reply.parent_msg_id) == ("heartbeat_reply", msg_id)
    return HeartbeatReply.model_validate(reply.content)


def bridge_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("ipc_bridge") and r.levelno >= logging.WARNING
    ]


def signed(session: Session, header: bytes, parent: bytes, content: bytes) -> Frames:
    return [DELIM, session.sign([header, parent, content]), header, parent, content]


def header_bytes(session: Session, msg_type: str = "heartbeat", **changes: Any) -> bytes:
    header: dict[str, Any] = session.header(msg_type).to_dict()
    header.update(changes)
    return orjson.dumps({k: v for k, v in header.items() if v is not None})


def valid(session: Session) -> Frames:
    return session.serialize("heartbeat", {})


def _tampered(s: Session) -> Frames:
    frames = valid(s)
    frames[-1] = b'{"interval":5}'
    return frames


def _swapped(s: Session) -> Frames:
    frames = valid(s)
    frames[2], frames[3] = frames[3], frames[2]
    return frames


DROPPED: dict[str, tuple[Callable[[Session], Frames], str]] = {
    # Whole messages are bounded, not only frames (64 KiB here): each frame is under the bound.
    "frames under the size bound, over it in all": (
        lambda s: [*valid(s), *[b"x" * 40_000] * 3],
        "oversized",
    ),
    "more frames than a request has": (lambda s: [*valid(s), *[b""] * 100], "oversized"),
    "garbage": (lambda s: [b"garbage"], "malformed"),
    "one empty frame": (lambda s: [b""], "malformed"),
    "the delimiter alone": (lambda s: [DELIM], "malformed"),
    "three frames after the delimiter": (lambda s: valid(s)[:4], "malformed"),
    "no delimiter": (lambda s: valid(s)[1:], "malformed"),
    "signed bad JSON header": (lambda s: signed(s, b"{nope", b"{}", b"{}"), "malformed"),
    "signed header that is a list": (lambda s: signed(s, b"[]", b"{}", b"{}"), "malformed"),
    "signed header without msg_type": (
        lambda s: signed(s, header_bytes(s, msg_type=None), b"{}", b"{}"),  # type: ignore[arg-type]
        "malformed",
    ),
    "signed header with a number": (
        lambda s: signed(s, header_bytes(s, msg_id=7), b"{}", b"{}"),
        "malformed",
    ),
    "signed content that is a list": (lambda s: signed(s, header_bytes(s), b"{}", b"[1]"), "malformed"),
    "signed parent that is a string": (lambda s: signed(s, header_bytes(s), b'"p"', b"{}"), "malformed"),
    "signed content with NaN": (
        lambda s: signed(s, header_bytes(s), b"{}", b'{"interval":NaN}'),
        "malformed",
    ),
    "signed content not UTF-8": (lambda s: signed(s, header_bytes(s), b"{}", b'{"x":"\xff"}'), "malformed"),
    "unsigned": (lambda s: [DELIM, b"", *valid(s)[2:]], "bad_signature"),
    "wrong signature": (lambda s: [DELIM, b"0" * 64, *valid(s)[2:]], "bad_signature"),
    "uppercase signature": (lambda s: [DELIM, valid(s)[1].upper(), *valid(s)[2:]], "bad_signature"),
    "another key": (lambda s: Session(new_key()).serialize("heartbeat", {}), "bad_signature"),
    "tampered content": (_tampered, "bad_signature"),
    "swapped header and parent": (_swapped, "bad_signature"),
}


@pytest.mark.parametrize("case", list(DROPPED))
async def test_dropped_without_reply_counted_and_logged(
    case: str,
    dealer: zmq.asyncio.Socket,
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build, reason = DROPPED[case]
    before = (await heartbeat(dealer, session)).rejected
    assert before == dict.fromkeys(REJECT_REASONS, 0)
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    caplog.clear()
    await dealer.send_multipart(build(session))
    after = (await heartbeat(dealer, session)).rejected
    assert after == {**before, reason: 1}
    lines = bridge_warnings(caplog)
    assert len(lines) == 1 and f"({reason})" in lines[0]


async def test_a_replayed_message_is_dropped_but_a_retry_is_answered(
    dealer: zmq.asyncio.Socket, session: Session
) -> None:
    msg_id = session.new_msg_id()
    frames = session.serialize("slots", {}, msg_id=msg_id)
    await dealer.send_multipart(frames)
    assert (await next_reply(dealer, session)).parent_msg_id == msg_id
    await dealer.send_multipart(frames)  # byte for byte: a replay
    assert (await heartbeat(dealer, session)).rejected["replayed"] == 1
    await dealer.send_multipart(session.serialize("slots", {}, msg_id=msg_id))  # a Lazy Pirate retry
    assert (await next_reply(dealer, session)).parent_msg_id == msg_id


ERRORS: dict[str, tuple[Callable[[Session], Frames], str]] = {
    "unknown msg_type": (lambda s: s.serialize("frobnicate", {}), "unknown_msg_type"),
    "empty msg_type": (lambda s: signed(s, header_bytes(s, msg_type=""), b"{}", b"{}"), "unknown_msg_type"),
    "another major version": (
        lambda s: signed(s, header_bytes(s, version="2.0"), b"{}", b"{}"),
        "unsupported_version",
    ),
    "a version that is no number": (
        lambda s: signed(s, header_bytes(s, version="banana"), b"{}", b"{}"),
        "unsupported_version",
    ),
    "wrong field type": (lambda s: s.serialize("snapshot", {"slot": 5}), "invalid_request"),
    "missing field": (lambda s: s.serialize("detach", {}), "invalid_request"),
    "heartbeat interval as text": (
        lambda s: s.serialize("heartbeat", {"interval": "soon"}),
        "invalid_request",
    ),
    "slot name with a dot": (lambda s: s.serialize("detach", {"slot": "a.b"}), "invalid_request"),
    "negative snapshot limit": (
        lambda s: s.serialize("snapshot", {"slot": "a", "limit": -1}),
        "invalid_request",
    ),
    "command that is no object": (
        lambda s: s.serialize("task_command", {"slot": "a", "command": "CancelTask"}),
        "invalid_request",
    ),
    "attach to a path with a NUL byte": (
        lambda s: s.serialize("attach", {"slot": "a", "socket_path": "/tmp/x\x00y", "connect_timeout": 1}),
        "invalid_request",
    ),
    "attach to an empty path": (
        lambda s: s.serialize("attach", {"slot": "a", "socket_path": "", "connect_timeout": 1}),
        "invalid_request",
    ),
    "attach with a zero timeout": (
        lambda s: s.serialize("attach", {"slot": "a", "socket_path": "/x", "connect_timeout": 0}),
        "invalid_request",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_bad_requests_get_an_error_reply_counted_and_logged(
    case: str,
    bridge: Bridge,
    dealer: zmq.asyncio.Socket,
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build, code = ERRORS[case]
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    frames = build(session)
    await dealer.send_multipart(frames)
    reply = await next_reply(dealer, session)
    assert reply.parent_msg_id == orjson.loads(frames[2])["msg_id"]
    assert (reply.content["status"], reply.content["error"]) == ("error", code)
    assert (await heartbeat(dealer, session)).rejected[code] == 1
    lines = bridge_warnings(caplog)
    assert len(lines) == 1 and code in lines[0]
    assert bridge.slots == {}  # no half-made slot left behind


async def test_an_invalid_task_command_is_counted(sockdir: Path) -> None:
    async with (
        FakeHost(sockdir / "h.sock") as host,
        inproc_bridge(sockdir) as (_, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        for bad in ({"commandName": "Nope"}, {"commandName": "StartNewTask", "data": {"text": 5}}):
            with pytest.raises(InvalidCommand):
                await client.task_command("w1", bad)
        hb = await client.heartbeat()
        assert hb.rejected["invalid_command"] == 2
        assert host.connections[0].commands == []  # never forwarded


async def test_tolerated_variations_are_answered(dealer: zmq.asyncio.Socket, session: Session) -> None:
    # Extra frames after the content (buffers): ignored by every request.
    await dealer.send_multipart([*session.serialize("heartbeat", {}), b"extra", b""])
    assert (await next_reply(dealer, session)).content["status"] == "ok"
    # Extra routing frames before the delimiter: the reply is routed back through them.
    msg_id = session.new_msg_id()
    await dealer.send_multipart([b"hop", *session.serialize("heartbeat", {}, msg_id=msg_id)])
    frames = await asyncio.wait_for(dealer.recv_multipart(), 5)
    assert frames[0] == b"hop" and session.deserialize(frames).parent_msg_id == msg_id
    # Unknown header and content fields, a newer minor version.
    header = header_bytes(session, version="1.99", extra="x")
    await dealer.send_multipart(signed(session, header, b"{}", b'{"interval":1,"new":[1,2]}'))
    assert (await next_reply(dealer, session)).content["status"] == "ok"
    assert sum((await heartbeat(dealer, session)).rejected.values()) == 0


async def test_an_oversized_message_drops_the_connection_and_the_dealer_comes_back(
    bridge: Bridge, session: Session
) -> None:
    """MAXMSGSIZE (64 KiB here): libzmq closes the connection before the bridge sees a byte of it;
    the DEALER reconnects by itself and its next request is answered."""
    assert bridge.ctx is not None and bridge.info is not None
    dealer = bridge.ctx.socket(zmq.DEALER)
    dealer.linger = 0
    monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        dealer.connect(bridge.info.command_endpoint)
        assert (await recv_event(monitor)) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        await dealer.send_multipart(session.serialize("heartbeat", {"pad": "x" * (60 * 1024)}))
        assert (await next_reply(dealer, session)).content["status"] == "ok"  # under the limit: fine
        await dealer.send_multipart(session.serialize("heartbeat", {"pad": "x" * (100 * 1024)}))
        assert (await recv_event(monitor)) == zmq.EVENT_DISCONNECTED
        assert (await recv_event(monitor)) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        hb = await heartbeat(dealer, session)
        assert sum(hb.rejected.values()) == 0  # libzmq dropped it: the bridge never saw it
    finally:
        dealer.disable_monitor()
        monitor.close(linger=0)
        dealer.close(linger=0)


async def recv_event(monitor: zmq.asyncio.Socket) -> int:
    event = await asyncio.wait_for(recv_monitor_message(monitor), 10)  # type: ignore[arg-type]
    return int(event["event"])


async def test_a_flood_of_garbage_is_counted_in_full_and_logged_in_sample(
    bridge: Bridge, dealer: zmq.asyncio.Socket, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    other = Session(new_key())
    for i in range(3000):
        await dealer.send_multipart([b"junk %d" % i] if i % 2 else other.serialize("heartbeat", {}))
    hb = await heartbeat(dealer, session)
    assert (hb.rejected["malformed"], hb.rejected["bad_signature"]) == (1500, 1500)
    lines = bridge_warnings(caplog)
    assert 10 <= len(lines) <= 60


# ---------------------------------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = ["slot", "socket_path", "command", "since_seq", "limit", "interval", "commandName", "data"]
contents = st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=5)
# Not attach (it would wait for a host) nor shutdown (it would stop the bridge under test).
MSG_TYPES = sorted(set(REQUESTS) - {"attach", "shutdown"})
msg_types = st.sampled_from(MSG_TYPES) | st.text(max_size=12)
versions = st.sampled_from([VERSION, "1.0", "1.7", "2.0", "", "1"]) | st.text(max_size=5)


@st.composite
def signed_messages(draw: st.DrawFn, session: Session) -> Frames:
    header = session.header(draw(msg_types)).to_dict()
    header["version"] = draw(versions)
    if draw(st.booleans()):
        header[draw(st.sampled_from(list(header)))] = draw(json_values)  # one field of any JSON type
    parts = [orjson.dumps(header), orjson.dumps(draw(contents) if draw(st.booleans()) else {}), b""]
    parts[2] = orjson.dumps(draw(contents))
    return [DELIM, session.sign(parts), *parts, *draw(st.lists(st.binary(max_size=16), max_size=2))]


@st.composite
def mutated_messages(draw: st.DrawFn, session: Session) -> Frames:
    frames = [bytes(f) for f in session.serialize(draw(msg_types), draw(contents))]
    op = draw(st.sampled_from(["flip", "drop", "duplicate", "truncate", "insert"]))
    i = draw(st.integers(0, len(frames) - 1))
    if op == "flip" and frames[i]:
        j = draw(st.integers(0, len(frames[i]) - 1))
        frames[i] = frames[i][:j] + bytes([frames[i][j] ^ draw(st.integers(1, 255))]) + frames[i][j + 1 :]
    elif op == "drop":
        del frames[i]
    elif op == "duplicate":
        frames.insert(i, frames[i])
    elif op == "truncate":
        frames[i] = frames[i][: draw(st.integers(0, max(0, len(frames[i]) - 1)))]
    else:
        frames.insert(i, draw(st.binary(max_size=32)))
    return frames or [b""]


def raw_frames() -> st.SearchStrategy[Frames]:
    frame = st.binary(max_size=64) | st.just(DELIM)
    return st.lists(frame, min_size=1, max_size=8)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    kind=st.sampled_from(["raw", "signed", "mutated"]),
)
async def test_fuzzed_input_never_breaks_the_router(
    fuzz_bridge: tuple[Bridge, zmq.asyncio.Socket, Session],
    data: st.DataObject,
    kind: str,
) -> None:
    """Whatever arrives: each message gets at most one reply, never an ``internal`` error, the bridge
    logs nothing at ERROR, and the next valid request is answered."""
    _, dealer, session = fuzz_bridge
    if kind == "raw":
        frames = data.draw(raw_frames())
    elif kind == "signed":
        frames = data.draw(signed_messages(session))
    else:
        frames = data.draw(mutated_messages(session))
    await dealer.send_multipart(frames)
    msg_id = session.new_msg_id()
    await dealer.send_multipart(session.serialize("heartbeat", {}, msg_id=msg_id))
    while True:
        reply = await next_reply(dealer, session)
        if reply.parent_msg_id == msg_id:
            break
        # The only other reply possible is the one to the fuzzed message itself.
        assert reply.parent_msg_id == orjson.loads(frames[frames.index(DELIM) + 2])["msg_id"]
        assert reply.content.get("error") != "internal", reply.content
    assert reply.content["status"] == "ok"


@pytest.fixture
async def fuzz_bridge(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[Bridge, zmq.asyncio.Socket, Session]]:
    caplog.set_level(logging.WARNING, logger="ipc_bridge")
    async with inproc_bridge(sockdir) as (b, _), dealer_for(b) as sock:
        yield b, sock, Session(b.key)
        assert (await heartbeat(sock, Session(b.key))).status == "ok"
    errors = [r for r in caplog.records if r.name.startswith("ipc_bridge") and r.levelno >= logging.ERROR]
    assert errors == []


async def test_replies_a_client_does_not_read_are_logged_in_sample(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that sends requests and never reads the replies fills its queue on the ROUTER; every
    reply after that is dropped. 20,000 of them wrote 20,010 log lines: now a sample, like bad input."""
    caplog.set_level(logging.INFO, logger="ipc_bridge")
    async with inproc_bridge(sockdir, router_hwm=20) as (bridge, _), dealer_for(bridge) as deaf:
        deaf.rcvhwm = 20
        session = Session(bridge.key)
        for _ in range(3000):
            await deaf.send_multipart(session.serialize("heartbeat", {}))
        deadline = asyncio.get_running_loop().time() + 30
        while bridge._log.suppressed < 1000:  # the bridge's own count of lines it held back
            assert asyncio.get_running_loop().time() < deadline, bridge._log.suppressed
            await asyncio.sleep(0.05)
        lines = [
            r for r in caplog.records if r.name.startswith("ipc_bridge") and "reply to" in r.getMessage()
        ]
        assert 1 <= len(lines) <= LOG_BURST
        async with dealer_for(bridge) as other:  # and the bridge still answers
            assert (await heartbeat(other, Session(bridge.key))).status == "ok"


async def test_query_replies_are_not_kept_for_retries(sockdir: Path) -> None:
    """Get* queries are reads: a retry is answered afresh. Kept like StartNewTask's, their replies (what
    the host answered, as large as it likes) would pile up, 10,000 of them."""
    big = ["m" * 100_000]

    async def answer(conn: HostConn, command: dict[str, Any]) -> None:
        data = command.get("data")
        if isinstance(data, dict) and data.get("commandName") == "GetModels":
            await conn.send(frame("modelsResponse", big))

    async with (
        FakeHost(sockdir / "h.sock", on_command=answer) as host,
        inproc_bridge(sockdir) as (bridge, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        for _ in range(20):
            assert await client.query("w1", "GetModels") == big
        kept = list(bridge._replies._done.values())
        assert len(kept) == 1  # the attach, not one of the queries


async def test_commands_beyond_the_inflight_bound_are_answered_busy(sockdir: Path) -> None:
    """Each task_command waits on its host (up to its timeout): a worker sending them faster than the
    host answers would grow the bridge's tasks without bound. Beyond ``max_inflight`` they are answered
    ``busy`` at once, and everything else is still answered."""
    silent = FakeHost(sockdir / "h.sock")  # Acks, then never answers a command
    async with (
        silent as host,
        inproc_bridge(sockdir, SlotConfig(query_timeout=30), max_inflight=50) as (bridge, client),
    ):
        await client.attach("w1", str(host.path), connect_timeout=5)
        async with dealer_for(bridge) as dealer:
            session = Session(bridge.key)
            query = {"slot": "w1", "command": {"commandName": "GetModes"}}
            for _ in range(300):
                await dealer.send_multipart(session.serialize("task_command", query))
            busy = 0
            for _ in range(250):
                reply = await next_reply(dealer, session)
                assert reply.content["error"] == "busy", reply.content
                busy += 1
            assert busy == 250 and len(bridge._handlers) <= 50
            assert (await heartbeat(dealer, session)).status == "ok"
