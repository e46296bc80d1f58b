"""Per-slot state of the bridge: one extension host connection, its event sequence and replay buffer,
and the correlation of commands with the events that answer them.

The extension never replies to a task command; its effects arrive as broadcast TaskEvents. So a slot
serialises StartNewTask and takes as the new task the first ``taskCreated`` whose id it has not seen
before (the replaced task's ``taskUnfocused``/``taskAborted`` come first and mark the old id as seen).
Get* queries are answered to our clientId only, in order, so a FIFO per response name matches them.

Bad input from a host never ends the connection: what cannot be routed is dropped, what is merely odd
(an unknown event name, a payload that is no array) is forwarded, and both are counted in the slot's
:class:`SlotInfo` and logged (rate-limited). Memory stays bounded whatever the host sends: frames by
``max_frame_size``, events by the replay buffer (counted at what they cost in memory), remembered task
ids by ``max_tracked_tasks``; a host is read one socket read at a time, each published before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from ipc_bridge.json_compat import loads
from ipc_bridge.roo.events import KNOWN_EVENTS, event_route
from ipc_bridge.roo.extension import (
    AckTimeout,
    ConnectTimeout,
    Delivered,
    Disconnected,
    ExtensionConnection,
    ExtensionError,
)
from ipc_bridge.roo.protocol import QUERY_RESPONSES, StartNewTask, task_command_adapter
from ipc_bridge.roo.shapes import ProtocolError
from ipc_bridge.server.host_input import NO_PAYLOAD, HostInput
from ipc_bridge.server.publisher import Publisher, TaskEventOut
from ipc_bridge.server.replay_buffer import BufferedEvent, ReplayBuffer
from ipc_bridge.wire.messages import (
    BridgeStoppingContent,
    Content,
    ErrorCode,
    SlotDownContent,
    SlotInfo,
    SlotUpContent,
    encode_task_event,
    task_event_content,
)
from ipc_bridge.wire.session import EventContent, Header, slot_topic, task_topic

log = logging.getLogger(__name__)

ParentDict = dict[str, Any]

_RESPONSE_NAMES = frozenset(QUERY_RESPONSES.values())

OWNER_EXPIRED = "owner expired"
"""``slot_down`` reason when the bridge detached a slot because the client that attached it went silent."""


_SIMPLE_COMMANDS: dict[str, Any] = {}


def validate_command(data: dict[str, Any]) -> Any:
    """``task_command_adapter.validate_python(data)``, with the commands that are only a name (Get*,
    CancelTask, CloseTask) validated once: the bridge never changes a command, so one instance serves."""
    name = data.get("commandName") if len(data) == 1 else None
    if type(name) is str:
        command = _SIMPLE_COMMANDS.get(name)
        if command is None:
            command = task_command_adapter.validate_python(data)  # raises for anything not known
            _SIMPLE_COMMANDS[name] = command
        return command
    return task_command_adapter.validate_python(data)


class SlotError(Exception):
    """A command a slot cannot carry out; becomes an error reply with ``code`` and the message."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


MAX_FRAME_SIZE = 16 * 1024 * 1024
"""A host's frames beyond this are dropped: an event of that size costs the bridge several times it
while it is decoded, re-encoded, buffered and queued, and the whole bridge stays within ~300 MiB."""


@dataclass
class SlotConfig:
    start_timeout: float = 30.0
    """How long StartNewTask waits for the new task's ``taskCreated`` when the request does not say."""
    query_timeout: float = 10.0
    reconnect_interval: float = 0.5
    buffer_events: int = 100_000
    buffer_bytes: int = 64 * 1024 * 1024
    """Memory the replay buffer's events may take (what they cost in Python objects, not their length)."""
    max_frame_size: int = MAX_FRAME_SIZE
    """A larger frame from the host is dropped (and counted); the connection stays."""
    ack_timeout: float = 5.0
    """Background reconnects: how long a host that accepted the connection may take to send its Ack
    before the bridge hangs up and tries again."""
    max_tracked_tasks: int = 10_000
    """Task ids remembered per host connection (to recognise new tasks and their StartNewTask); the
    oldest are forgotten first, so a host inventing ids cannot grow the bridge without bound."""


