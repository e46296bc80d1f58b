"""What an attempt needs of the bridge client (:class:`AttemptBridge`, which ipc_bridge's BridgeClient
is), and its slot's events as the attempt reads them: one stream read with deadlines
(:class:`SlotEvents`), kept in the transcript as received (:func:`transcript_row`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ipc_bridge.client.types import BridgeError, BridgeRestarted, Event

T = TypeVar("T")


class AttemptBridge(Protocol):
    """The bridge client as :class:`~orchestrator.run.attempt.AttemptRunner` uses it:
    :class:`ipc_bridge.client.bridge_client.BridgeClient`, or a fake in the tests."""

    on_restart: list[Callable[[BridgeRestarted], None]]
    """Called when the bridge is found restarted: the slots of the old one are gone."""

    async def attach(self, slot: str, socket_path: str, connect_timeout: float = 30.0) -> object: ...

    async def detach(self, slot: str) -> None: ...

    async def start_task(
        self,
        slot: str,
        text: str,
        configuration: dict[str, Any] | None = None,
        *,
        start_timeout: float | None = None,
    ) -> str:
        """StartNewTask; the id of the task it created (the bridge saw its taskCreated)."""
        ...

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
        """attach, then StartNewTask, in one request: the new task's id. A failed attach raises its
        CommandError (nothing attached); a failed start raises StartFailed (the slot is attached)."""
        ...

    async def close_detach(self, slot: str) -> bool:
        """CloseTask, then detach, in one request; whether the CloseTask went out."""
        ...

    def events(self, slot: str, since_seq: int | None = None) -> AsyncIterator[Event]:
        """The slot's events in seq order; a BridgeError ends the stream."""
        ...

    async def cancel(self, slot: str) -> None: ...

    async def close_task(self, slot: str) -> None: ...


class SlotEvents:
    """A slot's event stream read with deadlines. The stream's own inbox is the attempt's one queue: the
    pending read survives a deadline (cancelling it, as ``wait_for`` would, closes the stream), and a
    bridge restart (``restart`` set) ends the stream at once, not when the client notices it."""

    def __init__(
        self, stream: AsyncIterator[Event], restart: asyncio.Event, restarted: Callable[[], str]
    ) -> None:
        self._stream = stream
        self._restarted = restarted
        # Reading starts now: the stream subscribes while the attempt still waits for its slot.
        self._next: asyncio.Future[Event] | None = asyncio.ensure_future(anext(stream))
        self._restart = asyncio.ensure_future(restart.wait())
        self._ended = False

    async def get(self, timeout: float) -> Event | None:
        """The next event, or None when none came within ``timeout``. Raises the error that ended the
        stream once; after that, no event ever comes."""
        if self._ended:
            await asyncio.sleep(timeout)  # a deadline to sit out: nothing else can arrive
            return None
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._stream))
        await _first_of(self._next, self._restart, timeout)
        if self._next.done():
            ready, self._next = self._next, None
            try:
                return ready.result()
            except BaseException:
                self._ended = True
                raise
        if self._restart.done():
            self._ended = True
            raise BridgeError(self._restarted())
        return None

    async def ready(self) -> list[Event]:
        """The events already received, without waiting for more: those that predate a command."""
        out: list[Event] = []
        with contextlib.suppress(Exception):
            while (event := await self.get(0)) is not None:
                out.append(event)
        return out

    async def aclose(self) -> None:
        self._restart.cancel()
        if self._next is not None and not self._next.done():
            self._next.cancel()
        with contextlib.suppress(BaseException):
            if self._next is not None:
                await self._next
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _first_of(a: asyncio.Future[Any], b: asyncio.Future[Any], timeout: float) -> None:
    """Until ``a`` or ``b`` is done, or ``timeout`` has passed: ``asyncio.wait(..., FIRST_COMPLETED)``
    without the sets and checks it makes per call (~6 us of a worker's CPU per event). Neither future
    is cancelled, whatever happens, as with ``asyncio.wait``."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    a.add_done_callback(wake)
    b.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        a.remove_done_callback(wake)
        b.remove_done_callback(wake)


def is_partial(event: dict[str, Any]) -> bool:
    """Whether a raw Roo TaskEvent is a ``message`` with ``partial: true`` (a streamed update that a
    later one replaces: the metrics count it, the transcript leaves it out)."""
    if event.get("eventName") != "message":
        return False
    payload = event.get("payload")
    first = payload[0] if isinstance(payload, list) and payload else None
    message = first.get("message") if isinstance(first, dict) else None
    return isinstance(message, dict) and message.get("partial") is True


def transcript_row(t: float, seq: int | None, event: dict[str, Any]) -> dict[str, Any]:
    """One line of an attempt's transcript: the event as the bridge relayed it, not re-serialised."""
    return {"t": round(t, 4), "dir": "in", "seq": seq, "event": event}


async def unless_restart(request: Awaitable[T], restart: asyncio.Event, restarted: Callable[[], str]) -> T:
    """Await a bridge request, ended by BridgeError (``restarted()`` its words) as soon as ``restart``
    is set.

    The slot of an attempt lives on the bridge it was attached to; once that bridge is gone, what
    was in flight may have gone with it: a request would only be resent to the successor after its
    whole timeout (30-40 s for attach and StartNewTask), the attempt then timing out as if its host
    were silent."""
    waiter = asyncio.ensure_future(restart.wait())
    task = asyncio.ensure_future(request)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        raise BridgeError(restarted())
    return task.result()
