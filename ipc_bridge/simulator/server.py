"""An asyncio server speaking like Roo Code's ``IpcServer`` over node-ipc 12.0.0 (protocol notes 1.4, 2.1).

* Like node-ipc (``unlink=true``) it removes whatever is at the path before listening, so a second host on
  the same path takes it over; the socket file is made 0600.
* On connect it sends the Ack ``{clientId: 12 hex, pid, ppid}`` first; clients send nothing before it.
* Incoming frames that are not valid IpcMessages are logged and dropped, never answered (as Roo does).
  Only ``TaskCommand`` from a client is handled, and the command's own ``clientId`` is trusted for replies.
* Frames go out whole (one ``write`` of complete frames): node-ipc parses nothing until its buffer ends
  exactly on a delimiter. Like node-ipc there is no backpressure: a client that stops reading makes its
  transport buffer grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ipc_bridge.roo.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, decode_frame, encode_frame
from ipc_bridge.roo.protocol import AckMessage, TaskCommandMessage, parse_ipc_message
from ipc_bridge.roo.shapes import Ack, ProtocolError, WireModel

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024

CommandHandler = Callable[[str, TaskCommandMessage], None]
"""Called with the clientId the command carries and the command envelope, in arrival order."""


@dataclass
class ServerStats:
    connections: int = 0
    frames_in: int = 0
    bad_frames: int = 0
    frames_out: int = 0


class IpcServer:
    """The listening side of one extension socket."""

    def __init__(
        self,
        path: str,
        on_command: CommandHandler,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.path = path
        self.stats = ServerStats()
        self._on_command = on_command
        self._max_frame_size = max_frame_size
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[str, asyncio.StreamWriter] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._inode: int | None = None
        self._frozen = False

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"already listening on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=READ_CHUNK)
        # The engine leaves the mode to the umask; a private socket is the safer default for a test host.
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        log.info("listening on %s", self.path)

    # ------------------------------------------------------------------------------------ output

    def broadcast(self, message: WireModel) -> None:
        """Write one frame to every connected client (like ``ipc.server.broadcast``)."""
        if not self._clients:
            return
        frame = encode_frame(message)
        for client_id, writer in list(self._clients.items()):
            self._write(client_id, writer, frame)

    def send(self, client_id: str, message: WireModel) -> bool:
        """Write one frame to one client; a no-op (False) when the clientId is unknown, as in Roo."""
        writer = self._clients.get(client_id)
        if writer is None:
            log.info("reply for unknown client %s dropped", client_id)
            return False
        self._write(client_id, writer, encode_frame(message))
        return True

    def freeze(self) -> None:
        """Go silent like a stopped process: from now on nothing is sent (not even an Ack) and whatever
        clients send is read and dropped. Unlike a stopped process, :meth:`close` still works."""
        self._frozen = True

    def _write(self, client_id: str, writer: asyncio.StreamWriter, frame: bytes) -> None:
        if self._frozen:
            return
        if writer.is_closing():
            self._clients.pop(client_id, None)
            return
        writer.write(frame)
        self.stats.frames_out += 1

    # ----------------------------------------------------------------------------------- clients

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        client_id = secrets.token_hex(6)
        while client_id in self._clients:
            client_id = secrets.token_hex(6)
        self._clients[client_id] = writer
        self.stats.connections += 1
        log.info("client %s connected", client_id)
        try:
            ack = AckMessage(data=Ack(clientId=client_id, pid=os.getpid(), ppid=os.getppid()))
            self._write(client_id, writer, encode_frame(ack))
            await self._read_loop(client_id, reader)
        except (ConnectionError, OSError) as exc:
            log.info("client %s: %s", client_id, exc)
        finally:
            self._clients.pop(client_id, None)
            writer.close()
            if task is not None:
                self._handlers.discard(task)
            log.info("client %s disconnected", client_id)

    async def _read_loop(self, client_id: str, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(self._max_frame_size)
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                return
            if self._frozen:
                continue
            for frame in decoder.feed(chunk):
                self._handle_frame(client_id, frame)

    def _handle_frame(self, client_id: str, frame: bytes) -> None:
        try:
            message = parse_ipc_message(decode_frame(frame))
        except ProtocolError as exc:
            self.stats.bad_frames += 1
            log.warning("client %s: invalid frame dropped: %s", client_id, exc)
            return
        self.stats.frames_in += 1
        if not isinstance(message, TaskCommandMessage):
            log.warning("client %s: unhandled %s message ignored", client_id, message.type)
            return
        if message.clientId != client_id:
            # Roo trusts the clientId in the command (replies go there); note the mismatch only.
            log.info("command from %s carries clientId %s", client_id, message.clientId)
        try:
            self._on_command(message.clientId, message)
        except Exception:
            # a bug in one command must not take the connection (or the host) down
            log.exception("command %s failed", message.data.commandName)

    # --------------------------------------------------------------------------------- shutdown

    async def close(self) -> None:
        """Stop listening, close every connection, remove the socket file (if it is still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients.values()):
            writer.close()
        self._clients.clear()
        # Closing the transports ends each read loop with EOF; cancelling the handlers instead makes
        # asyncio's stream machinery log the cancellation as an error on Python 3.11.
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._unlink()

    def abort(self) -> None:
        """Die like a crashed process: connections reset, no goodbye, the socket file left behind."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients.values()):
            writer.transport.abort()
        self._clients.clear()

    def _unlink(self) -> None:
        # Another host may have taken the path over since (node-ipc unlinks before listening): leave theirs.
        try:
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._inode = None
