"""The bridge process: node-ipc connections to any number of extension hosts ("slots") on one side,
a ZeroMQ ROUTER (commands) and XPUB (events) for the workers on the other.

One asyncio loop owns every socket. Each command runs in its own task (attach and StartNewTask wait
for the extension) and every command gets exactly one reply; duplicates of a command (Lazy Pirate
retries reuse the msg_id) get the first one's reply, because StartNewTask is not idempotent. Every
event of a slot gets the slot's next sequence number and goes into its replay buffer before it is
published, so a subscriber that missed some can fetch them with ``snapshot``.

A slot attached by a request belongs to the sender's session; a session silent for ``client_liveness``
of its heartbeat intervals is expired and its slots detached, so a SIGKILLed worker leaks no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio
from pydantic import ValidationError

from ipc_bridge.log_limits import RateLimitedLog, sample
from ipc_bridge.roo.protocol import QUERY_RESPONSES
from ipc_bridge.server.bad_input import RouterRejects
from ipc_bridge.server.config import BridgeConfig
from ipc_bridge.server.publisher import Publisher, SendWindow
from ipc_bridge.server.reply_cache import ReplyCache
from ipc_bridge.server.slot_commands import ReplyParts, SlotCommands, error_reply, short_reason
from ipc_bridge.server.slot_registry import SlotRegistry
from ipc_bridge.server.slots import OWNER_EXPIRED, Slot, SlotError
from ipc_bridge.server.sockets import bind_sockets
from ipc_bridge.server.tcp_listen import TcpServer
from ipc_bridge.wire.connection_file import (
    COMMAND_SOCKET,
    EVENT_SOCKET,
    ConnectionInfo,
    InstanceLock,
    ensure_runtime_dir,
    ipc_endpoint,
    write_connection_file,
)
from ipc_bridge.wire.liveness import PeerRegistry, Ticker
from ipc_bridge.wire.messages import (
    REQUESTS,
    BridgeStoppingContent,
    Content,
    ErrorCode,
    HeartbeatReply,
    HeartbeatRequest,
    HugzContent,
    ShutdownReply,
    SlotsReply,
    WelcomeContent,
    reply_type,
)
from ipc_bridge.wire.session import (
    BRIDGE_TOPIC,
    VERSION,
    Message,
    Session,
    WireError,
    major,
    new_key,
    slot_topic,
)
from ipc_bridge.wire.zmq_loop import MessageLimit, Reader, send_frames

log = logging.getLogger(__name__)

# Commands whose effect must not be repeated for a retried request; reads are answered afresh.
_CACHED_REPLIES = frozenset({"attach", "detach", "attach_start", "close_detach", "task_command", "shutdown"})
# Commands that wait on a host (seconds, at worst their timeouts): bounded in number (max_inflight).
_WAITING = frozenset({"attach", "detach", "attach_start", "close_detach", "task_command"})


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.key = config.key or new_key()
        self.session = Session(self.key)
        self.slots = SlotRegistry(config.detached_keep, config.detached_bytes)
        self.peers = PeerRegistry(config.client_interval, config.client_liveness)
        self.ctx: zmq.asyncio.Context | None = None
        self.router: zmq.Socket[bytes] | None = None
        self._router_reader: Reader | None = None
        self.publisher: Publisher | None = None
        self.info: ConnectionInfo | None = None
        self.stopping = False
        self._stop = asyncio.Event()
        self._lock = InstanceLock(config.runtime_dir)
        self.tcp = TcpServer(config.tcp) if config.tcp is not None else None
        self._loops: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._replies: ReplyCache[ReplyParts] = ReplyCache(config.reply_cache_size)
        self.rejects = RouterRejects(log)
        self._log = RateLimitedLog(log)
        """Lines that clients can cause at any rate (replies they do not read, sessions they drop)."""
        on_slot = SlotCommands(self.slots, self.peers, self._new_slot, config.snapshot_max_bytes)
        self._commands: dict[str, Callable[[Message, Any], Awaitable[ReplyParts]]] = {
            "attach": on_slot.attach,
            "detach": on_slot.detach,
            "attach_start": on_slot.attach_start,
            "close_detach": on_slot.close_detach,
            "slots": self._cmd_slots,
            "task_command": on_slot.task_command,
            "snapshot": on_slot.snapshot,
            "heartbeat": self._cmd_heartbeat,
            "shutdown": self._cmd_shutdown,
        }

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> ConnectionInfo:
        """Lock the runtime dir, bind, write the connection file, start serving."""
        runtime = ensure_runtime_dir(self.config.runtime_dir)
        self._lock.acquire()
        try:
            cmd_ep = ipc_endpoint(runtime, COMMAND_SOCKET)
            ev_ep = ipc_endpoint(runtime, EVENT_SOCKET)
            self.ctx = zmq.asyncio.Context()
            self.router, xpub = bind_sockets(self.ctx, self.config, cmd_ep, ev_ep)
            limit = MessageLimit(self.config.max_msg_size, self.config.max_msg_frames, self._on_oversized)
            self._router_reader = Reader(self.router, self._on_command, limit)
            window = SendWindow(self.config.xpub_hwm, self.config.xpub_window_bytes)
            self.publisher = Publisher(xpub, self.session, self._welcome, window)
            if self.tcp is not None:  # after the ipc binds: CURVE options apply to later binds only
                self.tcp.bind(self.ctx, self.router, xpub)
            self.info = ConnectionInfo(
                command_endpoint=cmd_ep,
                event_endpoint=ev_ep,
                key=self.key,
                bridge_pid=os.getpid(),
                session=self.session.session,
                runtime_dir=str(runtime),
                hugz_interval=self.config.hugz_interval,  # clients size their liveness window on it
            )
            write_connection_file(self.config.connection_file, self.info)
            if self.tcp is not None:
                self.tcp.write(self.info)
        except BaseException:
            self._teardown(linger=0)
            raise
        loop = asyncio.get_running_loop()
        self.publisher.start(loop)
        self._router_reader.start(loop)
        self._loops = [
            loop.create_task(self._hugz_loop()),
            loop.create_task(self._expiry_loop()),
        ]
        for name, path in self.config.attach.items():
            slot = self.slots[name] = self._new_slot(name, path)
            slot.connect_in_background()
        log.info("bridge %s serving on %s and %s", self.session.session, cmd_ep, ev_ep)
        return self.info

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stop_requested(self) -> None:
        await self._stop.wait()

    async def shutdown(self, *, error: bool = False) -> None:
        """Staged: refuse new commands, publish bridge_stopping, close the hosts, then the sockets."""
        if self.stopping and self.ctx is None:
            return
        self.stopping = True
        log.info("bridge shutting down")
        for slot in self.slots.values():
            if slot.state != "detached":
                slot.emit_stopping()
        if self.publisher is not None:
            self._publish(BRIDGE_TOPIC, "bridge_stopping", BridgeStoppingContent(), None)
        for slot in self.slots.values():
            await slot.close()  # fails pending commands, whose handlers then reply
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=self.config.linger_ms / 1000)
        if not error:
            # Workers' DEALERs use IMMEDIATE=1, and libzmq then drops the replies a worker has not
            # read yet when the connection closes: keep answering (shutting_down, or the cached reply
            # to a retried shutdown) for a moment so that the last replies are read first.
            await asyncio.sleep(self.config.drain_ms / 1000)
        for task in [*self._loops, *self._handlers]:
            task.cancel()
        for task in [*self._loops, *self._handlers]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._teardown(linger=0 if error else self.config.linger_ms)

    def _teardown(self, linger: int) -> None:
        if self._router_reader is not None:
            self._router_reader.stop()
        if self.router is not None:
            self.router.close(linger=linger)
        if self.publisher is not None:
            self.publisher.close(linger)
        self.router = self._router_reader = self.publisher = None
        if self.tcp is not None:
            self.tcp.close()  # its ZAP socket must close before the context terminates
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None
        # Also after a failed start (no info yet): libzmq leaves ipc files behind, and the dir is ours.
        for name in (COMMAND_SOCKET, EVENT_SOCKET) if self._lock.held else ():
            with contextlib.suppress(OSError):
                self._lock.path.with_name(name).unlink()
        if self.info is not None:
            with contextlib.suppress(OSError):
                self.config.connection_file.unlink()
        self._lock.release()

    # ------------------------------------------------------------------------------------ publish

    def _publish(
        self, topic: bytes, msg_type: str, content: Content | dict[str, Any], parent: dict[str, Any] | None
    ) -> list[bytes]:
        assert self.publisher is not None
        return self.publisher.publish(topic, msg_type, content, parent)

    def _new_slot(self, name: str, path: str) -> Slot:
        assert self.publisher is not None
        return Slot(name, path, self.publisher, self.config.slot)

    def _welcome(self, topic: bytes) -> None:
        """JEP 65: answer every subscription with a welcome on its topic, so subscribers know they
        are connected without sleeping. XPUB_VERBOSE passes repeated subscriptions too."""
        subscription = topic.decode(errors="replace")
        seq = None
        name = subscription[5:-1]
        if subscription.startswith("slot.") and subscription.endswith(".") and "." not in name:
            # 1.3: 0 for a slot not held (yet): it has published nothing, so a stream that subscribes
            # before its attach needs no snapshot (every event of the slot follows this welcome).
            slot = self.slots.get(name)
            seq = slot.seq if slot is not None else 0
        content = WelcomeContent(subscription=subscription, seq=seq)
        self._publish(topic, "welcome", content, None)

    async def _hugz_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.hugz_interval
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for slot in self.slots.values():
                if slot.state != "detached" and now - slot.last_publish >= interval:
                    content = HugzContent(slot=slot.name, seq=slot.seq, state=slot.state)
                    self._publish(slot_topic(slot.name), "hugz", content, None)
                    slot.last_publish = now
            self._publish(BRIDGE_TOPIC, "hugz", HugzContent(state="running"), None)

    async def _expiry_loop(self) -> None:
        ticker = Ticker()
        while True:
            now, stall = await ticker.sleep(self.peers.tick())
            if stall:
                self._log.warning("bridge loop stalled for %.1f s: not counted as client silence", stall)
                self.peers.credit(stall, now)
            for peer in self.peers.expire(now):
                owned = [s for s in self.slots.values() if s.owner == peer.session and s.state != "detached"]
                level = logging.WARNING if owned else logging.DEBUG
                silent = f"client session {peer.session} silent for {now - peer.last_seen:.1f} s"
                self._log.log(level, "%s: detaching %s", silent, [s.name for s in owned])
                for slot in owned:
                    try:
                        await slot.detach(OWNER_EXPIRED)
                    except Exception:  # one bad slot must not stop expiry for good
                        self._log.exception("detaching slot %s failed", slot.name)
                    self.slots.retire(slot)

    # ----------------------------------------------------------------------------------- commands

    def _on_command(self, frames: list[bytes]) -> None:
        try:
            msg = self.session.deserialize(frames)
        except WireError as exc:
            self.rejects.dropped(exc, frames)
            return
        # Any verified request counts as a sign of life, retries and unknown types included.
        self.peers.seen(msg.header.session, asyncio.get_running_loop().time())
        if msg.msg_type in _WAITING and len(self._handlers) >= self.config.max_inflight:
            # Each waits on a host; a worker sending them faster than hosts answer must not grow the
            # bridge's tasks without bound. Answered at once: nothing was done, a retry may succeed.
            self._log.warning(
                "%s %s answered busy: %d commands in progress",
                sample(msg.msg_type),
                msg.header.msg_id[:100],
                len(self._handlers),
            )
            self._reply(msg, (error_reply(ErrorCode.BUSY, f"{len(self._handlers)} commands in progress"), []))
            return
        self._handlers.add(asyncio.ensure_future(self._handle(msg)))

    def _on_oversized(self, frames: int, size: int) -> None:
        c = self.config
        self.rejects.oversized(frames, size, c.max_msg_frames, c.max_msg_size)

    async def _handle(self, msg: Message) -> None:
        try:
            key = (msg.header.session, msg.header.msg_id)
            parts = await self._replies.once(key, _keep_reply(msg), lambda: self._execute(msg))
            self._reply(msg, parts)
        finally:
            # Here rather than in a done callback, which would cost a loop turn per command.
            self._handlers.discard(asyncio.current_task())

    async def _execute(self, msg: Message) -> ReplyParts:
        try:
            parts = await self._dispatch(msg)
        except asyncio.CancelledError:
            parts = (error_reply(ErrorCode.SHUTTING_DOWN, "bridge shutting down"), [])
        self.rejects.answered(msg, parts[0])
        return parts

    async def _dispatch(self, msg: Message) -> ReplyParts:
        if major(msg.header.version) != major(VERSION):
            return error_reply(
                ErrorCode.UNSUPPORTED_VERSION, f"version {msg.header.version}, bridge speaks {VERSION}"
            ), []
        if self.stopping and msg.msg_type != "shutdown":
            return error_reply(ErrorCode.SHUTTING_DOWN, "bridge shutting down"), []
        handler = self._commands.get(msg.msg_type)
        model = REQUESTS.get(msg.msg_type)
        if handler is None or model is None:
            return error_reply(ErrorCode.UNKNOWN_MSG_TYPE, f"unknown msg_type {msg.msg_type!r}"), []
        try:
            return await handler(msg, model.model_validate(msg.content))
        except ValidationError as exc:
            return error_reply(ErrorCode.INVALID_REQUEST, short_reason(exc)), []
        except SlotError as exc:
            return error_reply(exc.code, exc.reason), []
        except Exception as exc:
            self._log.exception("command %s failed", msg.msg_type)
            return error_reply(ErrorCode.INTERNAL, repr(exc)), []

    def _reply(self, msg: Message, parts: ReplyParts) -> None:
        if self.router is None:
            return
        content, buffers = parts
        frames = self.session.serialize(
            reply_type(msg.msg_type), content, msg.header, idents=msg.idents, buffers=buffers
        )
        try:
            send_frames(self.router, frames)
        except zmq.Again:  # the worker's queue is full (ROUTER_MANDATORY): it will retry
            self._log.warning("reply to %s dropped: the worker is not reading", msg.header.msg_id[:100])
        except zmq.ZMQError as exc:  # EHOSTUNREACH (ROUTER_MANDATORY): the worker is gone
            self._log.info("reply to %s not delivered: %s", msg.header.msg_id[:100], exc)
        if self._router_reader is not None:
            self._router_reader.poke()  # the send may have consumed the FD's edge

    async def _cmd_slots(self, msg: Message, req: Content) -> ReplyParts:
        return SlotsReply(slots=[s.info() for s in self.slots.values()]), []

    async def _cmd_heartbeat(self, msg: Message, req: Content) -> ReplyParts:
        interval = req.interval if isinstance(req, HeartbeatRequest) else None
        self.peers.announce(msg.header.session, interval, asyncio.get_running_loop().time())
        reply = HeartbeatReply(
            session=self.session.session,
            pid=os.getpid(),
            slots=len(self.slots),
            hugz_interval=self.config.hugz_interval,
            liveness=self.peers.liveness,
            rejected=self.rejects.snapshot(),
        )
        return reply, []

    async def _cmd_shutdown(self, msg: Message, req: Content) -> ReplyParts:
        self.stopping = True
        self._stop.set()
        return ShutdownReply(), []


def _keep_reply(msg: Message) -> bool:
    """Whether a retry must get this reply again. Not for Get* queries: they are reads, and their
    replies carry whatever the host answered (megabytes, if it likes), ten thousand of them kept."""
    if msg.msg_type not in _CACHED_REPLIES:
        return False
    command = msg.content.get("command") if msg.msg_type == "task_command" else None
    return not (isinstance(command, dict) and command.get("commandName") in QUERY_RESPONSES)


async def run_bridge(config: BridgeConfig, ready: Callable[[ConnectionInfo], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT or a ``shutdown`` command, then shut down in stages."""
    bridge = Bridge(config)
    info = await bridge.start()
    # The process's own ~140,000 objects (modules, pydantic schemas) out of the collector's sight:
    # every full collection walked them all, ~30 ms each, a tenth of the bridge's CPU in an event flood.
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.request_stop)
    error = False
    try:
        if ready is not None:
            ready(info)
        await bridge.wait_stop_requested()
    except BaseException:
        error = True
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await bridge.shutdown(error=error)
