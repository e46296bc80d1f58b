"""Running attempts' transcripts on a Ray run: a node cannot write into the driver's results directory
(perhaps on another machine), so it sends the live files' bytes to the run's event hub, which lives on the
driver's machine and appends them there (:func:`write_live`). Same files, same format as a local run's
(:mod:`orchestrator.run.live_transcript`).

One batch is in flight per node at a time, so each file's lines land in order; an attempt that ends
waits for the batch in flight (:meth:`HubChannel.settle`) and drops what it had not sent, so nothing of it
lands after its record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from orchestrator.results import live_transcripts

log = logging.getLogger(__name__)


class HubChannel:
    """A node's :class:`~orchestrator.run.live_transcript.Channel` to its run's hub (``hub.write_live``)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub
        self._buffer: list[tuple[str, bytes]] = []
        self._ready = asyncio.Event()
        self._sending: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def deliver(self, name: str, data: bytes) -> bool:
        self._buffer.append((name, data))
        self._ready.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._send_loop())
        return True

    async def _send_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                batch, self._buffer = self._buffer, []
                self._sending = asyncio.ensure_future(self._send(batch))
                await asyncio.shield(self._sending)
                self._sending = None

    async def _send(self, batch: list[tuple[str, bytes]]) -> None:
        try:
            await self._hub.write_live.remote(batch)
        except Exception as exc:  # the driver is gone or going: a live view is all that is lost
            log.warning("cannot send %d live transcript chunk(s) to the driver: %s", len(batch), exc)

    async def settle(self, name: str) -> None:
        self._buffer = [item for item in self._buffer if item[0] != name]
        sending = self._sending
        if sending is not None:
            await asyncio.shield(sending)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def write_live(live: Path, batch: list[tuple[str, bytes]]) -> None:
    """Append each chunk to its live file in ``live`` (the hub's side). Names come from the nodes: one
    that is not a plain transcript name is refused."""
    for name, data in batch:
        if not live_transcripts.valid_name(name):
            log.error("refused a live transcript named %r", name)
            continue
        try:
            os.close(live_transcripts.append(live / name, data))
        except OSError as exc:
            log.warning("%s: cannot write its live transcript: %s", name, exc)
