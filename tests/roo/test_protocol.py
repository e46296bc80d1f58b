"""Protocol models against the real engine's recordings and @roo-code/types' rules."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ipc_bridge.roo import events as ev
from ipc_bridge.roo import protocol as p
from ipc_bridge.roo import shapes as sh
from tests.conftest import load_recording, recording_names


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("name", recording_names())
def test_every_recorded_frame_parses_typed_and_round_trips(name: str) -> None:
    for row in load_recording(name):
        msg = p.parse_ipc_message(row["msg"])
        assert msg.wire() == row["msg"]
        if isinstance(msg, p.TaskEventMessage):
            event = msg.event()
            assert not isinstance(event, ev.UnknownEvent), event
            # Events re-serialise byte for byte as the engine wrote them (key order, ints stay ints).
            assert orjson.dumps(msg.wire()) == _compact(row["msg"])


def test_typed_payloads_of_recorded_events() -> None:
    rows = load_recording("complete-3.50.4.jsonl")
    events = [p.parse_ipc_message(r["msg"]) for r in rows if r["msg"]["type"] == "TaskEvent"]
    completed = [m.event() for m in events if m.event().eventName == "taskCompleted"]
    assert len(completed) == 1
    event = completed[0]
    assert isinstance(event, ev.TaskCompleted)
    task_id, usage, tools, flag = event.payload
    assert event.task_id == task_id
    assert usage.totalCost >= 0 and usage.totalTokensIn > 0
    assert flag.isSubtask is False
    assert all(isinstance(v, sh.ToolStats) for v in tools.values())
    messages = [m.event() for m in events if isinstance(m.event(), ev.Message)]
    assert messages and all(isinstance(e, ev.Message) for e in messages)
    first = messages[0]
    assert isinstance(first, ev.Message)
    assert first.payload[0].message.say == "text"
    assert first.task_id == first.payload[0].taskId


def test_unknown_event_name_is_kept_whole() -> None:
    raw = {"eventName": "headlessTaskResult", "payload": ["t1", {"ok": True}], "extra": 1}
    event = ev.parse_task_event(raw)
    assert isinstance(event, ev.UnknownEvent)
    assert event.invalid is None
    assert event.wire() == raw
    assert event.task_id == "t1"


def test_known_event_with_bad_payload_degrades_to_unknown_not_crash() -> None:
    raw = {"eventName": "taskCompleted", "payload": ["t1", "not-usage"]}
    event = ev.parse_task_event(raw)
    assert isinstance(event, ev.UnknownEvent)
    assert event.invalid is not None and "payload" in event.invalid
    assert event.wire() == raw


def test_extra_keys_and_unknown_tools_survive() -> None:
    raw = {
        "eventName": "taskTokenUsageUpdated",
        "payload": [
            "t1",
            {"totalTokensIn": 1, "totalTokensOut": 2, "totalCost": 0.5, "contextTokens": 3, "future": 9},
            {"zoo_tool": {"attempts": 2, "failures": 1}},
        ],
    }
    event = ev.parse_task_event(raw)
    assert isinstance(event, ev.TaskTokenUsageUpdated)
    assert event.payload[2]["zoo_tool"].failures == 1
    assert event.wire() == raw


def test_command_envelope_matches_ipc_message_schema_rules() -> None:
    cmd = p.StartNewTask(
        data=p.StartNewTaskData(text="hé\fllo 🎉", configuration=sh.RooCodeSettings(mode="code"))
    )
    wire = p.command_message("abcdef012345", cmd).wire()
    assert list(wire) == ["type", "origin", "clientId", "data"]
    assert wire["origin"] == "client" and wire["clientId"] == "abcdef012345"
    assert wire["data"] == {
        "commandName": "StartNewTask",
        "data": {"configuration": {"mode": "code"}, "text": "hé\fllo 🎉"},
    }


def test_start_new_task_always_carries_configuration() -> None:
    wire = p.command_message("c", {"commandName": "StartNewTask", "data": {"text": "x"}}).wire()
    assert wire["data"]["data"] == {"configuration": {}, "text": "x"}


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ({"commandName": "CancelTask"}, {"commandName": "CancelTask"}),
        ({"commandName": "CloseTask"}, {"commandName": "CloseTask"}),
        ({"commandName": "ResumeTask", "data": "t1"}, {"commandName": "ResumeTask", "data": "t1"}),
        (
            {"commandName": "SendMessage", "data": {"text": "hi"}},
            {"commandName": "SendMessage", "data": {"text": "hi"}},
        ),
        ({"commandName": "GetCommands"}, {"commandName": "GetCommands"}),
        ({"commandName": "GetModes"}, {"commandName": "GetModes"}),
        ({"commandName": "GetModels"}, {"commandName": "GetModels"}),
        (
            {"commandName": "DeleteQueuedMessage", "data": "m1"},
            {"commandName": "DeleteQueuedMessage", "data": "m1"},
        ),
    ],
)
def test_every_command_serialises_as_roo_expects(
    command: dict[str, object], expected: dict[str, object]
) -> None:
    assert p.command_message("c", command).wire()["data"] == expected


def test_all_nine_commands_are_modelled() -> None:
    assert len(p.COMMAND_NAMES) == 9
    for name in p.COMMAND_NAMES:
        data: dict[str, object] = {"commandName": name}
        if name == "StartNewTask":
            data["data"] = {"text": "x"}
        elif name in ("ResumeTask", "DeleteQueuedMessage"):
            data["data"] = "id"
        assert p.task_command_adapter.validate_python(data).commandName == name


def test_wrong_typed_setting_is_refused_before_sending() -> None:
    with pytest.raises(ValidationError):
        sh.RooCodeSettings.model_validate({"autoApprovalEnabled": "yes please"})
    with pytest.raises(ValidationError):
        sh.RooCodeSettings.model_validate({"checkpointTimeout": 5})


def test_nan_and_infinity_are_refused_on_output() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValidationError):
            ev.make_event(
                "taskTokenUsageUpdated",
                "t",
                {"totalTokensIn": 1, "totalTokensOut": 1, "totalCost": bad, "contextTokens": 0},
                {},
            )
        with pytest.raises(ValidationError):
            sh.RooCodeSettings.model_validate({"modelTemperature": bad})


def test_open_settings_keep_unknown_keys() -> None:
    settings = sh.RooCodeSettings.model_validate({"mode": "code", "terminalShellIntegrationDisabled": True})
    assert settings.wire() == {"mode": "code", "terminalShellIntegrationDisabled": True}


def test_event_route_reads_name_and_task_without_validation() -> None:
    assert ev.event_route({"eventName": "taskCreated", "payload": ["t1"]}) == ("taskCreated", "t1")
    assert ev.event_route({"eventName": "message", "payload": [{"taskId": "t2", "action": "created"}]}) == (
        "message",
        "t2",
    )
    assert ev.event_route({"eventName": "modelsResponse", "payload": [{}]}) == ("modelsResponse", None)
    with pytest.raises(sh.ProtocolError):
        ev.event_route({"payload": []})


@pytest.mark.parametrize("bad", [[], "x", {"type": 3}, {"type": "Nope"}, {"type": "Ack", "origin": "server"}])
def test_non_messages_raise_protocol_error(bad: object) -> None:
    with pytest.raises(sh.ProtocolError):
        p.parse_ipc_message(bad)


@pytest.mark.parametrize("cls", [p.CancelTask, p.CloseTask, p.GetCommands, p.GetModes, p.GetModels])
def test_commands_built_from_defaults_keep_their_name(cls: type[sh.WireModel]) -> None:
    name = cls.__name__
    assert cls().wire() == {"commandName": name}
    assert p.command_message("c", cls()).wire()["data"] == {"commandName": name}


def test_events_built_directly_keep_their_name() -> None:
    assert ev.TaskCreated(payload=("t",)).wire() == {"eventName": "taskCreated", "payload": ["t"]}


_SOME_NAMES = [*sorted(ev.KNOWN_EVENTS), "headlessTaskResult"]
_PAYLOAD_ITEMS = st.one_of(st.text(max_size=3), st.integers(), st.none(), st.just({"taskId": "t"}))


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(_SOME_NAMES),
    payload=st.one_of(st.lists(_PAYLOAD_ITEMS, max_size=3), st.none(), st.text(max_size=2)),
    extra=st.dictionaries(st.sampled_from(["taskId", "x"]), st.one_of(st.integers(), st.text(max_size=2))),
)
def test_an_id_only_event_is_one_that_parses_as_its_model(
    name: str, payload: object, extra: dict[str, object]
) -> None:
    # The tracker skips the model of an event id_only_event accepts: it must say what the model would.
    raw = {"eventName": name, "payload": payload, **extra}
    simple = ev.id_only_event(raw)
    if simple is not None:
        event = ev.parse_task_event(raw)
        assert type(event) is ev.KNOWN_EVENTS[name]
        assert simple == (event.eventName, event.task_id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", recording_names())
def test_recorded_id_only_events_skip_their_model(name: str) -> None:
    for row in load_recording(name):
        data = row["msg"]["data"] if row["msg"]["type"] == "TaskEvent" else None
        if isinstance(data, dict) and data["eventName"] in ev.ID_ONLY_EVENTS:
            assert ev.id_only_event(data) == (data["eventName"], data["payload"][0])
    assert ev.id_only_event({"eventName": "modeChanged", "payload": ["code"]}) is None  # not a task id
    assert ev.id_only_event({"eventName": "taskSpawned", "payload": ["a", "b"]}) is None
