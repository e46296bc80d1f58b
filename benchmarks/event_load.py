#!/usr/bin/env python
"""Event load through the bridge: 64 slots each streaming 200 partial messages a second (issue 5, item 3).

    .venv/bin/python benchmarks/event_load.py [--slots 64] [--rate 200] [--seconds 5]
        [--chars-per-partial 2] [--subscribers 2] [--host-procs 1] [--json]

The path is the one of a run: simulated extension hosts -> node-ipc framing on a Unix socket -> the
bridge (``start_bridge_process``) -> ZeroMQ -> worker-like subscribers.

* Hosts: ``--host-procs`` processes, each serving its share of the slots with real
  :class:`~ipc_bridge.simulator.SimulatorHost` objects on one event loop (as the simulator farm does).
  Every task plays the script ``outcome: hang`` with ``chunks: R x T``: after a quarter of its duration
  of silence the model text streams as R partial ``message`` events a second for T seconds (each one
  the whole text so far, growing by ``--chars-per-partial`` characters, as Roo's partials do), on the
  host's planned timeline, then nothing. The host subclass only records the wall time right after each
  partial left ``emit`` (it has been framed and written to the socket).
* Subscribers: ``--subscribers`` processes, each with one :class:`~ipc_bridge.client.bridge_client.BridgeClient`,
  which, like a worker, attach their slots, follow each with ``events(slot, since_seq=0)`` and send
  StartNewTask. They all start on the same signal. Every event's seq must follow the previous one; the
  client's own gap fills from the bridge's replay buffer (events the PUB side dropped) are counted too.
* Lag: the k-th partial received on a slot against the k-th partial its host emitted (same machine,
  same clock), split at the bridge's publish time (``header.date``): host -> bridge, bridge -> subscriber.
* CPU: every process is sampled from ``/proc`` every 0.1 s; the bridge's CPU is reported as a share of
  one core over the stream (first partial emitted to last one received) and per event.

A measurement, not a test: exits 0 whatever the figures; 1 means the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Child,
    Children,
    GapCounter,
    LoopStall,
    cpu_seconds,
    loadavg,
    private_tempdir,
)

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.wire.messages import TaskEventContent

SELF = str(Path(__file__).resolve())
READY_WAIT = 60.0
CPU_INTERVAL = 0.1
WORDS = "the quick brown fox jumps over the lazy dog while the model keeps on streaming its answer "


def slot_name(i: int) -> str:
    return f"h{i}"


def socket_path(tmp: Path, i: int) -> Path:
    return tmp / f"{slot_name(i)}.sock"


def partials_per_slot(rate: float, seconds: float) -> int:
    return max(1, round(rate * seconds))


def stream_script(rate: float, seconds: float, chars: int) -> dict[str, Any]:
    """``hang``: sleep 0.25 of the duration, then stream ``n`` partials over the other 0.75 (one every
    ``0.75 x duration / n`` s, jittered +-20 % on the planned timeline), never finalised."""
    n = partials_per_slot(rate, seconds)
    text = (WORDS * (n * chars // len(WORDS) + 1))[: n * chars]
    return {"outcome": "hang", "duration": seconds / 0.75, "text": text, "chunks": n}


# ------------------------------------------------------------------------------------ host process


class StampingHost(SimulatorHost):
    """A simulated host that records when each partial ``message`` event left it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stamps: list[float] = []

    def emit(self, name: str, *payload: Any) -> None:
        super().emit(name, *payload)
        if name == "message" and payload[0]["message"].get("partial"):
            self.stamps.append(time.time())


async def serve_hosts(ns: argparse.Namespace) -> None:
    tmp = Path(ns.serve_hosts)
    script = stream_script(ns.rate, ns.seconds, ns.chars_per_partial)
    workspace = tmp / "ws"
    workspace.mkdir(exist_ok=True)
    hosts = {
        slot_name(i): StampingHost(socket_path(tmp, i), workspace, script=script, seed=i, status_delay=0.01)
        for i in range(ns.first, ns.first + ns.count)
    }
    for host in hosts.values():
        await host.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(orjson.dumps({"listening": len(hosts)}).decode(), flush=True)
    await stop.wait()
    for host in hosts.values():
        await host.stop()
    out = tmp / f"stamps-{ns.first}.json"
    out.write_bytes(orjson.dumps({name: host.stamps for name, host in hosts.items()}))
    print(orjson.dumps({"summary": True, "stamps": str(out)}).decode(), flush=True)


# ------------------------------------------------------------------------------ subscriber process


