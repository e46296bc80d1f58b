"""The bridge's event side: one XPUB, a plain socket driven from the bridge's loop (:mod:`.zmq_loop`).

Publishing is the bridge's hot path (one message per extension event). An XPUB never blocks (it drops
at its HWM), so a plain ``DONTWAIT`` send loses nothing. The subscription frames that come back are read
by a :class:`~.zmq_loop.Reader`, which every publish pokes (a send can consume the FD's edge).

:meth:`Publisher.publish_task_events` signs every message of a batch first and then sends them back to back:
libzmq's I/O thread, woken by the first, then finds the others queued and writes them together, where
messages sent one by one between slower work wake it (and cost a ``sendmsg``) each.

An XPUB's queue per subscriber is bounded in messages (``SNDHWM``), not bytes: a subscriber that stops
reading holds the next HWM messages, whatever their size. So the publisher keeps the bytes of the last
HWM messages it sent within ``max_window_bytes``: an event that would go over is not sent live (it is in
the replay buffer all the same). Subscribers see the gap at the next event or ``hugz`` and fetch it with
``snapshot`` right away: a ``hugz`` with the slot's seq follows every batch that held events back.
That only happens in a flood of large events; control messages are always sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from pydantic import BaseModel

from ipc_bridge.log_limits import RateLimitedLog
from ipc_bridge.wire.messages import HugzContent
from ipc_bridge.wire.session import DELIM, EventContent, Session, slot_topic
from ipc_bridge.wire.zmq_loop import LAST, MORE, Reader, raw_send, send_frames

TaskEventOut = tuple[bytes, "dict[str, Any] | None", EventContent]
"""``(topic, parent, content)`` of a ``task_event``."""

log = logging.getLogger(__name__)

FRAME_OVERHEAD = 64
"""What a queued frame costs libzmq beyond its bytes (message and allocation headers)."""


class SendWindow:
    """The bytes of the last ``count`` messages sent, held within ``max_bytes``."""

    def __init__(self, count: int, max_bytes: int) -> None:
        self.count = max(1, count)
        self.max_bytes = max_bytes
        self.total = 0
        self.withheld = 0
        """Messages refused so far."""
        self._sizes: deque[int] = deque()

    def admit(self, size: int, force: bool = False) -> bool:
        """Whether a message of ``size`` may go now; counted in the window if so."""
        if not force and self.total + size > self.max_bytes and self._sizes:
            self.withheld += 1
            return False
        sizes = self._sizes
        sizes.append(size)
        self.total += size
        if len(sizes) > self.count:
            self.total -= sizes.popleft()
        return True


class Publisher:
    """Signs and sends; :meth:`publish` returns the frames for the replay buffer."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        session: Session,
        on_subscribe: Callable[[bytes], None],
        window: SendWindow | None = None,
    ) -> None:
        self.sock = sock
        self.window = window or SendWindow(sock.sndhwm, 2**62)
        self.session = session
        self._on_subscribe = on_subscribe
        self._reader = Reader(sock, self._on_frames)
        self._log = RateLimitedLog(log)  # once per event otherwise, in a flood

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reader.start(loop)

    def close(self, linger: int) -> None:
        self._reader.stop()
        self.sock.close(linger=linger)

    def publish(
        self,
        topic: bytes,
        msg_type: str,
        content: BaseModel | dict[str, Any],
        parent: dict[str, Any] | None,
    ) -> list[bytes]:
        """Sign and send ``[topic, DELIM, sig, header, parent, content]``; returns it without DELIM."""
        parts = self.session.serialize_event(msg_type, parent, content)
        self.window.admit(_cost(topic, parts), force=True)  # control messages: few and small
        try:
            send_frames(self.sock, [topic, DELIM, *parts])
        except zmq.ZMQError as exc:  # EAGAIN cannot happen on an XPUB without NODROP; anything else: log
            self._log.warning("event not published: %s", exc)
        self._reader.poke()
        return [topic, *parts]

    def publish_task_events(
        self, slot: str, first_seq: int, events: Sequence[TaskEventOut]
    ) -> list[tuple[bytes, ...]]:
        """Publish ``task_event``\\s of ``slot`` numbered from ``first_seq``, in order; returns their
        frames (without DELIM) for the replay buffer. All are signed first, then sent back to back."""
        batch = self.session.serialize_batch(
            "task_event", [(parent, content) for _, parent, content in events]
        )
        out = [(event[0], *parts) for event, parts in zip(events, batch, strict=True)]
        sock = self.sock
        admit = self.window.admit
        withheld = -1  # the last seq not sent live
        try:
            for i, frames in enumerate(out):
                topic, signature, header, parent_frame, content_frame = frames
                # _cost(topic, frames[1:]), inline: once per event.
                size = (
                    len(topic) + len(signature) + len(header) + len(parent_frame) + len(content_frame)
                ) + 6 * FRAME_OVERHEAD
                if not admit(size):
                    self._log.info("event of %d bytes not sent live: the XPUB queues' bound", size)
                    withheld = first_seq + i
                    continue
                raw_send(sock, topic, MORE)
                raw_send(sock, DELIM, MORE)
                raw_send(sock, signature, MORE)
                raw_send(sock, header, MORE)
                raw_send(sock, parent_frame, MORE)
                raw_send(sock, content_frame, LAST)
        except zmq.ZMQError as exc:
            self._log.warning("events not published: %s", exc)
        if withheld >= 0:
            # Subscribers learn at once that they are behind, and fetch what they missed by snapshot.
            self.publish(slot_topic(slot), "hugz", HugzContent(slot=slot, seq=withheld, state="up"), None)
        self._reader.poke()
        return out

    def _on_frames(self, frames: list[bytes]) -> None:
        """JEP 65: subscribe frames start with 0x01 (unsubscribes with 0x00)."""
        if frames[0][:1] == b"\x01":
            self._on_subscribe(frames[0][1:])


def _cost(topic: bytes, parts: Sequence[bytes]) -> int:
    """What one message costs in a subscriber's queue: its frames, DELIM included."""
    return len(topic) + sum(map(len, parts)) + (len(parts) + 2) * FRAME_OVERHEAD
