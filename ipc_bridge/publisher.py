"""The bridge's event side: one XPUB, a plain socket driven from the bridge's loop (:mod:`.zmq_loop`).

Publishing is the bridge's hot path (one message per extension event). An XPUB never blocks (it drops
at its HWM), so a plain ``DONTWAIT`` send loses nothing. The subscription frames that come back are read
by a :class:`~.zmq_loop.Reader`, which every publish pokes (a send can consume the FD's edge).

:meth:`Publisher.publish_many` signs every message of a batch first and then sends them back to back:
libzmq's I/O thread, woken by the first, then finds the others queued and writes them together, where
messages sent one by one between slower work wake it (and cost a ``sendmsg``) each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from pydantic import BaseModel

from .wire import DELIM, Session
from .zmq_loop import LAST, MORE, Reader, raw_send, send_frames

OutEvent = tuple[bytes, str, "BaseModel | dict[str, Any]", "dict[str, Any] | None"]
"""``(topic, msg_type, content, parent)``"""

log = logging.getLogger(__name__)


class Publisher:
    """Signs and sends; :meth:`publish` returns the frames for the replay buffer."""

    def __init__(
        self, sock: zmq.Socket[bytes], session: Session, on_subscribe: Callable[[bytes], None]
    ) -> None:
        self.sock = sock
        self.session = session
        self._on_subscribe = on_subscribe
        self._reader = Reader(sock, self._on_frames)

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
        try:
            send_frames(self.sock, [topic, DELIM, *parts])
        except zmq.ZMQError as exc:  # EAGAIN cannot happen on an XPUB without NODROP; anything else: log
            log.warning("event not published: %s", exc)
        self._reader.poke()
        return [topic, *parts]

    def publish_many(self, events: Sequence[OutEvent]) -> list[tuple[bytes, ...]]:
        """:meth:`publish` for each of ``events``, in order; returns their frames (without DELIM)."""
        serialize = self.session.serialize_event
        out = [(topic, *serialize(msg_type, parent, content)) for topic, msg_type, content, parent in events]
        sock = self.sock
        try:
            for frames in out:
                topic, signature, header, parent_frame, content_frame = frames
                raw_send(sock, topic, MORE)
                raw_send(sock, DELIM, MORE)
                raw_send(sock, signature, MORE)
                raw_send(sock, header, MORE)
                raw_send(sock, parent_frame, MORE)
                raw_send(sock, content_frame, LAST)
        except zmq.ZMQError as exc:
            log.warning("events not published: %s", exc)
        self._reader.poke()
        return out

    def _on_frames(self, frames: list[bytes]) -> None:
        """JEP 65: subscribe frames start with 0x01 (unsubscribes with 0x00)."""
        if frames[0][:1] == b"\x01":
            self._on_subscribe(frames[0][1:])