@dataclass
class SlotLog:
    events: int = 0
    seq_errors: int = 0
    received: list[float] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    error: str | None = None


async def follow(client: BridgeClient, slot: str, log: SlotLog, expect: int) -> None:
    """Every event of ``slot`` from its first (as a worker follows an attempt) until ``expect`` partials."""
    last = 0
    try:
        async with contextlib.aclosing(client.events(slot, since_seq=0)) as events:
            async for event in events:
                now = time.time()
                if event.seq != last + 1:
                    log.seq_errors += 1
                last = event.seq or last
                log.events += 1
                content = event.content
                if not isinstance(content, TaskEventContent):
                    continue
                raw = content.event
                if raw.get("eventName") == "message" and raw["payload"][0]["message"].get("partial"):
                    log.received.append(now)
                    log.published.append(event.header.date)
                    if len(log.received) >= expect:
                        return
    except Exception as exc:
        log.error = f"{type(exc).__name__}: {exc}"


async def subscribe_main(ns: argparse.Namespace) -> None:
    tmp = Path(ns.sockdir)
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    gaps = GapCounter()
    stream_log = logging.getLogger("ipc_bridge")
    stream_log.addHandler(gaps)
    stream_log.setLevel(logging.INFO)
    expect = partials_per_slot(ns.rate, ns.seconds)
    slots = {slot_name(i): socket_path(tmp, i) for i in range(ns.first, ns.first + ns.count)}
    client = await BridgeClient.connect(ns.subscriber)
    stall = LoopStall()
    try:
        await asyncio.gather(*(client.attach(slot, str(path)) for slot, path in slots.items()))
        logs = {slot: SlotLog() for slot in slots}
        followers = [asyncio.ensure_future(follow(client, slot, logs[slot], expect)) for slot in slots]
        print(orjson.dumps({"ready": len(slots)}).decode(), flush=True)
        await go.wait()
        stall.start()
        await asyncio.gather(*(client.start_task(slot, "Stream a long answer.") for slot in slots))
        _, late = await asyncio.wait(followers, timeout=ns.seconds * 2 + 60)
        for task in late:
            task.cancel()
        stall.stop()
        out = tmp / f"received-{ns.first}.json"
        out.write_bytes(orjson.dumps({slot: log.__dict__ for slot, log in logs.items()}))
        summary = {"done": True, "file": str(out), "gap_fills": gaps.gaps, "max_stall_s": stall.max}
        summary["timed_out"] = len(late)
        print(orjson.dumps(summary).decode(), flush=True)
    finally:
        stall.stop()
        await client.close(linger_ms=0)


# ------------------------------------------------------------------------------------ the benchmark


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) of ``parts`` nearly equal shares of ``range(total)``."""
    parts = max(1, min(parts, total))
    bounds = [total * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1] - bounds[k]) for k in range(parts)]


class CpuTrace:
    """CPU seconds of named processes, sampled on the loop every 0.1 s, read back at any wall time."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()

    def _sample(self) -> None:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.samples.append((time.time(), {k: v for k, v in values.items() if v is not None}))

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(CPU_INTERVAL)

    def at(self, name: str, t: float) -> float:
        points = [(ts, v[name]) for ts, v in self.samples if name in v]
        prev = points[0]
        for cur in points:
            if cur[0] >= t:
                span = cur[0] - prev[0]
                return prev[1] + (0.0 if span <= 0 else (t - prev[0]) / span * (cur[1] - prev[1]))
            prev = cur
        return prev[1]


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _iso(date: str) -> float:
    return datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp()


def _bridge(tmp: Path) -> BridgeProcess:
    with open(tmp / "bridge.log", "wb") as log:  # its "slot down" warnings at the end go there
        return start_bridge_process(tmp / "bridge", stderr=log)


def _read_json(path: str) -> dict[str, Any]:
    """A child's result file (small, read once after the measurement)."""
    data: dict[str, Any] = orjson.loads(Path(path).read_bytes())
    return data


