"""A running attempt's transcript, shown while it grows (``orchestrate view``'s live attempt page).

:class:`LiveTranscript` is the list :class:`~orchestrator.run.attempt.AttemptRunner` collects an
attempt's transcript rows in (partial messages never reach it), which also hands them, a few times a
second, to a :class:`Channel` that appends them to the attempt's live file
(:mod:`orchestrator.results.live_transcripts`):

* :class:`FileChannel`: a local run's worker writes into the run directory itself (no round trip through
  the main process, which stays the scheduler's);
* :class:`orchestrator.ray.live.HubChannel`: a Ray node sends them to its run's hub, on the driver's
  machine, which writes them.

Rows are encoded and redacted only when flushed (every :data:`FLUSH_S`), so an attempt that ends sooner
costs a timer and nothing else; a write that fails costs the attempt its live view, never its record.
The channel is settled when the attempt ends (:meth:`LiveTranscript.close`), before its result goes to
the writer: no line can land after the record that removes the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import orjson

from ipc_bridge.redaction import Redactor
from orchestrator.results import live_transcripts
from orchestrator.run.jobs import Job

log = logging.getLogger(__name__)

FLUSH_S = 0.2
"""How long a row may wait before it is written: well within the 1 s a viewer may take to show it."""


class Channel(Protocol):
    """Where a live transcript's bytes go."""

    def deliver(self, name: str, data: bytes) -> bool:
        """Append ``data`` to live file ``name`` (made by its first delivery); False if it cannot be."""

    async def settle(self, name: str) -> None:
        """``name``'s attempt has ended: nothing of it may be written after this returns."""


class LiveTranscript(list[dict[str, Any]]):
    """An attempt's transcript rows (a list, pickled as a plain one), each also flushed to ``channel``."""

    def __init__(self, channel: Channel, name: str, head: dict[str, Any], redactor: Redactor) -> None:
        super().__init__()
        self._channel = channel
        self._name = name
        self._head: dict[str, Any] | None = head
        self._redactor = redactor
        self._flushed = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def append(self, row: dict[str, Any], /) -> None:
        super().append(row)
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._closed:
            return
        rows = self[self._flushed :]
        self._flushed = len(self)
        data = live_transcripts.encode(rows, self._redactor)
        if self._head is not None:
            data = orjson.dumps(self._redactor(self._head)) + b"\n" + data
            self._head = None
        if not self._channel.deliver(self._name, data):
            self._closed = True  # no live view for this attempt; its record is not affected

    async def close(self) -> None:
        """The attempt has ended: no more flushes; what was sent has landed when this returns."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._channel.settle(self._name)

    def __reduce__(self) -> tuple[Any, ...]:
        # A list and its items, as a list pickles (no copy): the channel stays behind.
        return (list, (), None, iter(self))


class LiveLog:
    """Makes each attempt's :class:`LiveTranscript` (one per worker process or Ray node actor)."""

    def __init__(self, channel: Channel, redactor: Redactor, node: str | None = None) -> None:
        self._channel = channel
        self._redactor = redactor
        self._node = node

    def transcript(self, job: Job, slot: str) -> LiveTranscript:
        key = job.attempt.key
        head = live_transcripts.header(
            key.case_id,
            key.model_id,
            key.repeat,
            job.number,
            config_hash=key.config_hash,
            started_at=datetime.now(timezone.utc).isoformat(),
            slot=slot,
            node=self._node,
            tags=job.attempt.tags,
        )
        return LiveTranscript(self._channel, key.events_name(job.number), head, self._redactor)


class FileChannel:
    """Live files written by this process, in ``run_dir``'s ``live/`` (made by the run's writer)."""

    def __init__(self, run_dir: Path) -> None:
        self._dir = live_transcripts.live_dir(run_dir)
        self._fds: dict[str, int] = {}

    def deliver(self, name: str, data: bytes) -> bool:
        try:
            self._fds[name] = live_transcripts.append(self._dir / name, data, self._fds.get(name))
        except OSError as exc:
            self._fds.pop(name, None)  # closed by append
            log.warning("%s: no live transcript: %s", name, exc)
            return False
        return True

    async def settle(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
