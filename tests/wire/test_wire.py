"""The bridge's multipart wire format: round trips, and rejection of everything unverified."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc_bridge.wire.messages import (
    EVENTS,
    REPLIES,
    REQUESTS,
    AttachRequest,
    HugzContent,
    SnapshotRequest,
    TaskCommandRequest,
    TaskEventContent,
    task_event_content,
)
from ipc_bridge.wire.session import (
    DELIM,
    VERSION,
    Header,
    ReplayError,
    Session,
    SignatureError,
    WireError,
    iso_utc,
    slot_topic,
    split_snapshot_buffers,
    task_topic,
)

KEY = "k" * 64


def test_round_trip_with_routing_ids_and_parent() -> None:
    bridge, worker = Session(KEY), Session(KEY)
    req = worker.header("attach")
    content = AttachRequest(slot="w1", socket_path="/tmp/x.sock", connect_timeout=3)
    frames = bridge.serialize("attach_reply", content, req, idents=[b"peer"], buffers=[b"raw"])
    assert frames[:2] == [b"peer", DELIM]

    msg = worker.deserialize(frames)
    assert msg.idents == [b"peer"]
    assert msg.buffers == [b"raw"]
    assert msg.msg_type == "attach_reply"
    assert msg.header.session == bridge.session
    assert msg.header.version == VERSION
    assert msg.parent == req.to_dict()
    assert msg.parent_msg_id == req.msg_id
    assert AttachRequest.model_validate(msg.content) == content


def test_msg_ids_are_session_pid_counter_and_unique() -> None:
    s = Session(KEY)
    ids = [s.new_msg_id() for _ in range(3)]
    assert len(set(ids)) == 3
    session, pid, counter = ids[2].split("_")
    assert session == s.session and int(pid) == os.getpid() and int(counter) == 2
    assert len(s.session) == 32 and Session(KEY).session != s.session


def test_signature_is_hmac_sha256_of_header_parent_content() -> None:
    s = Session(KEY)
    frames = s.serialize("heartbeat", {})
    sig, h, p, c = frames[1:5]
    assert sig == hmac.new(KEY.encode(), h + p + c, hashlib.sha256).hexdigest().encode()


@pytest.mark.parametrize("part", [2, 3, 4])
def test_any_tampered_part_is_rejected_before_parsing(part: int) -> None:
    s = Session(KEY)
    frames = s.serialize("heartbeat", {"a": 1})
    frames[part] = frames[part].replace(b"}", b" }", 1)
    with pytest.raises(SignatureError):
        Session(KEY).deserialize(frames)


def test_wrong_key_and_missing_signature_are_rejected() -> None:
    frames = Session("other-key").serialize("heartbeat", {})
    with pytest.raises(SignatureError):
        Session(KEY).deserialize(frames)
    frames = Session(KEY).serialize("heartbeat", {})
    frames[1] = b""
    with pytest.raises(SignatureError):
        Session(KEY).deserialize(frames)


def test_garbage_is_never_parsed_even_if_signed_frames_are_valid_json() -> None:
    s = Session(KEY)
    # Correctly signed, but not JSON: rejected after the signature check, as a WireError.
    parts = [b"not json", b"{}", b"{}"]
    with pytest.raises(WireError, match="invalid JSON"):
        s.deserialize([DELIM, s.sign(parts), *parts])


@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_too_few_frames_after_the_delimiter(count: int) -> None:
    frames = Session(KEY).serialize("heartbeat", {})
    with pytest.raises(WireError, match="frames after the delimiter"):
        Session(KEY).deserialize(frames[: 1 + count])


def test_no_delimiter() -> None:
    with pytest.raises(WireError, match="delimiter"):
        Session(KEY).deserialize([b"a", b"b", b"c", b"d", b"e"])


def test_replayed_message_is_rejected_but_a_retry_with_the_same_msg_id_is_not() -> None:
    sender, receiver = Session(KEY), Session(KEY)
    msg_id = sender.new_msg_id()
    frames = sender.serialize("task_command", {"slot": "a"}, msg_id=msg_id)
    receiver.deserialize(frames)
    with pytest.raises(ReplayError):
        receiver.deserialize(frames)
    # A Lazy Pirate retry re-serialises with the same msg_id and a fresh date: a new signature.
    retry = receiver.deserialize(sender.serialize("task_command", {"slot": "a"}, msg_id=msg_id))
    assert retry.header.msg_id == msg_id
    # Snapshot contents are checked for authenticity only.
    receiver.deserialize(frames, check_replay=False)


def test_digest_history_is_bounded() -> None:
    sender, receiver = Session(KEY), Session(KEY, digest_history_size=3)
    first = sender.serialize("heartbeat", {})
    receiver.deserialize(first)
    for _ in range(3):
        receiver.deserialize(sender.serialize("heartbeat", {}))
    receiver.deserialize(first)  # evicted: the history keeps only the last 3


def test_digest_history_evicts_the_oldest_first_and_keeps_exactly_its_size() -> None:
    sender, receiver = Session(KEY), Session(KEY, digest_history_size=3)
    sent = [sender.serialize("heartbeat", {}) for _ in range(5)]
    for frames in sent[:4]:
        receiver.deserialize(frames)
    # Seen: 2, 3, 4 (1 was evicted by 4). Within the window a replay is refused, however often asked.
    for frames in (sent[1], sent[2], sent[3], sent[3]):
        with pytest.raises(ReplayError):
            receiver.deserialize(frames)
    receiver.deserialize(sent[0])  # evicted: accepted again, and now the newest (2 goes)
    receiver.deserialize(sent[1])
    with pytest.raises(ReplayError):
        receiver.deserialize(sent[0])
    # Parsing without the check (snapshot contents) neither consults nor fills the history.
    receiver.deserialize(sent[4], check_replay=False)
    receiver.deserialize(sent[4])


def test_unknown_msg_types_and_extra_fields_are_tolerated() -> None:
    s = Session(KEY)
    frames = s.serialize("future_thing", {"slot": "a", "new_field": [1, 2]})
    header = orjson.loads(frames[2])
    header["subshell_id"] = "x"  # an extra header key from a newer peer
    parts = [orjson.dumps(header), frames[3], frames[4]]
    msg = s.deserialize([DELIM, s.sign(parts), *parts])
    assert msg.msg_type == "future_thing"
    req = SnapshotRequest.model_validate({"slot": "a", "since_seq": 3, "new_field": 1})
    assert req.since_seq == 3 and req.model_dump()["new_field"] == 1


def test_header_requires_its_fields() -> None:
    with pytest.raises(WireError, match="msg_id"):
        Header.from_dict({"session": "s", "msg_type": "t", "version": "1.0", "date": ""})
    with pytest.raises(WireError, match="strings"):
        Header.from_dict({"msg_id": 1, "session": "s", "msg_type": "t", "version": "1.0", "date": ""})


def test_empty_key_disables_signing() -> None:
    frames = Session("").serialize("heartbeat", {})
    assert frames[1] == b""
    assert Session("").deserialize(frames).msg_type == "heartbeat"
    with pytest.raises(SignatureError):
        Session(KEY).deserialize(frames)


def test_session_refuses_to_sign_in_a_forked_child() -> None:
    s = Session(KEY)
    s.pid = -1  # what a fork looks like to the Session: its recorded pid is no longer ours
    with pytest.raises(WireError, match="forked"):
        s.serialize("heartbeat", {})


def test_topics_are_prefix_safe() -> None:
    assert task_topic("w1", "abc").startswith(slot_topic("w1"))
    assert not slot_topic("w10").startswith(slot_topic("w1"))
    with pytest.raises(ValueError, match="pattern"):
        TaskCommandRequest(slot="a.b", command={})


def test_every_request_has_a_reply_model_and_events_have_models() -> None:
    assert set(REQUESTS) == set(REPLIES)
    assert {"task_event", "slot_up", "slot_down", "welcome", "hugz", "bridge_stopping"} <= set(EVENTS)


def test_snapshot_buffers_split_into_whole_events() -> None:
    s = Session(KEY)
    parts = s.serialize_parts(s.header("task_event"), None, {"slot": "a", "seq": 1})
    buffers = [b"slot.a.", *parts] * 2
    events = split_snapshot_buffers(buffers)
    assert len(events) == 2
    assert s.deserialize(events[0], check_replay=False).topic == b"slot.a."
    with pytest.raises(WireError):
        split_snapshot_buffers(buffers[:-1])


@given(
    text=st.text(max_size=300),
    seq=st.integers(min_value=1, max_value=2**53),
    task=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
)
def test_event_content_round_trips(text: str, seq: int, task: str | None) -> None:
    s = Session(KEY)
    event = {"eventName": "message", "payload": [{"taskId": task, "message": {"text": text}}]}
    content = TaskEventContent(slot="a", seq=seq, task_id=task, event=event)
    msg = s.deserialize(s.serialize("task_event", content, idents=[b"slot.a."]))
    assert TaskEventContent.model_validate(msg.content) == content


# ------------------------------------------------------------------------------- fast paths (hot)

_EVENT = {"eventName": "message", "payload": [{"taskId": "t1", "message": {"text": "é\u2028x", "ts": 1}}]}


@pytest.mark.parametrize("parent", [None, {}, {"msg_id": "m1", "session": "s", "msg_type": "task_command"}])
@pytest.mark.parametrize(
    ("msg_type", "model", "raw"),
    [
        (
            "task_event",
            TaskEventContent(slot="w1", seq=7, task_id="t1", event=_EVENT),
            task_event_content("w1", 7, "t1", _EVENT),
        ),
        (
            "task_event",
            TaskEventContent(slot="w1", seq=8, task_id=None, event={"eventName": "modesResponse"}),
            task_event_content("w1", 8, None, {"eventName": "modesResponse"}),
        ),
        ("hugz", HugzContent(slot="w1", seq=3, state="up"), HugzContent(slot="w1", seq=3, state="up")),
    ],
)
def test_serialize_event_is_byte_identical_to_serialize_parts(
    parent: dict[str, Any] | None, msg_type: str, model: Any, raw: Any
) -> None:
    session = Session(KEY)
    fast = session.serialize_event(msg_type, parent, raw)
    header = Header(**orjson.loads(fast[1]))  # same msg_id and date: the only varying fields
    assert header.msg_type == msg_type and header.session == session.session
    assert fast == session.serialize_parts(header, parent, model)
    msg = Session(KEY).deserialize([b"topic", DELIM, *fast])
    assert msg.content == model.model_dump() and msg.header == header


def test_serialize_keeps_a_given_msg_id_and_the_header_fields() -> None:
    session = Session(KEY)
    frames = session.serialize("heartbeat", {}, {"msg_id": "p"}, msg_id="fixed")
    header = orjson.loads(frames[2])
    assert list(header) == ["msg_id", "session", "msg_type", "version", "date", "protocol"]
    assert header["msg_id"] == "fixed" and header["version"] == VERSION
    assert orjson.loads(frames[3]) == {"msg_id": "p"}


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**6))
def test_iso_utc_matches_datetime_isoformat(micros: int) -> None:
    expected = (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)).isoformat()
    assert iso_utc(micros) == expected


def test_iso_utc_without_microseconds_matches_datetime() -> None:
    assert iso_utc(1_700_000_000 * 10**6) == datetime.fromtimestamp(1_700_000_000, timezone.utc).isoformat()


def test_the_first_delimiter_is_the_delimiter() -> None:
    s = Session(KEY)
    parts = s.serialize("heartbeat", {})[1:]  # [signature, header, parent, content]
    msg = s.deserialize([b"topic", DELIM, *parts], check_replay=False)
    assert msg.idents == [b"topic"] and msg.msg_type == "heartbeat"
    # A second delimiter right after the first is the signature frame, not an empty routing id.
    with pytest.raises(SignatureError):
        s.deserialize([DELIM, DELIM, *parts], check_replay=False)