async def run(ns: argparse.Namespace, children: Children, tmp: Path) -> dict[str, Any]:
    me = [sys.executable, SELF]
    common = ["--rate", str(ns.rate), "--seconds", str(ns.seconds)]
    common += ["--chars-per-partial", str(ns.chars_per_partial)]
    hosts: list[Child] = []
    for first, count in _split(ns.slots, ns.host_procs):
        argv = [*me, "--serve-hosts", str(tmp), "--first", str(first), "--count", str(count), *common]
        hosts.append(await children.start("hosts", argv))
    for host in hosts:
        await host.wait_for(lambda line: "listening" in line, READY_WAIT)
    bridge = children.add_bridge(await asyncio.get_running_loop().run_in_executor(None, _bridge, tmp))
    subs: list[Child] = []
    for first, count in _split(ns.slots, ns.subscribers):
        argv = [*me, "--subscriber", str(bridge.connection_file), "--sockdir", str(tmp)]
        argv += ["--first", str(first), "--count", str(count), *common]
        subs.append(await children.start("subscriber", argv))
    for sub in subs:
        await sub.wait_for(lambda line: "ready" in line, READY_WAIT)
    pids = {"bridge": bridge.pid}
    pids |= {f"hosts{k}": h.pid for k, h in enumerate(hosts)}
    pids |= {f"subscriber{k}": s.pid for k, s in enumerate(subs)}
    trace = CpuTrace(pids)
    trace.start()
    load = loadavg()
    for sub in subs:
        sub.signal(signal.SIGUSR1)
    done = [await sub.wait_for(lambda line: line.get("done") is True, ns.seconds * 2 + 90) for sub in subs]
    await trace.stop()
    stamps: dict[str, list[float]] = {}
    for host in hosts:
        host.signal(signal.SIGTERM)
        summary = await host.wait_for(lambda line: line.get("summary") is True, READY_WAIT)
        stamps |= _read_json(summary["stamps"])
    received: dict[str, dict[str, Any]] = {}
    for line in done:
        received |= _read_json(line["file"])
    await asyncio.get_running_loop().run_in_executor(None, bridge.stop)
    return analyse(ns, stamps, received, done, trace, load)


