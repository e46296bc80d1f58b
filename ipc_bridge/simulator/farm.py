"""A simulator farm: one process, one event loop, many :class:`SimulatorHost` instances, one per socket.

Launching a Python process per simulated host costs hundreds of ms of CPU; a farm opens a host in well
under a millisecond. Hosts are opened and closed over a control socket with a line-JSON protocol. Each
request carries an ``id`` that its reply repeats, so one connection serves many concurrent attempts::

    {"id": 1, "op": "open", "socket": P, "workspace": W, "engine": "3.52", "time_scale": 1.0,
     "status_delay": 2.0, "engine_lags": true, "seed": 0, "script": {...}}
                                                            -> {"id": 1, "ok": true}  (once it listens)
    {"id": 2, "op": "close", "socket": P}                   -> {"id": 2, "ok": true}  (CloseTask's effect)
    {"id": 3, "op": "kill", "socket": P}                    -> {"id": 3, "ok": true}  (a SIGKILL's effect)
    {"id": 4, "op": "list"}                                 -> {"id": 4, "ok": true, "hosts": [P, ...]}
    {"id": 5, "op": "shutdown"}                             -> {"id": 5, "ok": true}, then the farm stops
    errors:                                                 -> {"id": n, "ok": false, "error": "..."}

Every host's end is announced to the connection that opened it, whatever ended it (CloseTask, close,
kill, the ``crash`` outcome): ``{"event": "ended", "socket": P, "crashed": bool}``. A ``crash`` behaves
like a dead extension host for whoever is connected: connections reset at once, then the socket file goes
away; the farm's other hosts run on. A control connection that closes takes its hosts with it, and when
the last one closes the farm stops: a farm never outlives the process that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.simulator.host import SimulatorHost

log = logging.getLogger(__name__)

LINE_LIMIT = 1024 * 1024
"""Longest control line (an ``open`` carries the host script)."""
OPEN_KEYS = frozenset({"workspace", "engine", "script", "seed", "time_scale", "status_delay", "engine_lags"})


class FarmError(Exception):
    """A farm request failed, or the farm is gone."""


@dataclass
class _Hosted:
    host: SimulatorHost
    owner: _Control | None
    crashed: bool = False
    watcher: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Control:
    """One control connection."""

    writer: asyncio.StreamWriter
    hosts: set[str] = field(default_factory=set)

    def send(self, message: Mapping[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(orjson.dumps(message) + b"\n")


class SimulatorFarm:
    """Serves simulated hosts opened over the control socket ``control_path``.

    ``defaults`` fill what an ``open`` leaves out (``workspace``, ``engine``, ``script``, ``seed``,
    ``time_scale``, ``status_delay``, ``engine_lags``).
    """

    def __init__(
        self, control_path: str | os.PathLike[str], defaults: Mapping[str, Any] | None = None
    ) -> None:
        self.control_path = os.fspath(control_path)
        self.defaults = dict(defaults or {})
        unknown = set(self.defaults) - OPEN_KEYS
        if unknown:
            raise ValueError(f"unknown farm defaults: {sorted(unknown)}")
        self._hosts: dict[str, _Hosted] = {}
        self._controls: set[_Control] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._closed = asyncio.Event()
        self._stop_task: asyncio.Future[None] | None = None

    @property
    def hosts(self) -> list[str]:
        """Sockets of the hosts that are open."""
        return list(self._hosts)

    def host(self, socket_path: str) -> SimulatorHost | None:
        """The open host serving ``socket_path``."""
        hosted = self._hosts.get(socket_path)
        return hosted.host if hosted is not None else None

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.control_path, limit=LINE_LIMIT)
        os.chmod(self.control_path, 0o600)
        self._inode = os.stat(self.control_path).st_ino
        log.info("simulator farm listening on %s", self.control_path)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def request_stop(self) -> None:
        """Stop soon (from a signal handler or a callback)."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self.stop())

    async def stop(self) -> None:
        """Stop every host, drop every control connection, remove the control socket."""
        if self._closed.is_set():
            return
        server, self._server = self._server, None
        if server is not None:
            server.close()
        hosts = [h.host for h in self._hosts.values()]
        if hosts:
            await asyncio.gather(*(h.stop() for h in hosts), return_exceptions=True)
        for control in list(self._controls):
            control.writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        try:
            if self._inode is not None and os.stat(self.control_path).st_ino == self._inode:
                os.unlink(self.control_path)
        except FileNotFoundError:
            pass
        self._closed.set()
        log.info("simulator farm on %s stopped", self.control_path)

    async def __aenter__(self) -> SimulatorFarm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------ hosts

    async def open_host(
        self, socket_path: str, owner: _Control | None = None, **params: Any
    ) -> SimulatorHost:
        """Start a host on ``socket_path``; returns once it listens."""
        unknown = set(params) - OPEN_KEYS
        if unknown:
            raise FarmError(f"unknown open keys: {sorted(unknown)}")
        if socket_path in self._hosts:
            raise FarmError(f"a host already serves {socket_path}")
        merged = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        try:
            host = SimulatorHost(socket_path, on_crash=lambda: self._crash(socket_path), **merged)
        except (TypeError, ValueError) as exc:
            raise FarmError(str(exc)) from exc
        if host.workspace is not None and not host.workspace.is_dir():
            raise FarmError(f"workspace {host.workspace} is not a directory")
        hosted = _Hosted(host, owner)
        # Registered before it listens: a CloseTask may arrive as soon as the socket accepts, and an
        # owner that goes away meanwhile must take it along.
        self._hosts[socket_path] = hosted
        if owner is not None:
            owner.hosts.add(socket_path)
        try:
            await host.start()
            if host.closed:
                # Stopped while it started (owner or farm gone): stop() found no server to close then.
                await host.server.close()
                raise FarmError(f"the host on {socket_path} was closed while it opened")
        except (OSError, FarmError) as exc:
            self._hosts.pop(socket_path, None)
            if owner is not None:
                owner.hosts.discard(socket_path)
            if isinstance(exc, FarmError):
                raise
            raise FarmError(f"cannot listen on {socket_path}: {exc.strerror or exc}") from exc
        hosted.watcher = asyncio.ensure_future(self._watch(socket_path, hosted))
        return host

    async def close_host(self, socket_path: str) -> None:
        """End a host as CloseTask does (no-op when it already ended)."""
        hosted = self._hosts.get(socket_path)
        if hosted is not None:
            await hosted.host.stop()

    async def kill_host(self, socket_path: str) -> None:
        """End a host as a SIGKILL does: connections reset at once, no goodbye."""
        hosted = self._hosts.get(socket_path)
        if hosted is not None:
            self._crash(socket_path)
            await hosted.host.wait_closed()

    def _crash(self, socket_path: str) -> None:
        hosted = self._hosts.get(socket_path)
        if hosted is None or hosted.crashed:
            return
        hosted.crashed = True
        # The process of a real host would be gone: reset the connections now, before any other event
        # can go out; stop() then removes the socket file, so the farm leaves nothing behind.
        hosted.host.server.abort()
        hosted.host.request_stop()

    async def _watch(self, socket_path: str, hosted: _Hosted) -> None:
        # Set at the end of stop(), after the socket file is gone (a crash goes through stop() too).
        await hosted.host.wait_closed()
        if self._hosts.get(socket_path) is hosted:
            del self._hosts[socket_path]
        if hosted.owner is not None:
            hosted.owner.hosts.discard(socket_path)
            hosted.owner.send({"event": "ended", "socket": socket_path, "crashed": hosted.crashed})
        log.info("host on %s ended%s", socket_path, " (crashed)" if hosted.crashed else "")

    # ---------------------------------------------------------------------------- control

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        control = _Control(writer)
        self._controls.add(control)
        requests: set[asyncio.Task[None]] = set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                # Each request runs on its own: a slow close must not hold up another attempt's open.
                req = asyncio.ensure_future(self._request(control, line))
                requests.add(req)
                req.add_done_callback(requests.discard)
        except (ConnectionError, OSError, ValueError) as exc:
            log.info("control connection lost: %s", exc)
        finally:
            self._controls.discard(control)
            writer.close()
            # Its owner is gone: nobody will close these hosts any more.
            orphans = [self._hosts[s].host for s in control.hosts if s in self._hosts]
            if orphans:
                await asyncio.gather(*(h.stop() for h in orphans), return_exceptions=True)
            if task is not None:
                self._handlers.discard(task)
            if not self._controls and self._server is not None:
                log.info("last control connection closed: stopping the farm")
                self.request_stop()

    async def _request(self, control: _Control, line: bytes) -> None:
        rid: Any = None
        try:
            msg = orjson.loads(line)
            if not isinstance(msg, dict):
                raise FarmError("a request is a JSON object")
            rid = msg.get("id")
            reply = await self._dispatch(control, msg)
        except (FarmError, orjson.JSONDecodeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the farm (and every host in it) down
            log.exception("farm request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        control.send({"id": rid, **reply})

    async def _dispatch(self, control: _Control, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "list":
            return {"ok": True, "hosts": self.hosts}
        if op == "shutdown":
            self.request_stop()
            return {"ok": True}
        socket_path = msg.get("socket")
        if not isinstance(socket_path, str) or not socket_path:
            raise FarmError(f"{op!r} needs a socket path")
        if op == "open":
            params = {k: v for k, v in msg.items() if k not in ("id", "op", "socket")}
            await self.open_host(socket_path, control, **params)
        elif op == "close":
            await self.close_host(socket_path)
        elif op == "kill":
            await self.kill_host(socket_path)
        else:
            raise FarmError(f"unknown op {op!r}: open, close, kill, list or shutdown")
        return {"ok": True}


async def serve_farm(
    farm: SimulatorFarm, *, handle_signals: bool = True, on_ready: Callable[[], None] | None = None
) -> None:
    """Run ``farm`` until it is shut down, its last control connection closes, SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    await farm.start()
    try:
        for sig in signals:
            loop.add_signal_handler(sig, farm.request_stop)
        if on_ready is not None:
            on_ready()
        await farm.wait_closed()
    finally:
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await farm.stop()


# ---------------------------------------------------------------------------------- client side


class FarmClient:
    """A control connection to a farm: requests matched to replies by id, and host-ended notices."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ended: dict[str, asyncio.Future[bool]] = {}
        self._lost: BaseException | None = None
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, control_path: str | os.PathLike[str]) -> FarmClient:
        try:
            reader, writer = await asyncio.open_unix_connection(os.fspath(control_path), limit=LINE_LIMIT)
        except OSError as exc:
            raise FarmError(f"cannot connect to the farm at {control_path}: {exc.strerror or exc}") from exc
        return cls(reader, writer)

    @property
    def connected(self) -> bool:
        return self._lost is None and not self._reading.done()

    async def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request; its reply (raises :class:`FarmError` on ``ok: false`` or a lost farm)."""
        if not self.connected:
            raise FarmError(f"the farm is gone: {self._lost}")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(orjson.dumps({"id": rid, "op": op, **fields}) + b"\n")
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise FarmError(str(reply.get("error", "request failed")))
        return reply

    async def open(
        self,
        socket_path: str,
        workspace: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> asyncio.Future[bool]:
        """Open a host; returns a future resolved (with ``crashed``) when the host ends."""
        ended = self._ended_future(socket_path)
        if workspace is not None:
            params["workspace"] = str(Path(workspace))
        try:
            await self.request("open", timeout, socket=socket_path, **params)
        except BaseException:
            if self._ended.get(socket_path) is ended:
                del self._ended[socket_path]
            raise
        return ended

    def _ended_future(self, socket_path: str) -> asyncio.Future[bool]:
        old = self._ended.get(socket_path)
        if old is not None and not old.done():
            raise FarmError(f"a host already serves {socket_path}")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._ended[socket_path] = fut
        return fut

    async def close(self) -> None:
        """Drop the control connection (the farm then stops the hosts it opened for us)."""
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._reading.cancel()
        with contextlib.suppress(BaseException):
            await self._reading
        self._fail(FarmError("control connection closed"))

    async def _read(self) -> None:
        error: BaseException = FarmError("the farm closed the control connection")
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = orjson.loads(line)
                if msg.get("event") == "ended":
                    fut = self._ended.pop(msg.get("socket"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(bool(msg.get("crashed")))
                    continue
                req = self._pending.get(msg.get("id"))
                if req is not None and not req.done():
                    req.set_result(msg)
        except (ConnectionError, OSError, ValueError) as exc:
            error = FarmError(f"control connection lost: {exc}")
        finally:
            self._writer.close()
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        # A farm that is gone took its hosts with it.
        for ended in self._ended.values():
            if not ended.done():
                ended.set_result(True)
        self._ended.clear()
