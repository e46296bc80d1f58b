"""A one-way pipe between two processes of a run's pool, carrying bytes as they are.

The pool's messages are pickled once by their sender, with the stdlib (:func:`orchestrator.run.pool.send`).
multiprocess's ``Queue`` pickled those bytes again, in its feeder thread, with dill's pure-Python pickler,
and unpickled them in ``get``: ~46 us a put and ~16 us a get on a loaded machine, for bytes that need
neither. Here a message is its length (8 bytes) then its bytes, written straight to the pipe.

* :meth:`Sender.put` never blocks, as ``Queue.put`` did not: it writes what the pipe takes at once (the
  whole message, usually) and leaves the rest to a feeder thread, started the first time the pipe is full.
  A reader that stops reading (a stopped worker) holds up only this pipe's feeder.
* :meth:`Receiver.read` never blocks either: it returns the messages complete so far and keeps a part
  for the next call. A writer killed in the middle of a message leaves only that part, which is dropped
  at the end of the pipe: no message is lost that was written whole, none is read twice, and the reader
  never waits for the rest of one.
* One writer and one reader per pipe (each worker has its own pipe back), so no lock between processes:
  a process killed while writing holds nothing that another process waits for.

Both ends are multiprocess ``Connection`` objects (``Pipe(duplex=False)`` of the pool's spawn context),
so that a worker receives its ends as arguments; only their file descriptors are used here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!Q")
_READ_SIZE = 1 << 20
_FEEDER_WAKE = 0.5
"""How often a feeder waiting for a full pipe looks whether its sender was closed meanwhile."""


class Sender:
    """The writing end of a pipe, in the process that writes (see the module)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # owns the file descriptor
        self._fd: int = conn.fileno()
        os.set_blocking(self._fd, False)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = bytearray()
        """What the pipe did not take yet, in order: the feeder writes it; ``put`` writes only when
        it is empty (every byte put before is then in the pipe), so nothing is reordered."""
        self._feeder: threading.Thread | None = None
        self._closed = False
        self._broken = False

    def put(self, data: bytes) -> None:
        """Send one message; returns at once."""
        head = _LENGTH.pack(len(data))
        with self._lock:
            if self._closed:
                raise ValueError("put on a closed sender")
            if self._broken:
                return  # the reader is gone (its process died): nobody will read it
            if self._pending:
                self._pending += head
                self._pending += data
                return
            try:
                written = os.writev(self._fd, [head, data])
            except BlockingIOError:
                written = 0
            except BrokenPipeError:
                self._broken = True
                return
            if written < len(head) + len(data):
                self._pending += (head + data)[written:]
                self._start_feeder()
                self._wake.notify()

    def _start_feeder(self) -> None:
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, name="channel-feeder", daemon=True)
            self._feeder.start()

    def _feed(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                select.select([], [self._fd], [], _FEEDER_WAKE)
            except (OSError, ValueError):
                return  # closed meanwhile
            with self._lock:
                if self._closed:
                    return
                try:
                    written = os.write(self._fd, self._pending)
                except BlockingIOError:
                    continue
                except OSError:
                    self._broken = True
                    self._pending.clear()
                    return
                del self._pending[:written]

    def close(self) -> None:
        """Close the pipe; what it had not taken yet is dropped (the reader's process is stopped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
            self._wake.notify()
            self._conn.close()


class Receiver:
    """The reading end of a pipe, in the process that reads (see the module)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # owns the file descriptor
        self._fd: int = conn.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = bytearray()
        self.ended = False
        """The writer's end is closed (its process ended): nothing more will come."""

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[bytes]:
        """The messages complete so far, oldest first, without waiting."""
        while not self.ended:
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                self.ended = True
                break
            self._buffer += chunk
            if len(chunk) < _READ_SIZE:
                break  # drained for now: the end of the pipe, if it came, is seen by the next read
        return self._messages()

    def _messages(self) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        size = len(self._buffer)
        while size - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer, start)
            end = start + _LENGTH.size + length
            if end > size:
                break
            out.append(bytes(self._buffer[start + _LENGTH.size : end]))
            start = end
        if start:
            del self._buffer[:start]
        if self.ended and self._buffer:
            log.warning("a pool pipe ended inside a message (%d bytes dropped)", len(self._buffer))
            self._buffer.clear()
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()
