"""A fake bridge client (:class:`orchestrator.run.slot_events.AttemptBridge`) whose one host replays a
recorded event sequence (``tests/fixtures/recordings/``) on the loop's clock: the slot's history at
attach, the task's events after StartNewTask, the host's answer after CancelTask. It can also freeze the
host, drop its connection, refuse the attach, end the host before the task starts and restart the
bridge, as the real ones do. ``commands`` logs what reached the host, ``requests`` the round trips."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ipc_bridge.client.task_commands import StartFailed
from ipc_bridge.client.types import (
    BridgeError,
    BridgeRestarted,
    CommandError,
    CommandTimeout,
    Event,
    SlotDown,
)
from ipc_bridge.roo.events import event_route
from ipc_bridge.wire.messages import SlotInfo
from ipc_bridge.wire.session import Header
from tests.conftest import load_recording

Raw = dict[str, Any]


@dataclass
class HostScript:
    """What the fake host does. Times are seconds after the command that caused the event."""

    history: list[Raw] = field(default_factory=list)
    """The slot's events before our StartNewTask: the stream replays them first."""
    after_start: list[tuple[float, Raw]] = field(default_factory=list)
    after_cancel: list[tuple[float, Raw]] = field(default_factory=list)
    frozen_after: float | None = None
    """The host stops (SIGSTOP) this long after StartNewTask: no event, no answer to CancelTask."""
    down_after: float | None = None
    """The host's connection drops this long after StartNewTask (the bridge publishes slot_down)."""
    refuse_attach: CommandError | None = None
    """The attach fails with this (``connect_failed``, say): nothing is attached."""
    down_before_start: bool = False
    """The host's connection drops once attached, before the StartNewTask reaches it."""

    @classmethod
    def recorded(cls, name: str, **kwargs: Any) -> HostScript:
        """From a recording: its last StartNewTask is ours; what came before it is the slot's history,
        what follows a CancelTask after it is the host's answer."""
        rows = load_recording(name)
        outs = [i for i, r in enumerate(rows) if r["dir"] == "out"]
        ours = max(i for i in outs if rows[i]["msg"]["data"].get("commandName") == "StartNewTask")
        cancels = [i for i in outs if i > ours and rows[i]["msg"]["data"].get("commandName") == "CancelTask"]
        end = next((i for i in outs if i > ours), len(rows))

        def events(first: int, last: int, t0: float) -> list[tuple[float, Raw]]:
            return [
                (r["t"] / 1000 - t0, r["msg"]["data"])
                for r in rows[first:last]
                if r["dir"] == "in" and r["msg"]["type"] == "TaskEvent"
            ]

        script = cls(
            history=[e for _, e in events(0, ours, 0.0)],
            after_start=events(ours + 1, end, rows[ours]["t"] / 1000),
            **kwargs,
        )
        if cancels:
            c = cancels[0]
            stop = next((i for i in outs if i > c), len(rows))
            script.after_cancel = events(c + 1, stop, rows[c]["t"] / 1000)
        return script


