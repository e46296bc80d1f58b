"""Valid JSON in a host's event passes through the bridge unchanged (issue #10, section 4), even where
orjson alone refuses or changes it: integers beyond 64 bits (read as rounded floats), numbers beyond a
double (1e400), a lone surrogate escape (JavaScript writes one when a streamed text is cut inside an
emoji), nesting deeper than orjson writes (254) or reads (1024). Such an event was dropped, or, nested
too deep to write back, cost the host its connection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ipc_bridge.json_compat import RawNumber, dumps, loads
from tests.faults.bad_input_harness import ACK, FakeHost, HostConn, assert_contiguous, inproc_bridge, named
from tests.faults.bad_input_harness import encode_frame as _encode
from tests.streams import Collector

pytestmark = pytest.mark.timeout(60)


def deep(levels: int) -> str:
    return "[" * levels + '"bottom"' + "]" * levels


# (name, the payload's JSON text as the host writes it)
ODD_PAYLOADS = [
    ("big-int", '[{"n":18446744073709551616,"m":-9223372036854775809,"k":123456789012345678901234567890}]'),
    ("huge-int", "[" + "9" * 5000 + "]"),
    ("big-float", '[{"x":1e400,"y":-1E+400,"z":0.5}]'),
    ("surrogate", '[{"text":"cut in an emoji \\ud83d"}]'),
    ("deep-300", "[" + deep(300) + "]"),
    ("deep-3000", "[" + deep(3000) + "]"),
]


def raw_frame(name: str, payload: str) -> bytes:
    event = (
        '{"type":"TaskEvent","origin":"server","data":{"eventName":"' + name + '","payload":' + payload + "}}"
    )
    return b'{"type":"message","data":' + event.encode() + b"}\x0c"


async def odd_host(conn: HostConn, index: int) -> None:
    await conn.send(_encode(ACK))
    for name, payload in ODD_PAYLOADS:
        await conn.send(raw_frame(name, payload))
    await conn.send(raw_frame("tooDeep", deep(20_000)))  # deeper than any host writes: refused
    await conn.send(raw_frame("taskIdle", '["after"]'))


async def test_valid_json_that_orjson_balks_at_reaches_subscribers_unchanged(sockdir: Path) -> None:
    async with FakeHost(sockdir / "h.sock", odd_host) as host, inproc_bridge(sockdir) as (bridge, client):
        await client.attach("w1", str(host.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(named("taskIdle"), timeout=20)
        finally:
            await stream.close()
        info = next(s for s in await client.slots() if s.slot == "w1")
        # The same connection; only the frame nested deeper than MAX_DEPTH was dropped.
        assert (info.state, info.bad_frames, info.bad_messages) == ("up", 1, 0)
        assert "tooDeep" not in {e.event_name for e in stream.events}
        assert_contiguous(stream.events)
        received = {e.event_name: e for e in stream.events if e.msg_type == "task_event"}
        assert set(received) >= {name for name, _ in ODD_PAYLOADS}, "events were dropped"
        # What the bridge publishes (and buffers) is the host's text, every number exact.
        slot = bridge.slots["w1"]
        published, _, _ = slot.buffer.since(0, slot.seq, 100)
        contents = [ev.frames[-1].decode() for ev in published]
        for name, payload in ODD_PAYLOADS:
            assert any(f'"eventName":"{name}","payload":{payload}' in c for c in contents), name
        # And what a subscriber gets are the values, as exact as Python holds them.
        payload = {name: ev.raw["event"]["payload"] for name, ev in received.items()}
        assert payload["big-int"] == [{"n": 2**64, "m": -(2**63) - 1, "k": 123456789012345678901234567890}]
        assert payload["big-float"] == [{"x": float("inf"), "y": float("-inf"), "z": 0.5}]
        assert payload["surrogate"][0]["text"].endswith("\ud83d")
        assert dumps(payload["deep-3000"]) == ("[" + deep(3000) + "]").encode()
        assert payload["huge-int"] == [float("inf")]  # what JSON.parse makes of it too


def test_the_bridge_keeps_numbers_it_cannot_hold_as_their_text() -> None:
    frame = b'{"n":18446744073709551616,"x":1e400,"y":[1.5,-1E+400]}'
    value = loads(frame, raw=True)
    assert value["n"] == RawNumber("18446744073709551616") and value["x"] == RawNumber("1e400")
    assert dumps(value) == frame
    assert loads(frame) == {"n": 2**64, "x": float("inf"), "y": [1.5, float("-inf")]}


@pytest.mark.parametrize(
    "text",
    [b"NaN", b"[Infinity]", b"[1,]", b'{"a"}', b"[1] 2", b"\xff", b"[" * 20_000 + b"]" * 20_000, b"[" * 3000],
)
def test_what_is_not_json_stays_refused(text: bytes) -> None:
    with pytest.raises(ValueError, match=re.compile(".+")):
        loads(text, raw=True)


def test_deep_values_are_read_and_written_without_recursion() -> None:
    text = (b'{"a":' * 5000) + b"1" + (b"}" * 5000)
    value: Any = loads(text, raw=True)
    assert dumps(value) == text


# (the frame as a host writes it, the event's bytes the bridge must publish, routed to task)
LAYOUTS = [
    # Roo's own layout: the event's bytes go out as written (number forms, escapes, spaces kept).
    (
        b'{"type":"message","data":{"type":"TaskEvent","origin":"server","data":'
        b'{"eventName":"taskStarted", "payload":["t1",1E2,"\\u0041"]}}}',
        b'{"eventName":"taskStarted", "payload":["t1",1E2,"\\u0041"]}',
    ),
    # Another layout (a key after the event): decoded and encoded again, as compact JSON.
    (
        b'{"type":"message","data":{"type":"TaskEvent","origin":"server","data":'
        b'{"eventName":"taskPaused","payload":["t1",1E2]},"relayClientId":"x"}}',
        b'{"eventName":"taskPaused","payload":["t1",100.0]}',
    ),
    # A duplicate "data" key: the last one counts, for the route and for what is published alike.
    (
        b'{"type":"message","data":{"type":"TaskEvent","origin":"server","data":'
        b'{"eventName":"taskAborted","payload":["t0"]},"data":{"eventName":"taskUnpaused","payload":["t1"]}}}',
        b'{"eventName":"taskUnpaused","payload":["t1"]}',
    ),
]


async def test_an_event_goes_out_as_the_bytes_the_host_wrote(sockdir: Path) -> None:
    """The bridge forwards an event's bytes instead of encoding its parsed value again; when the frame
    is not in Roo's layout, what it publishes is the event it routed, encoded again."""

    async def host(conn: HostConn, index: int) -> None:
        await conn.send(_encode(ACK))
        for data, _ in LAYOUTS:
            await conn.send(data + b"\x0c")
        await conn.send(raw_frame("taskIdle", '["t1"]'))

    async with FakeHost(sockdir / "h.sock", host) as fake, inproc_bridge(sockdir) as (bridge, client):
        await client.attach("w1", str(fake.path), connect_timeout=5)
        stream = Collector(client, "w1")
        try:
            await stream.wait(named("taskIdle"), timeout=20)
        finally:
            await stream.close()
        slot = bridge.slots["w1"]
        published, _, _ = slot.buffer.since(0, slot.seq, 100)
        events = [ev for ev in published if b'"event":' in ev.frames[-1]][: len(LAYOUTS)]
        for ev, (_, expected) in zip(events, LAYOUTS, strict=True):
            topic, content = ev.frames[0], ev.frames[-1]
            assert content.endswith(b',"event":' + expected + b"}"), content
            assert topic == b"slot.w1.task.t1"
        received = [e for e in stream.events if e.msg_type == "task_event"]
        assert received[0].raw["event"]["payload"] == ["t1", 100.0, "A"]
        assert [e.event_name for e in received[:3]] == ["taskStarted", "taskPaused", "taskUnpaused"]
