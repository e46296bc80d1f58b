"""Per-slot state of the bridge: one extension host connection, its event sequence and replay buffer,
and the correlation of commands with the events that answer them.

The extension never replies to a task command; its effects arrive as broadcast TaskEvents. So a slot
serialises StartNewTask and takes as the new task the first ``taskCreated`` whose id it has not seen
before (the replaced task's ``taskUnfocused``/``taskAborted`` come first and mark the old id as seen).
Get* queries are answered to our clientId only, in order, so a FIFO per response name matches them.

Bad input from a host never ends the connection: what cannot be routed is dropped, what is merely odd
(an unknown event name, a payload that is no array) is forwarded, and both are counted in the slot's
:class:`SlotInfo` and logged (rate-limited). Memory stays bounded whatever the host sends: frames by
``max_frame_size``, events by the replay buffer, remembered task ids by ``max_tracked_tasks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .events import KNOWN_EVENTS
from .extension import AckTimeout, ConnectTimeout, Disconnected, ExtensionConnection, ExtensionError
from .framing import DEFAULT_MAX_FRAME_SIZE
from .host_input import NO_PAYLOAD, HostInput
from .protocol import QUERY_RESPONSES, ProtocolError, StartNewTask, event_route
from .wire import (
    BridgeStoppingContent,
    Content,
    ErrorCode,
    Header,
    SlotDownContent,
    SlotInfo,
    SlotUpContent,
    slot_topic,
    task_event_content,
    task_topic,
)

log = logging.getLogger(__name__)

YIELD_EVERY = 64
"""Receive loops give the event loop a turn this often, so a flood cannot starve other tasks."""

ParentDict = dict[str, Any]
Publish = Callable[[bytes, str, "Content | dict[str, Any]", "ParentDict | None"], list[bytes]]
"""``(topic, msg_type, content, parent) -> [topic, signature, header, parent, content]``: signs and sends."""

_RESPONSE_NAMES = frozenset(QUERY_RESPONSES.values())

OWNER_EXPIRED = "owner expired"
"""``slot_down`` reason when the bridge detached a slot because the client that attached it went silent."""


class SlotError(Exception):
    """A command a slot cannot carry out; becomes an error reply with ``code`` and the message."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class SlotConfig:
    start_timeout: float = 30.0
    """How long StartNewTask waits for the new task's ``taskCreated``."""
    query_timeout: float = 10.0
    reconnect_interval: float = 0.5
    buffer_events: int = 100_000
    buffer_bytes: int = 256 * 1024 * 1024
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """A larger frame from the host is dropped (and counted); the connection stays."""
    ack_timeout: float = 5.0
    """Background reconnects: how long a host that accepted the connection may take to send its Ack
    before the bridge hangs up and tries again."""
    max_tracked_tasks: int = 10_000
    """Task ids remembered per host connection (to recognise new tasks and their StartNewTask); the
    oldest are forgotten first, so a host inventing ids cannot grow the bridge without bound."""


@dataclass
class BufferedEvent:
    seq: int
    frames: list[bytes]  # topic, signature, header, parent, content
    size: int


class ReplayBuffer:
    """The last events of a slot, bounded by count and bytes, for ``snapshot``. Seqs are contiguous."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max(1, max_events)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._events: deque[BufferedEvent] = deque()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_seq(self) -> int:
        return self._events[0].seq if self._events else 0

    def append(self, seq: int, frames: list[bytes]) -> None:
        if self._events and seq != self._events[-1].seq + 1:
            raise ValueError(f"seq {seq} does not follow {self._events[-1].seq}")
        size = sum(map(len, frames))
        self._events.append(BufferedEvent(seq, frames, size))
        self.bytes += size
        while len(self._events) > 1 and (len(self._events) > self.max_events or self.bytes > self.max_bytes):
            self.bytes -= self._events.popleft().size

    def since(self, since_seq: int, last_seq: int, limit: int) -> tuple[list[BufferedEvent], bool, bool]:
        """``(events with seq > since_seq, complete, more)``; complete is False when evicted events
        lie between ``since_seq`` and the oldest one still held."""
        if since_seq >= last_seq:
            return [], True, False
        if not self._events or self.first_seq > since_seq + 1:
            complete = False
            start = 0
        else:
            complete = True
            start = since_seq + 1 - self.first_seq
        events = list(islice(self._events, start, start + limit))
        more = (events[-1].seq if events else since_seq) < last_seq
        return events, complete, more


class Slot:
    """One attached extension host. All methods run on the bridge's event loop."""

    def __init__(self, name: str, socket_path: str, publish: Publish, config: SlotConfig) -> None:
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
        self._publish = publish
        self._topic = slot_topic(name)
        self._reader: asyncio.Task[None] | None = None
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
        frames = self._publish(topic, msg_type, content, parent)
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
        self._reader = asyncio.ensure_future(self._read_loop(conn))
        log.info("slot %s up: %s (host pid %d)", self.name, self.socket_path, conn.ack.pid)

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
            log.info("slot %s closed after CloseTask: %s", self.name, reason)
        else:
            log.warning("slot %s down: %s", self.name, reason)
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
        tasks = [
            t for t in (self._reader, self._reconnector) if t is not None and t is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        self._reader = self._reconnector = None
        return tasks

    def _fail_pending(self, error: SlotError) -> None:
        if self._pending_start is not None and not self._pending_start[0].done():
            self._pending_start[0].set_exception(error)
        for queue in self._pending_queries.values():
            while queue:
                fut, _ = queue.popleft()
                if not fut.done():
                    fut.set_exception(error)

    async def _read_loop(self, conn: ExtensionConnection) -> None:
        try:
            for n in itertools.count(1):
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # frames already buffered are read without yielding
                self._on_data(await conn.recv_data())
        except Disconnected as exc:
            reason = str(exc)
        except Exception as exc:  # a bug here must not leave the slot silently dead
            log.exception("slot %s reader failed", self.name)
            reason = f"reader failed: {exc!r}"
        await conn.close()
        if self.state == "up" and self.conn is conn:
            self._down(reason)
            self._reconnector = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """A host can come back on the same path (restarted simulator, reloaded window)."""
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

    def _on_data(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("type") != "TaskEvent":
            self.input.not_an_event(data)
            return
        event = data.get("data")
        try:
            name, task_id = event_route(event)
        except ProtocolError as exc:
            self.input.bad_event(exc, event)
            return
        assert isinstance(event, dict)
        if name not in KNOWN_EVENTS or (type(event.get("payload")) is not list and name not in NO_PAYLOAD):
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
        elif name in _RESPONSE_NAMES:
            parent = self._on_query_response(name, event.get("payload"))
        content = task_event_content(self.name, self._next_seq(), task_id, event)
        topic = task_topic(self.name, task_id) if task_id is not None else self._topic
        self._emit(topic, "task_event", content, parent)

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

    async def start_task(self, command: StartNewTask, parent: Header) -> str:
        """Send StartNewTask and return the id of the task it created."""
        async with self._start_lock:
            self._require_up()
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._pending_start = (fut, parent.to_dict())
            try:
                await self._send(command)
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

    def replay(self, since_seq: int, limit: int) -> tuple[list[BufferedEvent], bool, bool]:
        return self.buffer.since(since_seq, self.seq, limit)


def _expire(fut: asyncio.Future[Any], error: SlotError) -> None:
    if not fut.done():
        fut.set_exception(error)


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
