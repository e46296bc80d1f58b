"""The bridge's connection file, its private runtime directory and its single-instance lock.

Like a Jupyter kernel's connection file: the endpoints and the HMAC key a worker needs, written 0600
because the key lets anyone who reads it drive every extension host. The ipc endpoints live in a 0700
runtime directory (connecting to an ipc socket needs write access to it, so the directory is the access
check). A lock file held with ``flock`` guards the directory, because a second ``bind`` on an ipc path
succeeds and silently steals the endpoint from the first bridge.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import Literal

import zmq
from pydantic import BaseModel, ConfigDict

from ipc_bridge.wire.session import PROTOCOL, SIGNATURE_SCHEME, VERSION

KEY_ENV = "ORCHESTRATE_BRIDGE_KEY"
"""The HMAC key may come from the environment (never argv: other users can read argv with ps)."""

COMMAND_SOCKET = "bridge-cmd.ipc"
EVENT_SOCKET = "bridge-ev.ipc"
LOCK_FILE = "bridge.lock"


class BridgeAlreadyRunning(RuntimeError):
    """Another live bridge holds the runtime directory's lock."""


class ConnectionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    transport: Literal["ipc", "tcp"] = "ipc"
    command_endpoint: str
    """ROUTER: workers connect a DEALER here."""
    event_endpoint: str
    """XPUB: workers connect a SUB here."""
    key: str
    signature_scheme: str = SIGNATURE_SCHEME
    bridge_pid: int
    session: str
    """The bridge's session id; a different session in a message means the bridge restarted."""
    runtime_dir: str
    protocol: str = PROTOCOL
    hugz_interval: float | None = None
    """How often the bridge publishes hugz when idle (s); None from a 1.0 bridge."""
    version: str = VERSION
    # TCP only (wire-format.md "TCP and CURVE"); absent from ipc files and from older bridges' files.
    curve_serverkey: str | None = None
    """The bridge's CURVE public key (Z85); None on a bridge serving plain TCP (``--insecure``)."""
    curve_publickey: str | None = None
    curve_secretkey: str | None = None
    """This client's CURVE keypair (Z85), admitted by the bridge: as secret as ``key``."""


def ensure_runtime_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700, owned by us."""
    runtime = Path(path)
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = runtime.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"runtime dir {runtime} is owned by uid {st.st_uid}, not us")
    if stat.S_IMODE(st.st_mode) != 0o700:
        runtime.chmod(0o700)
    return runtime


def ipc_endpoint(runtime_dir: str | os.PathLike[str], name: str) -> str:
    """``ipc://<runtime_dir>/<name>``, refused when the path exceeds the platform's sun_path."""
    path = os.path.join(os.fspath(runtime_dir), name)
    limit = zmq.IPC_PATH_MAX_LEN
    if limit and len(path.encode()) > limit:
        raise ValueError(f"ipc path {path!r} is {len(path.encode())} bytes, longer than {limit}")
    return f"ipc://{path}"


def endpoint_path(endpoint: str) -> Path:
    if not endpoint.startswith("ipc://"):
        raise ValueError(f"not an ipc endpoint: {endpoint}")
    return Path(endpoint[len("ipc://") :])


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> Path:
    """Write ``info`` as JSON, mode 0600 from the first byte, atomically (readers never see half)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".conn-", suffix=".json", dir=target.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(info.model_dump_json(indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    return ConnectionInfo.model_validate_json(Path(path).read_bytes())


class InstanceLock:
    """An exclusive ``flock`` on ``<runtime_dir>/bridge.lock``; the kernel drops it if we die."""

    def __init__(self, runtime_dir: str | os.PathLike[str]) -> None:
        self.path = Path(runtime_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BridgeAlreadyRunning(f"{self.path} is held by bridge pid {holder}") from None
            # The previous holder unlinks the file on release: if we locked that dead inode, the path
            # now names another file (or none) and our lock guards nothing. Try again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), self.path.stat())
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the file while still holding the lock, so no other bridge can lock a doomed file."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
