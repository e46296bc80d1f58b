"""The bridge's event side: one XPUB, a plain socket driven from the bridge's loop (:mod:`.zmq_loop`).

Publishing is the bridge's hot path (one message per extension event). An XPUB never blocks (it drops
at its HWM), so a plain ``DONTWAIT`` send loses nothing. The subscription frames that come back are read
by a :class:`~.zmq_loop.Reader`, which every publish kicks (a send can consume the FD's edge).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
from pydantic import BaseModel

from .wire import DELIM, Session
from .zmq_loop import Reader, send_frames

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
        self._reader.kick()
        return [topic, *parts]

    def _on_frames(self, frames: list[bytes]) -> None:
        """JEP 65: subscribe frames start with 0x01 (unsubscribes with 0x00)."""
        if frames[0][:1] == b"\x01":
            self._on_subscribe(frames[0][1:])
