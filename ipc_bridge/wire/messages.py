"""The content of every bridge message: one pydantic model per request, reply and event (wire format 1.x,
docs/wire-format.md). :mod:`.wire` frames, signs and re-exports them."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ipc_bridge.json_compat import dumps


class Content(BaseModel):
    """Base of every message content: extra keys are kept (newer peers may add fields)."""

    model_config = ConfigDict(extra="allow")


SlotName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""No dots: topics are ``slot.<slot>.``, and ZeroMQ matches topics by prefix."""


class ErrorCode(str, Enum):
    UNKNOWN_SLOT = "unknown_slot"
    SLOT_DOWN = "slot_down"
    SLOT_EXISTS = "slot_exists"
    CONNECT_FAILED = "connect_failed"
    INVALID_COMMAND = "invalid_command"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_MSG_TYPE = "unknown_msg_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    BUSY = "busy"
    """Too many commands waiting on hosts already (``max_inflight``): nothing was done; retry later."""
    INTERNAL = "internal"


# requests (worker -> bridge, on the ROUTER)


class AttachRequest(Content):
    slot: SlotName
    socket_path: str = Field(min_length=1)
    connect_timeout: float = Field(default=30.0, gt=0)

    @field_validator("socket_path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # The OS refuses such a path; refusing it here makes it an invalid request, not a failed connect.
        if "\0" in value:
            raise ValueError("socket_path contains a NUL byte")
        return value


class DetachRequest(Content):
    slot: SlotName


class AttachStartRequest(AttachRequest):
    """1.3: ``attach``, then the StartNewTask ``command`` once the host is up: one round trip where
    ``attach`` and ``task_command`` take two. Subscribe to the slot's topic first: its welcome then
    carries seq 0, and every event of the slot from its first ``slot_up`` reaches the subscriber live."""

    command: dict[str, Any]
    """A Roo StartNewTask (``{"commandName": "StartNewTask", "data": ...}``); any other command is
    ``invalid_command``, and nothing is attached."""
    start_timeout: float | None = Field(default=None, gt=0)
    """As :attr:`TaskCommandRequest.start_timeout`."""


class CloseDetachRequest(DetachRequest):
    """1.3: CloseTask, then ``detach``, in one round trip. The slot is detached whether or not the
    CloseTask could be sent (the host was gone, say): :attr:`CloseDetachReply.close_error` says which."""


class SlotsRequest(Content):
    pass


class TaskCommandRequest(Content):
    slot: SlotName
    command: dict[str, Any]
    """A Roo TaskCommand (``{"commandName": ..., "data": ...}``), validated by the bridge."""
    start_timeout: float | None = Field(default=None, gt=0)
    """StartNewTask: how long the bridge waits for the new task's ``taskCreated`` (s). The requester
    knows its own limit (a suite's ``start_timeout``); None: the bridge's ``--start-timeout``."""


class SnapshotRequest(Content):
    slot: SlotName
    since_seq: int | None = Field(default=0, ge=0)
    """Events with ``seq > since_seq``; None asks only for the slot's current ``last_seq``."""
    limit: int = Field(default=10_000, ge=0)


class HeartbeatRequest(Content):
    interval: float | None = None
    """How often this client heartbeats (s): the bridge expires it after ``liveness`` silent intervals."""


class ShutdownRequest(Content):
    pass


# replies (msg_type ``<request>_reply``, parent = the request's header)


class Reply(Content):
    status: Literal["ok"] = "ok"


class ErrorReply(Content):
    status: Literal["error"] = "error"
    error: str
    """An :class:`ErrorCode` value (kept as a string so that newer codes still parse)."""
    reason: str


class SlotInfo(Content):
    slot: str
    state: str
    """``connecting``, ``up``, ``down`` (lost, reconnecting) or ``detached``."""
    socket_path: str
    client_id: str | None = None
    pid: int | None = None
    seq: int = 0
    first_seq: int = 0
    """Oldest seq still in the replay buffer (0 when it is empty)."""
    last_error: str | None = None
    owner: str | None = None
    """The session of the client that attached the slot (None: attached at bridge start, never expires)."""
    # Bad input from the host since the slot was made (all connections), docs/wire-format.md section 3.
    bad_frames: int = 0
    """Frames dropped: not JSON (NaN and Infinity included), or not a node-ipc ``message``."""
    oversized_frames: int = 0
    """Frames over the bridge's max frame size, dropped."""
    bad_messages: int = 0
    """Messages dropped: no TaskEvent (or before the Ack), or a TaskEvent without a string eventName."""
    unknown_events: int = 0
    """TaskEvents with an eventName the bridge does not know: forwarded."""
    malformed_events: int = 0
    """TaskEvents of a known name whose payload is no array: forwarded."""
    ack_timeouts: int = 0
    """Connections on which the host sent no Ack in time."""


class AttachReply(Reply):
    slot: SlotInfo


class DetachReply(Reply):
    slot: str


class AttachStartReply(AttachReply):
    """The slot is attached (``slot``, as the attach left it). Then either ``task_id`` (the new task's
    Roo id, as a StartNewTask's ``task_command`` reply gives it) or ``start_error``: what a
    ``task_command`` StartNewTask would have answered (``timeout``, ``slot_down``...). Either way the
    slot stays attached: detach it."""

    task_id: str | None = None
    start_error: ErrorReply | None = None


class CloseDetachReply(DetachReply):
    """Detached. ``close_error``: why the CloseTask could not be sent (``slot_down``...), None if it was."""

    close_error: ErrorReply | None = None


class SlotsReply(Reply):
    slots: list[SlotInfo]


class TaskCommandReply(Reply):
    slot: str
    command_name: str
    task_id: str | None = None
    """StartNewTask: the Roo task id of the first ``taskCreated`` with a new id after the command."""
    response: Any = None
    """Get*: the payload of the commandsResponse / modesResponse / modelsResponse."""


class SnapshotReply(Reply):
    """Followed by ``count`` events as buffers, five frames each (see :func:`split_snapshot_buffers`)."""

    slot: str
    since_seq: int | None
    first_seq: int
    last_seq: int
    count: int
    complete: bool
    """False when the buffer no longer reaches back to ``since_seq + 1``: events were lost for good."""
    more: bool
    """True when ``limit`` cut the answer short: ask again from the last seq received."""


class HeartbeatReply(Reply):
    session: str
    pid: int
    slots: int
    hugz_interval: float | None = None
    """The bridge publishes hugz this often (s) when idle: the client's silence window is sized on it."""
    liveness: int | None = None
    rejected: dict[str, int] = Field(default_factory=dict)
    """Requests rejected since the bridge started, by reason (docs/wire-format.md section 2)."""


class ShutdownReply(Reply):
    pass


# events (bridge -> workers, on the XPUB). Sequenced ones carry the slot's ``seq``.


class TaskEventContent(Content):
    slot: str
    seq: int
    task_id: str | None
    event: dict[str, Any]
    """The Roo TaskEvent as the extension sent it (parse with ``protocol.parse_task_event``)."""


def task_event_content(slot: str, seq: int, task_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
    """:class:`TaskEventContent` as the dict its ``model_dump()`` gives, without the model: the hot path
    (one per extension event). The event is not copied: it must not change after publishing."""
    return {"slot": slot, "seq": seq, "task_id": task_id, "event": event}


def encode_task_event(slot: str, seq: int, task_id: str | None, event: bytes) -> bytes:
    """:class:`TaskEventContent` as JSON around ``event``, the event's JSON as the host wrote it: the
    bridge forwards an event's bytes instead of encoding its parsed value again. When ``event`` is
    compact JSON as orjson writes it, these are the very bytes of ``task_event_content(...)`` encoded."""
    return b'{"slot":%b,"seq":%d,"task_id":%b,"event":%b}' % (dumps(slot), seq, dumps(task_id), event)


class SlotUpContent(Content):
    slot: str
    seq: int
    socket_path: str
    client_id: str
    pid: int


class SlotDownContent(Content):
    slot: str
    seq: int
    reason: str


class BridgeStoppingContent(Content):
    slot: str | None = None
    seq: int | None = None


class WelcomeContent(Content):
    subscription: str
    seq: int | None = None
    """For a slot's topic (``slot.NAME.``): that slot's last seq as the welcome was sent. Every later
    event of the slot follows the welcome on the subscriber's socket, so a subscriber that has seen up
    to this seq needs no snapshot."""


class HugzContent(Content):
    slot: str | None = None
    seq: int | None = None
    """The slot's last seq: a subscriber behind it has missed events."""
    state: str | None = None


REQUESTS: dict[str, type[Content]] = {
    "attach": AttachRequest,
    "detach": DetachRequest,
    "attach_start": AttachStartRequest,
    "close_detach": CloseDetachRequest,
    "slots": SlotsRequest,
    "task_command": TaskCommandRequest,
    "snapshot": SnapshotRequest,
    "heartbeat": HeartbeatRequest,
    "shutdown": ShutdownRequest,
}
REPLIES: dict[str, type[Reply]] = {
    "attach": AttachReply,
    "detach": DetachReply,
    "attach_start": AttachStartReply,
    "close_detach": CloseDetachReply,
    "slots": SlotsReply,
    "task_command": TaskCommandReply,
    "snapshot": SnapshotReply,
    "heartbeat": HeartbeatReply,
    "shutdown": ShutdownReply,
}
EVENTS: dict[str, type[Content]] = {
    "task_event": TaskEventContent,
    "slot_up": SlotUpContent,
    "slot_down": SlotDownContent,
    "bridge_stopping": BridgeStoppingContent,
    "welcome": WelcomeContent,
    "hugz": HugzContent,
}


def reply_type(request_type: str) -> str:
    return f"{request_type}_reply"


def parse_reply(request_type: str, content: dict[str, Any]) -> Reply | ErrorReply:
    """The typed content of a reply to ``request_type`` (an :class:`ErrorReply` when it says error)."""
    if content.get("status") == "error":
        return ErrorReply.model_validate(content)
    return REPLIES.get(request_type, Reply).model_validate(content)
