"""The bridge process's settings (:class:`BridgeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ipc_bridge.server.slots import SlotConfig
from ipc_bridge.server.tcp_listen import TcpConfig
from ipc_bridge.wire.liveness import DEFAULT_INTERVAL, DEFAULT_LIVENESS


@dataclass
class BridgeConfig:
    runtime_dir: Path
    connection_file: Path
    key: str | None = None
    """HMAC key; a fresh one when None. Reusing the key across a restart lets workers notice the
    restart (new session) instead of seeing only bad signatures."""
    slot: SlotConfig = field(default_factory=SlotConfig)
    hugz_interval: float = DEFAULT_INTERVAL
    client_interval: float = DEFAULT_INTERVAL
    """Heartbeat interval assumed for a client until its ``heartbeat`` announces its own."""
    client_liveness: int = DEFAULT_LIVENESS
    """A client silent for this many of its intervals is expired and its slots detached."""
    xpub_hwm: int = 1_000
    """Per-subscriber queue on the XPUB (messages). Beyond it the XPUB drops (it must never block the
    bridge): subscribers notice the seq gap and fill it from the replay buffer with ``snapshot``."""
    xpub_window_bytes: int = 32 * 1024 * 1024
    """The last ``xpub_hwm`` messages published live take at most this many bytes, so that a subscriber
    that stops reading holds no more than that in its queue (see :class:`~.publisher.SendWindow`)."""
    router_hwm: int = 1_000
    """Per-client queues on the ROUTER (messages), both ways."""
    max_msg_size: int = 16 * 1024 * 1024
    """A request larger than this in all (every frame counted) is dropped unread."""
    max_msg_frames: int = 64
    """A request of more frames than this is dropped unread (a request has 6)."""
    max_inflight: int = 10_000
    """Commands that wait on a host (attach, detach, task_command) in progress at once; more are
    answered ``busy`` at once, so that requests sent faster than hosts answer cannot pile up."""
    snapshot_max_bytes: int = 8 * 1024 * 1024
    """A snapshot reply carries at most this much of the replay buffer (``more`` says ask again)."""
    linger_ms: int = 1000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000
    reply_cache_size: int = 10_000
    drain_ms: int = 250
    """At shutdown, how long the sockets stay open after the last reply (see :meth:`Bridge.shutdown`)."""
    attach: dict[str, str] = field(default_factory=dict)
    """Slots to attach at start-up; each connects whenever its host listens."""
    detached_keep: int = 64
    """Detached slots (and their replay buffers) kept for late subscribers; older ones are forgotten."""
    detached_bytes: int = 64 * 1024 * 1024
    """...and older ones also while the kept ones' replay buffers take more memory than this."""
    tcp: TcpConfig | None = None
    """Also serve on TCP (CURVE, or plain if insecure), with a connection file for remote clients."""
