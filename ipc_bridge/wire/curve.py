"""CURVE keys for the bridge's TCP endpoints, and the ZAP handler that admits only authorized clients.

The layout of a keys directory (every directory 0700, every secret file 0600, nothing writable by others
and no symlinks: :mod:`.key_perms` refuses anything else at start), as czmq and pyzmq's ``zmq.auth`` lay
out certificates::

    DIR/server.key, DIR/server.key_secret         the bridge's keypair (created if missing)
    DIR/authorized/*.key                          public keys of the clients the bridge admits
    DIR/clients/watcher.key, .key_secret          a client keypair (created and authorized if missing),
                                                  handed out in the TCP connection file

CURVE encrypts and authenticates the connection, ZAP (``configure_curve`` on the authorized directory)
decides who may connect: a CURVE server with no ZAP handler would admit *any* client key, so the
handler runs before the first TCP bind. HMAC signing stays on regardless: CURVE guards the transport,
the HMAC key guards the messages.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth

from ipc_bridge.log_limits import RateLimitedLog
from ipc_bridge.wire.connection_file import ConnectionInfo, ensure_runtime_dir
from ipc_bridge.wire.key_perms import KeyPermissionError, check_keys_dir

if TYPE_CHECKING:
    from zmq.auth.asyncio import AsyncioAuthenticator

log = logging.getLogger(__name__)

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized"
CLIENTS_DIR = "clients"
WATCHER_NAME = "watcher"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class CurveError(RuntimeError):
    """CURVE is unavailable, or a key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class KeyPair:
    """Z85-encoded CURVE keys (40 characters each)."""

    public: str
    secret: str


@dataclass(frozen=True)
class ServerKeys:
    server: KeyPair
    authorized_dir: Path
    watcher: KeyPair
    """The client keypair written into the TCP connection file (its public key is authorized)."""


