"""The exceptions of the worker client (:mod:`ipc_bridge.client`): one class per bridge error code,
so that callers catch what they can handle (``SlotDown``) and let the rest propagate."""

from __future__ import annotations

from .wire import ErrorCode


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
