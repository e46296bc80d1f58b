"""The types the worker client (:mod:`ipc_bridge.client.bridge_client`) hands out: :class:`Event`, and one exception
class per bridge error code, so that callers catch what they can handle (``SlotDown``) and let the rest
propagate."""

from __future__ import annotations

from typing import Any, cast

from ipc_bridge.roo.events import TaskEvent, parse_task_event
from ipc_bridge.wire.messages import EVENTS, Content, ErrorCode
from ipc_bridge.wire.session import Header


class BridgeError(Exception):
    """Base of everything the client raises."""


class BridgeTimeout(BridgeError):
    """No reply (or welcome) after every retry: the bridge is down or stuck."""


class CommandError(BridgeError):
    """The bridge answered with an error reply."""

    def __init__(self, code: str, reason: str, msg_type: str = "") -> None:
        super().__init__(f"{msg_type}: {reason}" if msg_type else reason)
        self.code = code
        self.reason = reason
        self.msg_type = msg_type


class UnknownSlot(CommandError):
    pass


class SlotDown(CommandError):
    pass


class SlotExists(CommandError):
    pass


class ConnectFailed(CommandError):
    pass


class InvalidCommand(CommandError):
    pass


class CommandTimeout(CommandError):
    """The bridge gave up waiting for the extension (e.g. no taskCreated after StartNewTask)."""


class ShuttingDown(CommandError):
    pass


ERRORS: dict[str, type[CommandError]] = {
    # error codes without a class of their own (invalid_request, unknown_msg_type, ...) raise
    # CommandError with the code in ``.code``
    ErrorCode.UNKNOWN_SLOT.value: UnknownSlot,
    ErrorCode.SLOT_DOWN.value: SlotDown,
    ErrorCode.SLOT_EXISTS.value: SlotExists,
    ErrorCode.CONNECT_FAILED.value: ConnectFailed,
    ErrorCode.INVALID_COMMAND.value: InvalidCommand,
    ErrorCode.TIMEOUT.value: CommandTimeout,
    ErrorCode.SHUTTING_DOWN.value: ShuttingDown,
}


class EventGap(BridgeError):
    """Events of a slot were lost and the bridge's replay buffer no longer holds them."""

    def __init__(self, slot: str, expected: int, available: int) -> None:
        super().__init__(
            f"slot {slot}: events from seq {expected} lost (replay buffer starts at {available})"
        )
        self.slot = slot
        self.expected = expected
        self.available = available


class BridgeRestarted(BridgeError):
    """A message came from a new bridge session: slots, seqs and buffers of the old one are gone."""

    def __init__(self, old: str | None, new: str) -> None:
        super().__init__(f"bridge restarted (session {old} -> {new})")
        self.old = old
        self.new = new


class BridgeLost(BridgeError):
    """Nothing (no reply, no event, not even a ``hugz``) came from the bridge for ``liveness`` hugz
    intervals: it is dead, stopped or stuck. Pending requests and open event streams raise this, and
    new requests fail at once until the bridge is heard again (a new session then means a restart)."""

    def __init__(self, silent_for: float, window: float, session: str | None) -> None:
        super().__init__(f"bridge {session} silent for {silent_for:.1f} s (liveness window {window:g} s)")
        self.silent_for = silent_for
        self.window = window
        self.session = session


# ------------------------------------------------------------------------------------------ events