def require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE support")


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` created if needed, owned by us, mode 0700."""
    return ensure_runtime_dir(path)


def create_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """``name.key`` and ``name.key_secret`` in ``directory`` (made 0700); the secret file ends up 0600.

    ``zmq.auth.create_certificates`` writes with the process umask; the 0700 directory keeps the file
    private until the chmod."""
    private = private_dir(directory)
    public_file, secret_file = (Path(p) for p in zmq.auth.create_certificates(private, name))
    secret_file.chmod(0o600)
    public_file.chmod(0o644)  # not the umask's: a group-writable key is refused at the next start
    return public_file, secret_file


def load_keypair(secret_file: str | os.PathLike[str]) -> KeyPair:
    """The keypair in a ``*.key_secret`` certificate; refused when others may read it (like ssh)."""
    path = Path(secret_file)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CurveError(f"{path} is readable by others (mode {mode:04o}): chmod 600 it")
    public, secret = _load_certificate(path)
    if secret is None:
        raise CurveError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public_key(public_file: str | os.PathLike[str]) -> str:
    return _load_certificate(Path(public_file))[0]


def _load_certificate(path: Path) -> tuple[str, str | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot load CURVE certificate {path}: {exc}") from None
    return public.decode("ascii"), secret.decode("ascii") if secret else None


def _keypair(directory: Path, name: str) -> tuple[KeyPair, Path]:
    """Load ``name`` from ``directory``, creating it on first use."""
    secret_file = directory / f"{name}{SECRET_SUFFIX}"
    public_file = directory / f"{name}{PUBLIC_SUFFIX}"
    if not secret_file.exists():
        log.info("creating CURVE keypair %s", secret_file)
        public_file, secret_file = create_keypair(directory, name)
    return load_keypair(secret_file), public_file


def authorize(keys_dir: str | os.PathLike[str], public_file: str | os.PathLike[str], name: str) -> Path:
    """Admit the client whose public certificate is ``public_file`` (copied to ``authorized/name.key``);
    a running bridge reads the directory at start-up only."""
    load_public_key(public_file)  # refuse garbage before it lands among the authorized keys
    private_dir(keys_dir)  # first: made as a parent of authorized/, it would get the umask's mode
    target = private_dir(Path(keys_dir) / AUTHORIZED_DIR) / f"{name}{PUBLIC_SUFFIX}"
    shutil.copyfile(public_file, target)
    target.chmod(0o644)
    return target


def ensure_server_keys(keys_dir: str | os.PathLike[str]) -> ServerKeys:
    """Load (creating what is missing) the server keypair, the authorized directory and the watcher
    keypair, and make sure the watcher is authorized."""
    require_curve()
    try:
        check_keys_dir(Path(keys_dir))  # before anything is read or created in it
    except KeyPermissionError as exc:
        raise CurveError(f"refusing CURVE keys directory: {exc}") from None
    try:
        root = private_dir(keys_dir)
        server, _ = _keypair(root, SERVER_NAME)
        authorized = private_dir(root / AUTHORIZED_DIR)
        watcher, watcher_public = _keypair(private_dir(root / CLIENTS_DIR), WATCHER_NAME)
        if not (authorized / f"{WATCHER_NAME}{PUBLIC_SUFFIX}").exists():
            authorize(root, watcher_public, WATCHER_NAME)
    except OSError as exc:
        raise CurveError(f"cannot use CURVE keys directory {keys_dir}: {exc}") from None
    return ServerKeys(server, authorized, watcher)


def configure_server(sock: zmq.Socket[Any], keys: ServerKeys) -> None:
    """Make ``sock`` a CURVE server for the binds that follow (options apply per bind: an ipc endpoint
    bound earlier keeps the NULL mechanism)."""
    sock.curve_secretkey = keys.server.secret.encode()
    sock.curve_publickey = keys.server.public.encode()
    sock.curve_server = True


class _ZapLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """pyzmq logs ZAP decisions at debug level; a refused key deserves a warning (once per key: a
    refused client reconnects every 100 ms; and rate-limited: made-up keys cost an attacker nothing)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self._warned: set[str] = set()
        self._limit = RateLimitedLog(logger)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        text = str(msg) % args if args else str(msg)
        if not text.startswith("DENIED"):
            self.logger.debug(text)
        elif text not in self._warned:
            if len(self._warned) >= 1024:  # made-up keys cost an attacker nothing: bound the memory
                self._warned.clear()
            self._warned.add(text)
            self._limit.warning("TCP client refused by ZAP: %s", text)


def start_authenticator(ctx: zmq.Context[Any], keys: ServerKeys) -> AsyncioAuthenticator:
    """The context's ZAP handler (call from the running loop), admitting the keys in ``authorized/``."""
    from zmq.auth.asyncio import AsyncioAuthenticator

    count = sum(1 for p in keys.authorized_dir.glob(f"*{PUBLIC_SUFFIX}") if load_public_key(p))
    auth = AsyncioAuthenticator(ctx, log=_ZapLog(logging.getLogger(f"{__name__}.zap")))
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized_dir))
    log.info("CURVE: %d authorized client key(s) in %s", count, keys.authorized_dir)
    return auth


def client_options(info: ConnectionInfo) -> dict[int, int | bytes]:
    """The socket options a client applies before it connects: for a ``tcp`` bridge, its CURVE keys
    (when it has them) and IPv6 for an IPv6 endpoint; none for ipc. Raises :class:`CurveError` for a
    file with half the keys."""
    options: dict[int, int | bytes] = {}
    if info.transport != "tcp":
        return options
    if "[" in info.command_endpoint or "[" in info.event_endpoint:
        options[zmq.IPV6] = 1
    if info.curve_serverkey is None:
        return options
    if not (info.curve_publickey and info.curve_secretkey):
        raise CurveError("the connection file has curve_serverkey but no client keypair")
    require_curve()
    options[zmq.CURVE_SERVERKEY] = info.curve_serverkey.encode()
    options[zmq.CURVE_PUBLICKEY] = info.curve_publickey.encode()
    options[zmq.CURVE_SECRETKEY] = info.curve_secretkey.encode()
    return options
