"""The least a Python subscriber does per event of the bridge's wire format, for bridge_throughput.py.

A blocking SUB on its own thread, no asyncio and no client library: receive the six frames, check the
HMAC, parse header and content with orjson, check the seq. What :class:`BridgeClient` does beyond this
(replay check, stream order, gap fills, dispatch, the event loop) is its own cost; this is the floor of
any Python subscriber of wire format 1.x, to hold against Roo's node-ipc client."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass, field

import orjson
import zmq

from ipc_bridge.wire.zmq_loop import raw_recv


@dataclass
class FloorResult:
    events: int = 0
    bad: int = 0
    seq_errors: int = 0
    first: float = 0.0
    last: float = 0.0
    cpu_s: float = 0.0
    """CPU time of the consuming thread from its first event to its last. Events the XPUB dropped are
    not fetched again (no snapshot): ``events`` may fall short of the stream."""
    error: str = ""


@dataclass
class FloorSubscriber:
    """Subscribes to ``topic`` on ``endpoint`` and counts task events until ``until`` (an eventName)."""

    endpoint: str
    key: str
    topic: bytes
    until: str = "taskIdle"
    ready: threading.Event = field(default_factory=threading.Event)
    result: FloorResult = field(default_factory=FloorResult)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="floor-subscriber", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 100_000
        sub.rcvtimeo = 5_000  # the stream is over when nothing came for this long (its end may be lost)
        try:
            sub.connect(self.endpoint)
            sub.subscribe(self.topic)
            self._consume(sub)
        except zmq.Again:
            if not self.result.events:
                self.result.error = "no event"
            self.ready.set()
        except Exception as exc:  # reported, not raised: the benchmark goes on
            self.result.error = repr(exc)
            self.ready.set()
        finally:
            sub.close(linger=0)
            ctx.term()

    def _consume(self, sub: zmq.Socket[bytes]) -> None:
        auth = hmac.new(self.key.encode(), digestmod="sha256")
        res = self.result
        last_seq = None
        cpu0 = 0.0
        while True:
            frame = raw_recv(sub, 0, False)
            frames = [frame.bytes]
            while frame.more:
                frame = raw_recv(sub, 0, False)
                frames.append(frame.bytes)
            _, _, signature, h, p, c = frames[:6]
            mac = auth.copy()
            mac.update(h)
            mac.update(p)
            mac.update(c)
            if not hmac.compare_digest(mac.hexdigest().encode(), signature):
                res.bad += 1
                continue
            header, content = orjson.loads(h), orjson.loads(c)
            msg_type = header["msg_type"]
            if msg_type == "welcome":
                self.ready.set()
                continue
            if msg_type != "task_event":
                continue
            now = time.perf_counter()
            if res.events == 0:
                res.first, cpu0 = now, time.thread_time()
            res.last = now
            res.events += 1
            seq = content["seq"]
            if last_seq is not None and seq != last_seq + 1:
                res.seq_errors += 1
            last_seq = seq
            res.cpu_s = time.thread_time() - cpu0  # per event: the last one may be lost (no gap fill)
            if content["event"]["eventName"] == self.until:
                return