class Event:
    """One event from the bridge. ``content`` is the typed model for ``msg_type``.

    For ``task_event`` (nearly all the traffic) the model is built on first access only: the client
    checks the raw content's shape when the event arrives, and :attr:`slot`, :attr:`seq`,
    :attr:`task_id`, :attr:`event_name` and :meth:`task_event` read the raw content, so a consumer that
    never touches ``content`` pays for no pydantic model per event. ``raw`` is the content as received
    (the model's ``model_dump()`` when built from a model). Events that come off the wire
    (:meth:`received`) also build their :attr:`header` on first access, from the header as parsed
    (checked on arrival)."""

    __slots__ = ("_content", "_header", "_header_data", "msg_type", "parent", "raw", "seq", "topic")

    seq: int | None
    """The slot's sequence number of a sequenced event (None for a ``hugz``, whose ``seq`` is the
    slot's last: read it from ``content``)."""

    def __init__(
        self,
        msg_type: str,
        header: Header,
        parent: dict[str, Any],
        content: Content | dict[str, Any],
        topic: bytes,
    ) -> None:
        self.msg_type = msg_type
        self._header: Header | None = header
        self._header_data: dict[str, Any] | None = None
        self.parent = parent
        self.topic = topic
        if type(content) is dict:  # not isinstance(..., Content): a model's isinstance is an ABC check
            self._content: Content | None = None
            self.raw: dict[str, Any] = content
        else:
            assert isinstance(content, Content)
            self._content = content
            self.raw = content.model_dump()
        seq = self.raw.get("seq")
        self.seq = seq if type(seq) is int and msg_type != "hugz" else None

    @classmethod
    def received(
        cls, msg_type: str, header: dict[str, Any], parent: dict[str, Any], raw: dict[str, Any], topic: bytes
    ) -> Event:
        """An event as parsed off the wire, its content of the right shape for ``msg_type`` (or checked
        only when ``content`` is asked for), its header checked (``session.check_header``): the
        :class:`Header` and the model are built when asked for. The hot path: no ``__init__``."""
        event = object.__new__(cls)
        event.msg_type = msg_type
        event._header = None
        event._header_data = header
        event.parent = parent
        event.topic = topic
        event._content = None
        event.raw = raw
        seq = raw.get("seq")
        event.seq = seq if type(seq) is int and msg_type != "hugz" else None
        return event

    @property
    def header(self) -> Header:
        if self._header is None:
            assert self._header_data is not None
            self._header = Header.from_dict(self._header_data)
        return self._header

    @property
    def session(self) -> str:
        """The sending bridge's session (``header.session``, without building the header)."""
        if self._header is not None:
            return self._header.session
        assert self._header_data is not None
        return cast(str, self._header_data["session"])

    @property
    def content(self) -> Content:
        if self._content is None:
            self._content = EVENTS.get(self.msg_type, Content).model_validate(self.raw)
        return self._content

    def __repr__(self) -> str:
        return f"Event({self.msg_type!r}, topic={self.topic!r}, content={self.raw!r})"

    @property
    def slot(self) -> str | None:
        value = self.raw.get("slot")
        return value if isinstance(value, str) else None

    @property
    def task_id(self) -> str | None:
        if self.msg_type != "task_event":
            return None
        value = self.raw.get("task_id")
        return value if isinstance(value, str) else None

    @property
    def parent_msg_id(self) -> str | None:
        value = self.parent.get("msg_id")
        return value if isinstance(value, str) else None

    @property
    def event_name(self) -> str | None:
        """The Roo eventName of a ``task_event`` (``taskCreated``, ``message``, ...)."""
        if self.msg_type != "task_event":
            return None
        event = self.raw.get("event")
        name = event.get("eventName") if isinstance(event, dict) else None
        return name if isinstance(name, str) else None

    def task_event(self) -> TaskEvent:
        """The Roo TaskEvent, parsed leniently (``task_event`` messages only)."""
        event = self.raw.get("event") if self.msg_type == "task_event" else None
        if not isinstance(event, dict):
            raise TypeError(f"{self.msg_type} is not a task_event")
        return parse_task_event(event)


def task_event_shape_ok(content: dict[str, Any]) -> bool:
    """True when ``content`` certainly validates as :class:`TaskEventContent` (the bridge's own output):
    then the model can wait until someone asks for it. Anything else goes through the model at once."""
    task_id = content.get("task_id")
    return (
        type(content.get("slot")) is str
        and type(content.get("seq")) is int
        and (task_id is None or type(task_id) is str)
        and type(content.get("event")) is dict
    )
