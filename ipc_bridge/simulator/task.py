"""One simulated task instance: its messages, token and tool usage, the throttled usage event, its clock.

A Roo task id can have several instances over time (CancelTask, ResumeTask and subtask delegation abort a
Task object and re-create one with the same id from history); :class:`TaskInstance` is one of them.

Everything a runner emits follows a *planned* timeline (:class:`Clock`): the agent advances planned time
with ``sleep``, and delayed emissions (the throttled ``taskTokenUsageUpdated``, ``taskIdle`` 2 s after an
ask) are timers on the same timeline, fired in planned order. So the order of events depends only on the
script, the seed and the delays, never on how the event loop happened to schedule things.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

EmitFn = Callable[..., None]
"""``emit(eventName, *payload)``: broadcast one TaskEvent to every client."""


class Clock:
    """Planned time of one runner, in real seconds since it started."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        self.now = 0.0
        self._timers: list[tuple[float, int, object, Callable[[], None]]] = []
        self._seq = itertools.count()

    def schedule(self, at: float, owner: object, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), owner, fn))

    def cancel(self, owner: object) -> None:
        """Drop the timers of ``owner`` (a task instance that was aborted or replaced)."""
        self._timers = [t for t in self._timers if t[2] is not owner]
        heapq.heapify(self._timers)

    async def _until(self, at: float) -> None:
        delay = self._origin + at - self._loop.time()
        # Yield even when late, so commands arriving meanwhile are handled between two emissions.
        await asyncio.sleep(max(0.0, delay))

    async def sleep(self, seconds: float) -> None:
        """Advance planned time, firing the timers that fall due on the way, in order."""
        target = self.now + max(0.0, seconds)
        while self._timers and self._timers[0][0] <= target:
            at, _, _, fn = heapq.heappop(self._timers)
            await self._until(at)
            self.now = max(self.now, at)
            fn()
        await self._until(target)
        self.now = target

    async def wait(self, future: asyncio.Future[T]) -> T:
        """Wait for ``future`` (e.g. a SendMessage), firing timers as they fall due meanwhile."""
        while not future.done():
            timeout = None
            if self._timers:
                timeout = max(0.0, self._origin + self._timers[0][0] - self._loop.time())
            await asyncio.wait({future}, timeout=timeout)
            if future.done():
                break
            if self._timers:
                at, _, _, fn = heapq.heappop(self._timers)
                self.now = max(self.now, at)
                fn()
        self.now = max(self.now, self._loop.time() - self._origin)
        return future.result()

    async def forever(self) -> None:
        """Go quiet for good (timers still fire); only cancellation ends this."""
        await self.wait(self._loop.create_future())


def _num(value: float) -> int | float:
    # JS prints integral numbers without a fraction; keep ints on the wire where the engine has them.
    return int(value) if float(value).is_integer() else value


@dataclass
class Tokens:
    """Cumulative token totals of a task (what TokenUsage reports)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cache_writes: int = 0
    cache_reads: int = 0
    cost: float = 0.0
    context: int = 0
    requests: int = 0

    def copy(self) -> Tokens:
        return Tokens(**self.__dict__)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"totalTokensIn": self.tokens_in, "totalTokensOut": self.tokens_out}
        if self.requests:
            # the engine adds the cache keys once a request has reported them
            out["totalCacheWrites"] = self.cache_writes
            out["totalCacheReads"] = self.cache_reads
        out["totalCost"] = _num(round(self.cost, 10))
        out["contextTokens"] = self.context
        return out


class UsageThrottle:
    """Roo's ``taskTokenUsageUpdated`` throttle: lodash debounce(2000, leading, trailing, maxWait 2000),
    emitting only when the usage changed since the last emission; ``flush`` forces it (before
    taskCompleted / taskAborted)."""

    def __init__(self, clock: Clock, window: float, emit: Callable[[], None], snapshot: Callable[[], Any]):
        self.clock = clock
        self.window = window
        self._emit = emit
        self._snapshot = snapshot
        self._last_invoke: float | None = None
        self._pending = False
        self._emitted: Any = None

    def call(self) -> None:
        now = self.clock.now
        if self._last_invoke is None or now - self._last_invoke >= self.window:
            self._invoke()
        elif not self._pending:
            self._pending = True
            self.clock.schedule(self._last_invoke + self.window, self, self._trailing)

    def flush(self) -> None:
        self.clock.cancel(self)
        self._pending = False
        self._invoke()

    def cancel(self) -> None:
        self.clock.cancel(self)
        self._pending = False

    def settle(self) -> None:
        """Fire a pending trailing edge now. Status events call this: in the engine the throttle window
        and the status delay are both 2 s, so the last usage always precedes taskIdle & co.; this keeps
        that order when the simulator's window is configured longer than its status delay."""
        if self._pending:
            self.flush()

    def _trailing(self) -> None:
        self._pending = False
        self._invoke()

    def _invoke(self) -> None:
        self._last_invoke = self.clock.now
        snap = self._snapshot()
        if snap != self._emitted:
            self._emitted = snap
            self._emit()


