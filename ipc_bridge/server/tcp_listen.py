"""The bridge's optional TCP endpoints, for watching (or driving) a run from another machine.

``tcp://HOST:PORT`` binds the command ROUTER on PORT and the event XPUB on PORT+1 (PORT ``*`` or 0: any
free ports), on the same sockets as the ipc endpoints, so that replies and events need no routing of
their own. The TCP binds are CURVE servers that admit only the client keys in the keys directory's
``authorized/`` (see :mod:`.curve`); plain TCP needs an explicit ``insecure=True``. The bridge then
writes a second connection file, with the TCP endpoints, the server's public key and a client keypair,
for the remote side.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import zmq

from ipc_bridge.wire import curve
from ipc_bridge.wire.connection_file import ConnectionInfo, write_connection_file

if TYPE_CHECKING:
    from zmq.auth.asyncio import AsyncioAuthenticator

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"*", "0.0.0.0", "::", "[::]"})


class ListenError(RuntimeError):
    """A TCP endpoint that is malformed, insecure without consent, or cannot be bound."""


@dataclass(frozen=True)
class TcpListen:
    host: str
    """As zmq takes it: a name, an address (IPv6 in brackets), an interface, or ``*``."""
    port: int | None
    """The command port (events on port + 1); None: any free ports."""

    @property
    def ipv6(self) -> bool:
        return self.host.startswith("[")

    def endpoints(self) -> tuple[str, str]:
        if self.port is None:
            return f"tcp://{self.host}:*", f"tcp://{self.host}:*"
        return f"tcp://{self.host}:{self.port}", f"tcp://{self.host}:{self.port + 1}"

    def __str__(self) -> str:
        return f"tcp://{self.host}:{'*' if self.port is None else self.port}"


def parse_listen(value: str) -> TcpListen:
    """``tcp://HOST:PORT``, ``tcp://HOST:*`` or ``tcp://HOST:0``; IPv6 addresses in brackets."""
    if not value.startswith("tcp://"):
        raise ListenError(f"{value!r}: expected tcp://HOST:PORT")
    host, sep, port_text = value[len("tcp://") :].rpartition(":")
    if not sep or not host or ("[" in host) != host.startswith("[") or host.count("[") > 1:
        raise ListenError(f"{value!r}: expected tcp://HOST:PORT (IPv6 as tcp://[ADDR]:PORT)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ListenError(f"{value!r}: put an IPv6 address in brackets, tcp://[ADDR]:PORT")
    if port_text in ("*", "0"):
        return TcpListen(host, None)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65534:
        raise ListenError(f"{value!r}: PORT must be 1-65534 (events use PORT+1), * or 0")
    return TcpListen(host, int(port_text))


@dataclass
class TcpConfig:
    listen: TcpListen
    connection_file: Path
    """Where the connection file for remote clients goes (mode 0600: it holds the keys)."""
    keys_dir: Path | None = None
    """CURVE keys (:mod:`.curve` layout); None only with ``insecure``."""
    insecure: bool = False
    """Serve plain TCP: anyone who reaches the port can read every event."""
    advertise_host: str | None = None
    """The host remote clients connect to [default: the bound address, or this machine's name when the
    listen host is a wildcard]."""

    def __post_init__(self) -> None:
        if self.keys_dir is None and not self.insecure:
            raise ListenError(
                f"refusing to listen on {self.listen} without CURVE: give a keys directory "
                "(--curve-dir) or explicitly accept plain TCP (--insecure)"
            )
        if self.keys_dir is not None and self.insecure:
            raise ListenError("a keys directory (CURVE) and insecure (plain TCP) exclude each other")


class TcpServer:
    """Binds the TCP endpoints on the bridge's sockets and owns the ZAP handler and the remote file."""

    def __init__(self, config: TcpConfig) -> None:
        self.config = config
        self.keys: curve.ServerKeys | None = None
        self.endpoints: tuple[str, str] | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._written: Path | None = None

    def bind(self, ctx: zmq.Context[Any], router: zmq.Socket[Any], xpub: zmq.Socket[Any]) -> None:
        """After the ipc binds; from the running loop (the ZAP handler is an asyncio task)."""
        c = self.config
        if c.keys_dir is not None:
            self.keys = curve.ensure_server_keys(c.keys_dir)
            # Before the first bind: a CURVE server without a ZAP handler admits every key.
            self._auth = curve.start_authenticator(ctx, self.keys)
        bound = []
        for sock, endpoint in zip((router, xpub), c.listen.endpoints(), strict=True):
            if self.keys is not None:
                curve.configure_server(sock, self.keys)
            sock.ipv6 = c.listen.ipv6
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ListenError(f"cannot listen on {endpoint}: {exc}") from exc
            bound.append(_advertised(cast(bytes, sock.getsockopt(zmq.LAST_ENDPOINT)).decode(), c))
        self.endpoints = (bound[0], bound[1])
        if self.keys is None:
            log.warning(
                "INSECURE: serving plain TCP on %s and %s (--insecure): no encryption, no client "
                "authentication; anyone who reaches these ports reads every event, and only the HMAC "
                "key guards the commands",
                *bound,
            )
        else:
            log.info("serving CURVE TCP on %s and %s", *bound)

    def write(self, local: ConnectionInfo) -> ConnectionInfo:
        """The remote connection file: ``local`` with the TCP endpoints and, with CURVE, the keys."""
        assert self.endpoints is not None
        update: dict[str, Any] = {
            "transport": "tcp",
            "command_endpoint": self.endpoints[0],
            "event_endpoint": self.endpoints[1],
        }
        if self.keys is not None:
            update["curve_serverkey"] = self.keys.server.public
            update["curve_publickey"] = self.keys.watcher.public
            update["curve_secretkey"] = self.keys.watcher.secret
        info = local.model_copy(update=update)
        self._written = write_connection_file(self.config.connection_file, info)
        return info

    def close(self) -> None:
        """Before the context terminates (the ZAP handler has a socket)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._written is not None:
            with contextlib.suppress(OSError):
                self._written.unlink()
            self._written = None


def _advertised(bound: str, config: TcpConfig) -> str:
    """The endpoint a remote client dials: the bound port, on a host it can reach."""
    host, _, port = bound[len("tcp://") :].rpartition(":")
    if config.advertise_host is not None:
        host = config.advertise_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
    elif config.listen.host in _WILDCARDS:
        host = socket.gethostname()
    return f"tcp://{host}:{port}"