def analyse(
    ns: argparse.Namespace,
    stamps: dict[str, list[float]],
    received: dict[str, dict[str, Any]],
    done: list[dict[str, Any]],
    trace: CpuTrace,
    load: list[float] | None,
) -> dict[str, Any]:
    n = partials_per_slot(ns.rate, ns.seconds)
    lags, to_bridge, from_bridge = [], [], []
    early: list[float] = []
    late: list[float] = []
    emitted = delivered = events = seq_errors = 0
    errors = []
    first_emit, last_emit, last_recv = float("inf"), 0.0, 0.0
    rates = []
    for slot, sent in stamps.items():
        got = received.get(slot, {})
        recv: list[float] = got.get("received", [])
        pub = got.get("published", [])
        emitted += len(sent)
        delivered += len(recv)
        events += got.get("events", 0)
        seq_errors += got.get("seq_errors", 0)
        if got.get("error"):
            errors.append(f"{slot}: {got['error']}")
        if sent:
            first_emit, last_emit = min(first_emit, sent[0]), max(last_emit, sent[-1])
            if len(sent) > 1 and sent[-1] > sent[0]:
                rates.append((len(sent) - 1) / (sent[-1] - sent[0]))
        if recv:
            last_recv = max(last_recv, recv[-1])
        m = min(len(sent), len(recv))
        for k in range(m):
            lag = recv[k] - sent[k]
            lags.append(lag)
            (early if k < m // 10 else late if k >= m - m // 10 else []).append(lag)
            published = _iso(pub[k])
            to_bridge.append(published - sent[k])
            from_bridge.append(recv[k] - published)
    window = last_recv - first_emit if last_recv > first_emit else float("nan")
    cpu = {name: trace.at(name, last_recv) - trace.at(name, first_emit) for name in trace.pids}
    for series in (lags, to_bridge, from_bridge, early, late):
        series.sort()

    def ms(series: list[float], q: float) -> float:
        return round(_pct(series, q) * 1000, 2)

    return {
        "slots": ns.slots,
        "rate_per_slot": ns.rate,
        "seconds": ns.seconds,
        "chars_per_partial": ns.chars_per_partial,
        "subscribers": ns.subscribers,
        "host_procs": ns.host_procs,
        "load_before": load,
        "expected": ns.slots * n,
        "emitted": emitted,
        "delivered": delivered,
        "events_total": events,
        "seq_errors": seq_errors,
        "gap_fills": sum(d.get("gap_fills", 0) for d in done),
        "timed_out_slots": sum(d.get("timed_out", 0) for d in done),
        "errors": errors[:5],
        "emit_rate_per_slot_mean": round(sum(rates) / len(rates), 1) if rates else None,
        "emit_rate_total": round(emitted / (last_emit - first_emit), 1) if last_emit > first_emit else None,
        "stream_window_s": round(window, 3),
        "lag_ms": {"p50": ms(lags, 0.5), "p90": ms(lags, 0.9), "p99": ms(lags, 0.99), "max": ms(lags, 1.0)},
        "lag_ms_host_to_bridge": {"p50": ms(to_bridge, 0.5), "p99": ms(to_bridge, 0.99)},
        "lag_ms_bridge_to_subscriber": {"p50": ms(from_bridge, 0.5), "p99": ms(from_bridge, 0.99)},
        "lag_ms_p50_first_vs_last_tenth": [ms(early, 0.5), ms(late, 0.5)],
        "cpu_share_of_one_core": {k: round(v / window, 3) for k, v in cpu.items()},
        "cpu_us_per_partial": {
            k: round(v / delivered * 1e6, 1) if delivered else None for k, v in cpu.items()
        },
        "subscriber_max_stall_s": round(max((d.get("max_stall_s", 0.0) for d in done), default=0.0), 3),
    }


def print_report(r: dict[str, Any]) -> None:
    print(
        f"event load: {r['slots']} slots x {r['rate_per_slot']:g} partial message events/s for {r['seconds']:g} s "
        f"(text grows {r['chars_per_partial']} chars per partial), {r['host_procs']} host process(es), "
        f"{r['subscribers']} subscriber process(es); load before {r['load_before']}"
    )
    lost = r["expected"] - r["delivered"]
    print(
        f"  delivered / expected partials      {r['delivered']:,} / {r['expected']:,}  (emitted {r['emitted']:,}; "
        f"{r['events_total']:,} events in all)"
    )
    print(
        f"  seq errors {r['seq_errors']}, gap fills from the replay buffer {r['gap_fills']}, "
        f"slots timed out {r['timed_out_slots']}, errors {r['errors'] or 0}"
    )
    print(
        f"  emit rate: {r['emit_rate_per_slot_mean']} /s per slot (target {r['rate_per_slot']:g}), "
        f"{r['emit_rate_total']:,} /s in all (first to last partial emitted); stream window {r['stream_window_s']} s"
    )
    lag = r["lag_ms"]
    print(
        f"  lag host emit -> subscriber (ms)   p50 {lag['p50']}  p90 {lag['p90']}  p99 {lag['p99']}  max {lag['max']}"
    )
    hb, bs = r["lag_ms_host_to_bridge"], r["lag_ms_bridge_to_subscriber"]
    print(
        f"    host -> bridge publish p50 {hb['p50']} p99 {hb['p99']}; bridge -> subscriber p50 {bs['p50']} "
        f"p99 {bs['p99']}; p50 in the first / last tenth of each stream {r['lag_ms_p50_first_vs_last_tenth']}"
    )
    print(
        "  CPU, share of one core over the stream: "
        + ", ".join(f"{k} {v:.0%}" for k, v in r["cpu_share_of_one_core"].items())
    )
    print("  CPU per partial (us): " + ", ".join(f"{k} {v}" for k, v in r["cpu_us_per_partial"].items()))
    print(f"  subscriber loop max stall {r['subscriber_max_stall_s']} s")
    verdict = "PASS" if lost == 0 and r["seq_errors"] == 0 else "MISS"
    print(f"  {verdict}  no event lost (every partial delivered, seqs contiguous)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=200.0, help="partial message events per second per slot"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each slot's stream")
    parser.add_argument("--chars-per-partial", type=int, default=2, help="text growth per partial")
    parser.add_argument("--subscribers", type=int, default=2, help="subscriber processes (a run's workers)")
    parser.add_argument("--host-procs", type=int, default=1, help="processes serving the simulated hosts")
    parser.add_argument("--json", action="store_true")
    # internal: the child roles
    parser.add_argument("--serve-hosts", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", metavar="CONNECTION_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--sockdir", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.slots < 1 or ns.rate <= 0 or ns.seconds <= 0 or ns.chars_per_partial < 1:
        parser.error("--slots, --rate, --seconds and --chars-per-partial must be positive")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if ns.serve_hosts:
        asyncio.run(serve_hosts(ns))
        return 0
    if ns.subscriber:
        asyncio.run(subscribe_main(ns))
        return 0
    with private_tempdir() as tmp:
        children = Children(tmp)

        async def guarded() -> dict[str, Any]:
            try:
                return await run(ns, children, tmp)
            finally:
                await children.close()

        try:
            results = asyncio.run(guarded())
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        except Exception:
            logging.getLogger("benchmark").exception("benchmark failed")
            return 1
        finally:
            children.kill_now()
    if ns.json:
        print(orjson.dumps(results).decode())
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
