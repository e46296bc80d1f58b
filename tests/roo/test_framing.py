"""node-ipc framing: whole frames out, any chunking in, bounded memory."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc_bridge.roo.framing import DELIMITER, FrameDecoder, decode_frame, encode_frame
from ipc_bridge.roo.shapes import ProtocolError

json_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200)
ipc_messages = st.builds(
    lambda name, text: {
        "type": "TaskEvent",
        "origin": "server",
        "data": {"eventName": name, "payload": [text]},
    },
    st.sampled_from(["taskCreated", "message", "zooEvent"]),
    json_text,
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[last:point])
        last = point
    return chunks


def test_encode_is_node_ipc_exact() -> None:
    ack = {"type": "Ack", "origin": "server", "data": {"clientId": "9fa05b1bc06b", "pid": 9965, "ppid": 9960}}
    assert encode_frame(ack) == (
        b'{"type":"message","data":{"type":"Ack","origin":"server",'
        b'"data":{"clientId":"9fa05b1bc06b","pid":9965,"ppid":9960}}}\x0c'
    )


def test_non_ascii_goes_out_as_raw_utf8_and_form_feed_is_escaped() -> None:
    frame = encode_frame({"text": "é\f🎉"})
    assert frame.count(DELIMITER) == 1 and frame.endswith(DELIMITER)
    assert "é".encode() in frame and b"\\f" in frame


def test_falsy_data_becomes_empty_object_like_node_ipc() -> None:
    assert encode_frame(None) == b'{"type":"message","data":{}}\x0c'


@settings(max_examples=200, deadline=None)
@given(st.lists(ipc_messages, min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_yields_the_same_frames(messages: list[dict[str, object]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for chunk in _split(stream, cuts):
        frames.extend(decoder.feed(chunk))
    assert [decode_frame(f) for f in frames] == messages
    assert decoder.pending == 0


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=1000, max_value=70000))
def test_multi_mib_frames_in_small_chunks(mib: int, chunk_size: int) -> None:
    big = {"type": "TaskEvent", "data": {"eventName": "message", "payload": ["é" * (mib * 512 * 1024)]}}
    stream = encode_frame(big) + encode_frame({"n": 1})
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for i in range(0, len(stream), chunk_size):
        frames.extend(decoder.feed(stream[i : i + chunk_size]))
    assert len(frames) == 2
    assert orjson.loads(frames[0])["data"] == big
    assert decode_frame(frames[1]) == {"n": 1}


def test_every_byte_split_point() -> None:
    stream = encode_frame({"a": "ü\f→"}) + encode_frame({"b": 2})
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert [decode_frame(f) for f in frames] == [{"a": "ü\f→"}, {"b": 2}]


def test_oversized_frame_is_dropped_and_the_stream_goes_on() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    small = encode_frame({"ok": 1})
    huge = encode_frame({"x": "y" * 500})
    frames: list[bytes] = []
    stream = small + huge + small
    for i in range(0, len(stream), 7):
        frames.extend(decoder.feed(stream[i : i + 7]))
        assert decoder.pending <= 100  # memory stays bounded while the huge frame streams past
    assert [decode_frame(f) for f in frames] == [{"ok": 1}, {"ok": 1}]
    assert decoder.stats.oversized == 1
    assert decoder.stats.largest_dropped == len(huge) - 1


def test_oversized_frame_in_one_chunk() -> None:
    decoder = FrameDecoder(max_frame_size=50)
    frames = decoder.feed(encode_frame({"x": "y" * 100}) + encode_frame({"k": 1}))
    assert [decode_frame(f) for f in frames] == [{"k": 1}]
    assert decoder.stats.oversized == 1


def test_empty_frames_are_skipped() -> None:
    assert FrameDecoder().feed(b"\x0c\x0c") == []


@pytest.mark.parametrize(
    "frame",
    [b"{not json", b'{"data":{}}', b'{"type":7,"data":{}}', b"[1,2]", b'{"type":"other","data":{}}', b"NaN"],
)
def test_bad_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(frame)