class FakeBridge:
    """One slot at a time; ``commands`` logs what the runner sent, with the loop's time."""

    def __init__(self, script: HostScript) -> None:
        self.script = script
        self.on_restart: list[Callable[[BridgeRestarted], None]] = []
        self.commands: list[tuple[float, str]] = []
        self.requests: list[str] = []
        self._down = False
        self.session = "s1"
        self._log: list[Event] = []
        self._seen: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._error: BridgeError | None = None
        self._pending: list[asyncio.TimerHandle] = []
        self._started_at: float | None = None
        self._created: asyncio.Future[str] | None = None
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------------------ what tests do

    def restart(self) -> None:
        """The bridge restarted: the client tells its listeners and ends every stream."""
        restarted = BridgeRestarted(self.session, "s2")
        self.session = "s2"
        for callback in list(self.on_restart):
            callback(restarted)
        self._fail(restarted)

    def names(self) -> list[str]:
        return [name for _, name in self.commands]

    # ---------------------------------------------------------------------------- the Protocol

    async def attach(self, slot: str, socket_path: str, connect_timeout: float = 30.0) -> object:
        self.requests.append("attach")
        return self._attach(slot, socket_path)

    async def detach(self, slot: str) -> None:
        self.requests.append("detach")
        self._note("detach")

    async def start_task(
        self,
        slot: str,
        text: str,
        configuration: dict[str, Any] | None = None,
        *,
        start_timeout: float | None = None,
    ) -> str:
        self.requests.append("task_command")
        return await self._start_task(slot, start_timeout)

    async def attach_start(
        self,
        slot: str,
        socket_path: str,
        text: str,
        configuration: dict[str, Any] | None = None,
        *,
        connect_timeout: float = 30.0,
        start_timeout: float | None = None,
    ) -> str:
        self.requests.append("attach_start")
        self._attach(slot, socket_path)
        try:
            return await self._start_task(slot, start_timeout)
        except CommandError as exc:  # as the bridge: attached, not started
            raise StartFailed(exc, SlotInfo(slot=slot, state="up", socket_path=socket_path)) from None

    async def close_detach(self, slot: str) -> bool:
        self.requests.append("close_detach")
        closed = not self._down
        if closed:
            self._note("CloseTask")
        self._note("detach")
        return closed

    async def events(self, slot: str, since_seq: int | None = None) -> AsyncIterator[Event]:
        last = since_seq or 0
        while True:
            while last < len(self._log):
                last += 1
                yield self._log[last - 1]
            if self._error is not None:
                raise self._error
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def cancel(self, slot: str) -> None:
        self.requests.append("task_command")
        self._note("CancelTask")
        for handle in self._pending:
            handle.cancel()  # the host's task takes another course
        if self._frozen():
            return  # the bridge wrote the command to the socket; nobody reads it
        self._play(slot, self.script.after_cancel)

    async def close_task(self, slot: str) -> None:
        self.requests.append("task_command")
        self._note("CloseTask")

    # ------------------------------------------------------------------------------- internals

    def _attach(self, slot: str, socket_path: str) -> object:
        if self.script.refuse_attach is not None:
            raise self.script.refuse_attach
        self._note("attach")
        self._publish(slot, "slot_up", {"socket_path": socket_path, "client_id": "c", "pid": 1})
        for raw in self.script.history:
            self._task_event(slot, raw)
        if self.script.down_before_start:
            self._down_now(slot)
        return slot

    async def _start_task(self, slot: str, start_timeout: float | None) -> str:
        if self._down:
            raise SlotDown(
                "slot_down", f"slot {slot} down: connection closed by the extension host", "task_command"
            )
        self._note("StartNewTask")
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self._created = loop.create_future()
        script = self.script
        frozen = script.frozen_after
        self._play(slot, [(t, raw) for t, raw in script.after_start if frozen is None or t < frozen])
        if script.down_after is not None:
            self._pending.append(loop.call_later(script.down_after, self._down_now, slot))
        timeout = 30.0 if start_timeout is None else start_timeout
        try:
            # As the bridge: the reply waits for the first taskCreated of a task the slot never saw.
            return await asyncio.wait_for(asyncio.shield(self._created), timeout)
        except asyncio.TimeoutError:
            raise CommandTimeout("timeout", f"no taskCreated within {timeout:g} s", "task_command") from None
        finally:
            self._created = None

    def _note(self, name: str) -> None:
        self.commands.append((asyncio.get_running_loop().time(), name))

    def _frozen(self) -> bool:
        frozen, started = self.script.frozen_after, self._started_at
        return (
            frozen is not None
            and started is not None
            and asyncio.get_running_loop().time() >= started + frozen
        )

    def _play(self, slot: str, events: list[tuple[float, Raw]]) -> None:
        """Publish ``events`` at their times; those of one instant at once, in order (timers due at the
        same time may run in any order)."""
        loop = asyncio.get_running_loop()
        by_time: dict[float, list[Raw]] = {}
        for delay, raw in events:
            by_time.setdefault(delay, []).append(raw)
        for delay, batch in by_time.items():
            self._pending.append(loop.call_later(delay, self._task_events, slot, batch))

    def _task_events(self, slot: str, batch: list[Raw]) -> None:
        for raw in batch:
            self._task_event(slot, raw)

    def _task_event(self, slot: str, raw: Raw) -> None:
        name, task_id = event_route(raw)
        if task_id is not None and task_id not in self._seen:
            self._seen.add(task_id)
            if name == "taskCreated" and self._created is not None and not self._created.done():
                self._created.set_result(task_id)
        self._publish(slot, "task_event", {"task_id": task_id, "event": raw})

    def _down_now(self, slot: str) -> None:
        self._down = True
        self._publish(slot, "slot_down", {"reason": "the extension closed the connection"})

    def _publish(self, slot: str, msg_type: str, content: dict[str, Any]) -> None:
        header = Header(msg_id=f"m{next(self._ids)}", session=self.session, msg_type=msg_type)
        seq = len(self._log) + 1
        self._log.append(Event(msg_type, header, {}, {"slot": slot, "seq": seq, **content}, slot.encode()))
        self._wake()

    def _fail(self, error: BridgeError) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
