"""The report of bridge_throughput.py: its targets, and the table it prints."""

from __future__ import annotations

from typing import Any

STREAM_TARGET_X = 1.0
STREAM_TARGET_SHARE = 0.8
RTT_TARGET_US = 150.0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    node, bridged = results["stream_node_client"], results["stream_bridge"]
    rtt = results["round_trip"]
    rate = bridged["events_per_s"] or 0.0
    intact = (
        bridged["events"] == bridged["expected"]
        and bridged["seq_errors"] == bridged["out_of_order"] == 0
        and node["events"] == node["expected"]
        and node["invalid"] == bridged["invalid"] == rtt["invalid"] == 0
    )
    added = rtt["bridge"]["p50_us"] - min(rtt["node_raw"]["p50_us"], rtt["node_validated"]["p50_us"])
    return [
        {
            "target": "bridge events/s >= node-ipc client",
            "value": rate / node["events_per_s"],
            "limit": STREAM_TARGET_X,
            "pass": rate >= STREAM_TARGET_X * node["events_per_s"],
        },
        {
            "target": "bridge events/s >= 80% of server emit rate",
            "value": rate / bridged["server_emit_rate"],
            "limit": STREAM_TARGET_SHARE,
            "pass": rate >= STREAM_TARGET_SHARE * bridged["server_emit_rate"],
        },
        {
            "target": "every event once, in order; zero invalid",
            "value": bridged["events"],
            "limit": bridged["expected"],
            "pass": intact,
        },
        {
            "target": "bridge p50 - node-ipc p50 <= 150 us",
            "value": added,
            "limit": RTT_TARGET_US,
            "pass": added <= RTT_TARGET_US,
        },
    ]


def _cpu(values: dict[str, float | None]) -> str:
    shown = [f"{name} {value:.0f}" for name, value in values.items() if value is not None]
    return "CPU us: " + ", ".join(shown) if shown else ""


def print_report(opts: Any, results: dict[str, Any]) -> None:
    """``opts``: the benchmark's ``Options``."""
    node, bridged, sink = results["stream_node_client"], results["stream_bridge"], results["stream_raw_sink"]
    rtt = results["round_trip"]
    print(f"machine: {results['machine']}")
    print(f"\nthroughput: {opts.events} message events of ~{opts.size} B (+3), a server run per path")
    print(f"  {'path':<48} {'events/s':>9}  {'received':>8}  notes")
    print(
        f"  {'(a) node-ipc client + ipcMessageSchema, direct':<48} {node['events_per_s']:>9,.0f}  "
        f"{node['events']:>8}  server emitted {node['server_emit_rate']:,.0f}/s; "
        f"per event {_cpu(node['cpu_us_per_event'])}"
    )
    print(
        f"  {'(b) bridge -> BridgeClient.events (Python)':<48} {bridged['events_per_s'] or 0:>9,.0f}  "
        f"{bridged['events']:>8}  target {STREAM_TARGET_X:g} x (a) = {STREAM_TARGET_X * node['events_per_s']:,.0f}; "
        f"seq errors {bridged['seq_errors']}, out of order {bridged['out_of_order']}, "
        f"gap fills {bridged['gap_fills']}; per event {_cpu(bridged['cpu_us_per_event'])}; "
        f"subscriber loop stalled up to {bridged['subscriber_max_stall_s']:.2f} s"
    )
    print(
        f"  {'(c) server emit rate during (b)':<48} {bridged['server_emit_rate']:>9,.0f}  {'':>8}  "
        f"target (b) >= {STREAM_TARGET_SHARE:.0%} of it = "
        f"{STREAM_TARGET_SHARE * bridged['server_emit_rate']:,.0f}"
    )
    floor = results["stream_floor"]
    print(
        f"  {'(e) bridge -> least Python subscriber (floor)':<48} {floor['events_per_s'] or 0:>9,.0f}  "
        f"{floor['events']:>8}  per event {_cpu(floor['cpu_us_per_event'])} "
        f"(consuming thread {floor['consumer_thread_cpu_us_per_event'] or 0:.0f})"
    )
    print(
        f"  {'(d) server emit rate to a raw byte sink':<48} {sink['server_emit_rate']:>9,.0f}  "
        f"{sink['frames']:>8}  ceiling for any reader here; per event {_cpu(sink['cpu_us_per_event'])}"
    )
    print(f"\nround trip GetModes -> modesResponse: {opts.round_trips} each after {opts.warmup} warm-up")
    print(f"  {'path':<48} {'p50 us':>7} {'p90 us':>7} {'p99 us':>7}  CPU per round trip")
    rows = [
        ("node-ipc client -> roo_server.js (raw)", rtt["node_raw"]),
        ("node-ipc client -> roo_server.js (+ zod)", rtt["node_validated"]),
        ("Python ExtensionConnection, direct", rtt["python_direct"]),
        ("asyncio ZeroMQ DEALER -> ROUTER echo (transport)", rtt["zmq_echo"]),
        ("ZeroMQ echo, plain sockets (bridge's transport)", rtt["zmq_plain_echo"]),
        ("worker -> bridge -> extension -> worker", rtt["bridge"]),
    ]
    for label, s in rows:
        cpu = _cpu(s.get("cpu_us", {}))
        print(f"  {label:<48} {s['p50_us']:>7.0f} {s['p90_us']:>7.0f} {s['p99_us']:>7.0f}  {cpu}")
    print("\ntargets:")
    for check in results["targets"]:
        value, limit = check["value"], check["limit"]
        shown = f"{value:.2f} (limit {limit:g})" if isinstance(value, float) else f"{value} of {limit}"
        print(f"  {'PASS' if check['pass'] else 'MISS'}  {check['target']:<46} {shown}")
    print(
        f"  note: (c) is paced by the bridge (the server waits for 'drain'); against the unpaced rate (d) "
        f"the bridge path gets {results['bridge_share_of_ceiling']:.0%}, and {STREAM_TARGET_X:g} x (a) is "
        f"{results['target_share_of_ceiling']:.0%} of (d)"
    )
