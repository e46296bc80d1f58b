"""The bridge's two ZeroMQ sockets and their options (docs/wire-format.md, section 7): a ROUTER for
commands and an XPUB for events, bound on ipc paths only the bridge's user can connect to."""

from __future__ import annotations

import os
from typing import Any

import zmq

from ipc_bridge.server.config import BridgeConfig
from ipc_bridge.wire.zmq_loop import plain_socket


def bind_sockets(
    ctx: zmq.Context[Any], c: BridgeConfig, cmd_ep: str, ev_ep: str
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """``(router, xpub)`` bound on ``cmd_ep`` and ``ev_ep``; both closed again if a bind fails."""
    # Plain sockets of the one context, driven from the loop: see zmq_loop.py.
    router = plain_socket(ctx, zmq.ROUTER)
    xpub = plain_socket(ctx, zmq.XPUB)
    for sock in (router, xpub):
        sock.linger = c.linger_ms
        sock.setsockopt(zmq.HEARTBEAT_IVL, c.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, c.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, c.heartbeat_timeout_ms)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    # Per frame: a frame alone over the whole message's bound is refused before libzmq receives
    # it. The whole message is bounded by the reader (MessageLimit).
    router.setsockopt(zmq.MAXMSGSIZE, c.max_msg_size)
    router.sndhwm = router.rcvhwm = c.router_hwm
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    xpub.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # only subscription frames come in
    xpub.sndhwm = c.xpub_hwm
    old = os.umask(0o177)  # the socket files are created 0600
    try:
        router.bind(cmd_ep)
        xpub.bind(ev_ep)
    except zmq.ZMQError:
        router.close(linger=0)
        xpub.close(linger=0)
        raise
    finally:
        os.umask(old)
    return router, xpub
