"""Start the bridge in its own process and stop it in stages (for the orchestrator and the tests).

The child is a fresh interpreter (``python -m ipc_bridge.server.cli``), never a fork, so it creates its
own zmq context. Readiness is a line on an inherited pipe, written once the sockets are bound and the
connection file exists; the launcher then proves the bridge answers with a heartbeat. No polling for
files and no sleeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import zmq
import zmq.asyncio
from pydantic import BaseModel

from ipc_bridge.lifeline import preexec_die_with_parent
from ipc_bridge.redaction import send_secrets
from ipc_bridge.wire.connection_file import (
    KEY_ENV,
    ConnectionInfo,
    endpoint_path,
    ensure_runtime_dir,
    read_connection_file,
)
from ipc_bridge.wire.messages import (
    ErrorReply,
    HeartbeatReply,
    HeartbeatRequest,
    ShutdownRequest,
    parse_reply,
)
from ipc_bridge.wire.session import Message, Session, WireError, new_key

log = logging.getLogger(__name__)

DEFAULT_CONNECTION_FILE = "bridge.json"


class BridgeStartError(RuntimeError):
    """The bridge process exited or stayed silent before it was ready."""


def process_context() -> zmq.asyncio.Context:
    """This process's one zmq context (created lazily, after any fork or spawn)."""
    return zmq.asyncio.Context.instance()


def _sync_context() -> zmq.Context[zmq.Socket[bytes]]:
    # A synchronous view of the same libzmq context, so that the process still has exactly one.
    return zmq.Context.shadow(process_context().underlying)


def sync_request(
    info: ConnectionInfo, msg_type: str, content: BaseModel, timeout: float = 2.0
) -> Message | None:
    """One request/reply on a throwaway DEALER; None on timeout. For supervision, not for workers."""
    session = Session(info.key, signature_scheme=info.signature_scheme)
    sock = _sync_context().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(info.command_endpoint)
        msg_id = session.new_msg_id()
        sock.send_multipart(session.serialize(msg_type, content, msg_id=msg_id))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(int(remaining * 1000) + 1):
                return None
            try:
                reply = session.deserialize(sock.recv_multipart())
            except WireError as exc:
                log.warning("bad reply from the bridge: %s", exc)
                continue
            if reply.parent_msg_id == msg_id:
                return reply
        return None
    finally:
        sock.close(linger=0)


class BridgeProcess:
    """A running bridge child process. ``connection`` is what workers need to connect."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        connection_file: Path,
        connection: ConnectionInfo,
        key: str,
    ) -> None:
        self.process = process
        self.connection_file = connection_file
        self.connection = connection
        self.key = key

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def heartbeat(self, timeout: float = 2.0) -> HeartbeatReply | None:
        reply = sync_request(self.connection, "heartbeat", HeartbeatRequest(), timeout)
        parsed = parse_reply("heartbeat", reply.content) if reply is not None else None
        return parsed if isinstance(parsed, HeartbeatReply) else None

    def stop(self, timeout: float = 5.0) -> int:
        """``shutdown`` command, wait T/2, SIGTERM, wait T/2, SIGKILL (like jupyter's KernelManager)."""
        if self.alive():
            reply = sync_request(self.connection, "shutdown", ShutdownRequest(), timeout / 4)
            parsed = parse_reply("shutdown", reply.content) if reply is not None else None
            if isinstance(parsed, ErrorReply):
                log.warning("shutdown refused: %s", parsed.reason)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.alive():
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(sig)
            try:
                self.process.wait(timeout / 2)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.process.returncode is None:
            self.process.wait()
        self._cleanup_files()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, reap, and remove what the bridge could not (its ipc files and connection file)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        paths = [
            endpoint_path(self.connection.command_endpoint),
            endpoint_path(self.connection.event_endpoint),
        ]
        # The files belong to a dead bridge only if no successor holds the lock on the runtime dir.
        with contextlib.suppress(OSError):
            current = read_connection_file(self.connection_file)
            if current.bridge_pid != self.pid:
                return
            paths.append(self.connection_file)
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            self.stop()


def start_bridge_process(
    runtime_dir: str | os.PathLike[str],
    *,
    connection_file: str | os.PathLike[str] | None = None,
    attach: Mapping[str, str] | None = None,
    key: str | None = None,
    args: Sequence[str] = (),
    timeout: float = 15.0,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[bytes] | None = None,
    secrets: Iterable[str] = (),
) -> BridgeProcess:
    """Spawn ``python -m ipc_bridge.server.cli`` and return once it is serving and answers a heartbeat.

    ``key`` reuses an HMAC key (a restarted bridge that workers can still verify); ``args`` are extra
    ``orchestrate bridge`` options such as ``("--start-timeout", "5")``; ``env`` is its environment
    (default: this process's) to which the key is added; ``secrets`` never appear in its log (they go
    through a pipe, not its environment or command line).
    """
    runtime = ensure_runtime_dir(runtime_dir)
    conn_file = Path(connection_file) if connection_file is not None else runtime / DEFAULT_CONNECTION_FILE
    key = key or new_key()
    argv = [
        sys.executable,
        "-m",
        "ipc_bridge.server.cli",
        "--connection-file",
        str(conn_file),
        "--runtime-dir",
        str(runtime),
    ]
    for slot, path in (attach or {}).items():
        argv += ["--attach", f"{slot}={path}"]
    child_env: dict[str, Any] = dict(os.environ if env is None else env)
    child_env[KEY_ENV] = key
    secrets = sorted(set(secrets))
    read_fd, write_fd = os.pipe()
    secrets_r, secrets_w = os.pipe() if secrets else (-1, -1)
    if secrets:
        argv += ["--secrets-fd", str(secrets_r)]
    try:
        process = subprocess.Popen(
            [*argv, "--ready-fd", str(write_fd), *args],
            pass_fds=(write_fd, secrets_r) if secrets else (write_fd,),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stderr=stderr,  # its log (None: inherited)
            # Its own session: a terminal's Ctrl-C goes to the orchestrator, which stops the bridge
            # last, in order. SIGTERM when the parent dies outright, so the bridge cleans up its files.
            start_new_session=True,
            preexec_fn=preexec_die_with_parent(signal.SIGTERM),
        )
    except BaseException:
        os.close(read_fd)
        if secrets:
            os.close(secrets_w)
        raise
    finally:
        os.close(write_fd)
        if secrets:
            os.close(secrets_r)
    if secrets:
        # After the spawn: the child reads while this writes, whatever the pipe's capacity. A child
        # that died meanwhile is reported by the ready line below.
        with contextlib.suppress(BrokenPipeError):
            send_secrets(secrets_w, secrets)
    try:
        line = _read_ready(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line != b"ready\n":
        if process.poll() is None:
            process.kill()
        code = process.wait()
        raise BridgeStartError(f"bridge did not become ready (exit code {code}, said {line!r})")
    bridge = BridgeProcess(process, conn_file, read_connection_file(conn_file), key)
    if bridge.heartbeat(timeout) is None:
        bridge.kill()
        raise BridgeStartError("bridge is up but does not answer a heartbeat")
    return bridge


def _read_ready(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data