class TaskInstance:
    """One Task object of the engine: emits its own events and messages."""

    def __init__(
        self,
        task_id: str,
        *,
        emit: EmitFn,
        next_ts: Callable[[], int],
        clock: Clock,
        usage_window: float,
        tokens: Tokens | None = None,
        parent_id: str | None = None,
    ) -> None:
        self.id = task_id
        self.parent_id = parent_id
        self.clock = clock
        self.tokens = tokens.copy() if tokens is not None else Tokens()
        self.tool_usage: dict[str, dict[str, int]] = {}
        self.completed = False
        self.aborted = False
        self.queue: list[dict[str, Any]] = []
        self.answer: asyncio.Future[str] | None = None
        self._emit = emit
        self._next_ts = next_ts
        self._messages: dict[int, dict[str, Any]] = {}
        self.throttle = UsageThrottle(clock, usage_window, self._emit_usage, self._usage_snapshot)

    # ---------------------------------------------------------------------------------- events

    def event(self, name: str, *rest: Any) -> None:
        """An event whose payload starts with this task's id."""
        self._emit(name, self.id, *rest)

    def status(self, name: str) -> None:
        """A status event (taskIdle, taskInteractive, taskResumable) after its ask's delay."""
        self.throttle.settle()
        self.event(name)

    def schedule_status(self, name: str, delay: float) -> None:
        self.clock.schedule(self.clock.now + delay, self, lambda: self.status(name))

    def usage_payload(self) -> tuple[dict[str, Any], dict[str, Any]]:
        tools = {name: dict(stats) for name, stats in self.tool_usage.items()}
        return self.tokens.wire(), tools

    def _usage_snapshot(self) -> Any:
        return repr(self.usage_payload())

    def _emit_usage(self) -> None:
        self.event("taskTokenUsageUpdated", *self.usage_payload())

    def count_tool(self, name: str, *, failed: bool = False) -> None:
        stats = self.tool_usage.setdefault(name, {"attempts": 0, "failures": 0})
        stats["attempts"] += 1
        if failed:
            stats["failures"] += 1

    def add_request(
        self, tokens_in: int, tokens_out: int, cache_writes: int, cache_reads: int, cost: float
    ) -> None:
        t = self.tokens
        t.tokens_in += tokens_in
        t.tokens_out += tokens_out
        t.cache_writes += cache_writes
        t.cache_reads += cache_reads
        t.cost += cost
        t.context = tokens_in + tokens_out
        t.requests += 1

    # -------------------------------------------------------------------------------- messages

    def say(self, kind: str, text: str, partial: bool | None = None, **extra: Any) -> int:
        return self._create({"type": "say", "say": kind, "text": text}, partial, extra)

    def ask(self, kind: str, text: str, partial: bool | None = None, **extra: Any) -> int:
        return self._create({"type": "ask", "ask": kind, "text": text}, partial, extra)

    def update(self, ts: int, **changes: Any) -> None:
        """Re-send message ``ts`` whole with ``changes`` applied (action ``updated``)."""
        message = self._messages[ts]
        message.update(changes)
        self._send("updated", message)
        if not message.get("partial"):
            self.throttle.call()

    def _create(self, body: dict[str, Any], partial: bool | None, extra: dict[str, Any]) -> int:
        ts = self._next_ts()
        message: dict[str, Any] = {"ts": ts, **body}
        if partial is not None:
            message["partial"] = partial
        message.update(extra)
        self._messages[ts] = message
        self._send("created", message)
        self.throttle.call()
        return ts

    def _send(self, action: str, message: dict[str, Any]) -> None:
        self._emit("message", {"taskId": self.id, "action": action, "message": dict(message)})

    # ------------------------------------------------------------------------------- lifecycle

    def end(self) -> None:
        """This instance is gone (aborted or replaced): its timers must not fire any more."""
        self.throttle.cancel()
        self.clock.cancel(self)
        if self.answer is not None and not self.answer.done():
            self.answer.cancel()