class Slot:
    """One attached extension host. All methods run on the bridge's event loop."""

    def __init__(self, name: str, socket_path: str, publisher: Publisher, config: SlotConfig) -> None:
        self.name = name
        self.socket_path = socket_path
        self.config = config
        self.state = "connecting"
        self._closing = False
        self.seq = 0
        self.buffer = ReplayBuffer(config.buffer_events, config.buffer_bytes)
        self.conn: ExtensionConnection | None = None
        self.last_error: str | None = None
        self.last_publish = 0.0
        self.owner: str | None = None
        """Session of the client whose ``attach`` holds the slot; None for slots attached at start-up."""
        self._publisher = publisher
        self._topic = slot_topic(name)
        self._reconnector: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._seen: dict[str, None] = {}  # ordered: the oldest is forgotten first
        self._task_parent: dict[str, ParentDict] = {}
        self.input = HostInput(name)
        self._current_parent: ParentDict | None = None
        self._pending_start: tuple[asyncio.Future[str], ParentDict] | None = None
        self._pending_queries: dict[str, deque[tuple[asyncio.Future[Any], ParentDict]]] = {
            name: deque() for name in _RESPONSE_NAMES
        }

    # ---------------------------------------------------------------------------------------- info

    @property
    def tracked_tasks(self) -> int:
        """Task ids currently remembered (at most ``max_tracked_tasks``)."""
        return max(len(self._seen), len(self._task_parent))

    def info(self) -> SlotInfo:
        ack = self.conn.ack if self.conn is not None and self.state == "up" else None
        return SlotInfo(
            slot=self.name,
            state=self.state,
            socket_path=self.socket_path,
            client_id=ack.clientId if ack else None,
            pid=ack.pid if ack else None,
            seq=self.seq,
            first_seq=self.buffer.first_seq,
            last_error=self.last_error,
            owner=self.owner,
            **self.input.counts(),
        )

    # ------------------------------------------------------------------------------------ publish

    def _emit(
        self, topic: bytes, msg_type: str, content: Content | dict[str, Any], parent: ParentDict | None
    ) -> None:
        frames = self._publisher.publish(topic, msg_type, content, parent)
        self.buffer.append(self.seq, frames)
        self.last_publish = asyncio.get_running_loop().time()

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def emit_stopping(self) -> None:
        self._emit(
            self._topic, "bridge_stopping", BridgeStoppingContent(slot=self.name, seq=self._next_seq()), None
        )

    # ---------------------------------------------------------------------------------- lifecycle

    def _connection(self) -> ExtensionConnection:
        return ExtensionConnection(
            self.socket_path,
            max_frame_size=self.config.max_frame_size,
            stats=self.input.stats,
            log_limit=self.input.log,
            label=f"slot {self.name}",
        )

    async def connect(self, timeout: float) -> None:
        """First connection (attach): raises :class:`SlotError` if no host answers in time."""
        conn = self._connection()
        try:
            await conn.open(timeout=timeout, retry_interval=min(0.1, timeout))
        except (ExtensionError, OSError, ValueError) as exc:  # ValueError: a path the OS refuses
            self.last_error = str(exc)
            if isinstance(exc, AckTimeout):
                self.input.ack_timeout(exc)
            raise SlotError(ErrorCode.CONNECT_FAILED, f"{self.socket_path}: {exc}") from exc
        self._up(conn)

    def _up(self, conn: ExtensionConnection) -> None:
        self._closing = False
        assert conn.ack is not None
        self.conn = conn
        self.state = "up"
        self.last_error = None
        # A host that came back may be a new process whose ids can repeat the old one's (a seeded
        # simulator does): only ids seen on this connection count as "not new" for StartNewTask.
        self._seen.clear()
        content = SlotUpContent(
            slot=self.name,
            seq=self._next_seq(),
            socket_path=self.socket_path,
            client_id=conn.ack.clientId,
            pid=conn.ack.pid,
        )
        self._emit(self._topic, "slot_up", content, None)
        # A host can come and go in a loop: these lines share the slot's rate limit.
        self.input.log.info("slot %s up: %s (host pid %d)", self.name, self.socket_path, conn.ack.pid)
        # Last: messages that came with the Ack are handled right here, after slot_up.
        conn.deliver(self._on_messages, functools.partial(self._on_lost, conn))

    def _down(self, reason: str) -> None:
        if self.state != "up":
            return
        self.state = "down"
        self.last_error = reason
        self._fail_pending(SlotError(ErrorCode.SLOT_DOWN, f"slot {self.name} down: {reason}"))
        self._emit(
            self._topic,
            "slot_down",
            SlotDownContent(slot=self.name, seq=self._next_seq(), reason=reason),
            None,
        )
        if self._closing:
            self.input.log.info("slot %s closed after CloseTask: %s", self.name, reason)
        else:
            self.input.log.warning("slot %s down: %s", self.name, reason)
        self._closing = False

    async def detach(self, reason: str = "detached") -> None:
        """Close the host connection and stop reconnecting; ``slot_down {reason}`` if it was up."""
        was_up = self.state == "up"
        self.state = "detached"
        self.owner = None
        if reason != "detached":
            self.last_error = reason
        # Everything that must not interleave with a new attach happens before the first await.
        conn, self.conn = self.conn, None
        tasks = self._cancel_tasks()
        self._fail_pending(SlotError(ErrorCode.SLOT_DOWN, f"slot {self.name} {reason}"))
        if was_up:
            content = SlotDownContent(slot=self.name, seq=self._next_seq(), reason=reason)
            self._emit(self._topic, "slot_down", content, None)
        await _finish(tasks)
        if conn is not None:
            await conn.close()

    def connect_in_background(self) -> None:
        """Attach without waiting: the slot starts ``down`` and connects whenever the host listens."""
        self.state = "down"
        self.last_error = "not connected yet"
        self._reconnector = asyncio.ensure_future(self._reconnect_loop())

    async def close(self) -> None:
        """For bridge shutdown: drop the connection without publishing (the socket is going away)."""
        self.state = "detached"
        conn, self.conn = self.conn, None
        tasks = self._cancel_tasks()
        self._fail_pending(SlotError(ErrorCode.SHUTTING_DOWN, "bridge shutting down"))
        await _finish(tasks)
        if conn is not None:
            await conn.close()

    def _cancel_tasks(self) -> list[asyncio.Task[None]]:
        task, self._reconnector = self._reconnector, None
        if task is None or task is asyncio.current_task():
            return []
        task.cancel()
        return [task]

    def _fail_pending(self, error: SlotError) -> None:
        if self._pending_start is not None and not self._pending_start[0].done():
            self._pending_start[0].set_exception(error)
        for queue in self._pending_queries.values():
            while queue:
                fut, _ = queue.popleft()
                if not fut.done():
                    fut.set_exception(error)

    def _on_lost(self, conn: ExtensionConnection, reason: str) -> None:
        if self.state == "up" and self.conn is conn:
            self._down(reason)
            self._reconnector = asyncio.ensure_future(self._reconnect_loop(conn))

    async def _reconnect_loop(self, lost: ExtensionConnection | None = None) -> None:
        """A host can come back on the same path (restarted simulator, reloaded window)."""
        if lost is not None:
            await lost.close()
        while self.state == "down":
            conn = self._connection()
            try:
                await conn.open(
                    timeout=self.config.ack_timeout, retry_interval=self.config.reconnect_interval
                )
            except asyncio.CancelledError:
                await conn.close()
                raise
            except AckTimeout as exc:
                self.last_error = str(exc)
                self.input.ack_timeout(exc)
                await asyncio.sleep(self.config.reconnect_interval)
                continue
            except ConnectTimeout:
                continue
            except (ExtensionError, OSError, ValueError) as exc:
                self.last_error = str(exc)
                await asyncio.sleep(self.config.reconnect_interval)
                continue
            if self.state != "down":
                await conn.close()
                return
            self._reconnector = None
            self._up(conn)
            return

    # ------------------------------------------------------------------------------------- events

    def _on_messages(self, batch: list[Delivered]) -> None:
        """Every message of one read from the host: routed and numbered one by one, then published
        together. Sending them in one burst lets libzmq's I/O thread write them in few system calls
        instead of being woken for each (the largest share of the bridge's CPU per event, otherwise).
        An event whose bytes came with it is forwarded as those bytes, not encoded again."""
        events: list[TaskEventOut] = []
        seq = self.seq
        for data, raw in batch:
            if raw is not None:
                event = data
            elif type(data) is not dict or data.get("type") != "TaskEvent":
                self.input.not_an_event(data)
                continue
            else:
                event = data.get("data")
            try:
                name, task_id = event_route(event)
            except ProtocolError as exc:
                self.input.bad_event(exc, event)
                continue
            assert isinstance(event, dict)
            if name not in KNOWN_EVENTS or (
                type(event.get("payload")) is not list and name not in NO_PAYLOAD
            ):
                self.input.odd_event(name, event)  # forwarded all the same
            parent: ParentDict | None = None
            if task_id is not None:
                seen = self._seen
                if task_id not in seen:
                    if name == "taskCreated":
                        self._on_new_task(task_id)
                    seen[task_id] = None
                    if len(seen) > self.config.max_tracked_tasks:
                        del seen[next(iter(seen))]
                parent = self._task_parent.get(task_id)
                topic = task_topic(self.name, task_id)
            else:
                if name in _RESPONSE_NAMES:
                    # The reply carries the payload: read exactly (the routing parse may round).
                    exact = loads(raw, raw=True) if raw is not None else event
                    parent = self._on_query_response(name, exact.get("payload"))
                topic = self._topic
            seq += 1
            if raw is not None:
                content: EventContent = encode_task_event(self.name, seq, task_id, raw)
            else:
                content = task_event_content(self.name, seq, task_id, event)
            events.append((topic, parent, content))
        if not events:
            return
        first = self.seq + 1
        self.seq = seq
        append = self.buffer.append
        for i, frames in enumerate(self._publisher.publish_task_events(self.name, first, events)):
            append(first + i, frames)
        self.last_publish = asyncio.get_running_loop().time()

    def _on_new_task(self, task_id: str) -> None:
        pending = self._pending_start
        if pending is not None and not pending[0].done():
            self._current_parent = pending[1]
            pending[0].set_result(task_id)
        # Tasks first created after our StartNewTask (its subtasks included) belong to its attempt.
        if self._current_parent is not None:
            parents = self._task_parent
            parents[task_id] = self._current_parent
            if len(parents) > self.config.max_tracked_tasks:
                del parents[next(iter(parents))]

    def _on_query_response(self, name: str, payload: Any) -> ParentDict | None:
        queue = self._pending_queries[name]
        while queue:
            fut, parent = queue.popleft()
            if not fut.done():
                fut.set_result(payload)
                return parent
        return None

    # ------------------------------------------------------------------------------------ commands

    def _require_up(self) -> ExtensionConnection:
        if self.state != "up" or self.conn is None:
            raise SlotError(ErrorCode.SLOT_DOWN, f"slot {self.name} is {self.state}")
        return self.conn

    async def _send(self, command: Any) -> None:
        conn = self._require_up()
        async with self._send_lock:
            try:
                await conn.send_command(command)
            except (Disconnected, ExtensionError) as exc:
                raise SlotError(ErrorCode.SLOT_DOWN, f"slot {self.name} down: {exc}") from exc

    async def start_task(self, command: StartNewTask, parent: Header, timeout: float | None = None) -> str:
        """Send StartNewTask and return the id of the task it created, waiting for it ``timeout`` s
        (the request's own deadline) or, when None, the slot's ``start_timeout``."""
        async with self._start_lock:
            self._require_up()
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._pending_start = (fut, parent.to_dict())
            try:
                await self._send(command)
                if timeout is None:
                    timeout = self.config.start_timeout
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    raise SlotError(ErrorCode.TIMEOUT, f"no taskCreated within {timeout:g} s") from None
            finally:
                self._pending_start = None

    async def query(self, command: Any, response_name: str, parent: Header) -> Any:
        """Send a Get* command and return the payload of its response event."""
        self._require_up()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (fut, parent.to_dict())
        self._pending_queries[response_name].append(entry)
        timeout = self.config.query_timeout
        # Cheaper than wait_for(shield(...)) (a round trip's worth of the bridge's time).
        expiry = asyncio.get_running_loop().call_later(
            timeout,
            _expire,
            fut,
            SlotError(ErrorCode.TIMEOUT, f"no {response_name} within {timeout:g} s"),
        )
        try:
            await self._send(command)
            return await fut
        finally:
            expiry.cancel()
            pending = self._pending_queries[response_name]
            if entry in pending:  # not when the response already took it
                pending.remove(entry)

    async def send(self, command: Any) -> None:
        await self._send(command)
        if getattr(command, "commandName", None) == "CloseTask":
            # The host is expected to go away now (CloseTask closes the VS Code window).
            self._closing = True

    def replay(
        self, since_seq: int, limit: int, max_bytes: int | None = None
    ) -> tuple[list[BufferedEvent], bool, bool]:
        return self.buffer.since(since_seq, self.seq, limit, max_bytes)


def _expire(fut: asyncio.Future[Any], error: SlotError) -> None:
    if not fut.done():
        fut.set_exception(error)


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
