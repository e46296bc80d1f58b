"""The Ray executor's driver side: :class:`RayPool`, the scheduler's pool when ``target.executor: ray``.

It implements :class:`orchestrator.run.executor.Executor`, as the local executor does, so the scheduler,
the one writer of the result files, stays one code path: results, resume, budget, retries and progress
behave as in a local run.

* Every alive node that offers the custom resource ``roo_slots`` (``ray start --resources='{"roo_slots":
  8}'``) gets one :class:`orchestrator.ray.node.NodeRunner` actor, pinned to it, holding
  ``min(node's roo_slots, target.slots)`` of the resource: two runs on one cluster never overcommit a
  node. Nodes that join later are found while polling; a node without the resource counts as 0 slots.
* A job goes to the ready node with the most free slots; when no slot is free (fewer slots in the
  cluster than ``target.slots``, or a node was lost) it waits here, counted as in flight.
* A node (or its actor) that dies turns the jobs it held into :class:`Lost`: the scheduler records them
  as infrastructure errors and retries them elsewhere. Its result references are dropped, so a late
  answer can never be recorded twice.
* Workspace templates are shipped with the jobs by default (a tar in the object store, unpacked once per
  node), so nodes need not share the driver's filesystem. Setup and check commands run on the node.
* Each node's bridge events are forwarded to one hub on the driver (:mod:`orchestrator.ray.events`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.ray.events import NAMESPACE, EventHub, hub_name
from orchestrator.ray.node import NodeRunner, Shipped, pack_template
from orchestrator.results import live_transcripts
from orchestrator.run.executor import Crashed, ExecutorStartError, Finished, Lost
from orchestrator.run.jobs import Job, JobResult, WorkerConfig, new_record
from orchestrator.verdict import Cancelled, decide

log = logging.getLogger(__name__)

DEFAULT_RESOURCE = "roo_slots"
DISCOVER_INTERVAL = 2.0
"""Seconds between looks at the cluster's node list (new nodes, dead ones)."""
START_TIMEOUT = 60.0
"""How long the pool waits at start for the nodes' actors (bridges) to come up."""
NO_NODE_GRACE = 60.0
"""Waiting jobs are given back as lost after this long without any node to run them."""
MAX_START_FAILURES = 3
"""A node whose actor failed to start this often is left alone for the rest of the run."""
HUB_DRAIN_TIMEOUT = 5.0
"""At close, how long a subscriber gets to read the last events."""
SHIP_WARN_BYTES = 50 * 1024 * 1024


@dataclass
class _Node:
    index: int
    node_id: str
    actor: Any
    capacity: int
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.jobs)


class RayPool:
    """Ray actors, one per node offering ``resource``, running up to ``slots`` jobs at once in total.

    ``address``: ``None`` uses the Ray instance this process is connected to, else ``$RAY_ADDRESS``,
    else starts a private local one (with ``slots`` of the resource), as ``"local"`` does; ``"auto"``
    joins the cluster started on this machine with ``ray start``; otherwise a cluster address. Ray is
    shut down at :meth:`close` only if this pool connected it.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        slots: int,
        address: str | None,
        resource: str = DEFAULT_RESOURCE,
        ship_workspaces: bool = True,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self._config = config
        self._slots = slots
        self._resource = resource
        self._ship = ship_workspaces
        self._owns_ray = False
        self._connect(address)
        self._nodes: dict[int, _Node] = {}
        self._runs: dict[Any, tuple[int, str]] = {}  # run ObjectRef -> (node index, job id)
        self._starts: dict[Any, int] = {}  # start ObjectRef -> node index
        self._pending: collections.deque[tuple[str, Job]] = collections.deque()
        self._out: list[Finished | Lost] = []
        self._failures: collections.Counter[str] = collections.Counter()
        self._shipped: dict[Path, Shipped] = {}
        self._next_index = 0
        self._next_discover = 0.0
        self._starved_since: float | None = None
        self._closing = False
        self._log_level = os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING")
        self._actor_cls: Any = ray.remote(NodeRunner)
        try:
            driver_node = ray.get_runtime_context().get_node_id()
            self._hub: Any = (
                ray.remote(EventHub)
                .options(
                    name=hub_name(config.run_id),
                    namespace=NAMESPACE,
                    get_if_exists=True,
                    num_cpus=0,
                    # On the driver's node: losing a worker node never loses the run's event stream.
                    scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
                )
                .remote(live_dir=_live_dir(config))
            )
            self._wait_for_nodes(start_timeout)
        except BaseException:
            self._close(timeout=5.0)
            raise

    # -------------------------------------------------------------------------------- set-up

    def _connect(self, address: str | None) -> None:
        if ray.is_initialized():
            return
        # Nothing of a run is sent to Ray's usage-statistics service unless the user asks for it.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        if address == "local":
            kwargs.update(address="local", resources={self._resource: self._slots}, include_dashboard=False)
        else:
            _reachable(address)
            kwargs.update(address=address)
        # ray.init installs a SIGTERM handler that exits at once; the scheduler's (cancel, then record)
        # must stay in charge.
        main = threading.current_thread() is threading.main_thread()
        old_term = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorStartError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc
        finally:
            if main:
                signal.signal(signal.SIGTERM, old_term)
        self._owns_ray = True

    def _wait_for_nodes(self, timeout: float) -> None:
        self._discover()
        deadline = time.monotonic() + timeout
        while self._starts and time.monotonic() < deadline:
            ready, _ = ray.wait(list(self._starts), num_returns=1, timeout=deadline - time.monotonic())
            for ref in ready:
                self._started(ref)
        if not any(n.ready for n in self._nodes.values()):
            offered = {n["NodeID"][:12]: n["Resources"] for n in _nodes() if n["Alive"]}
            raise ExecutorStartError(
                f"no Ray node offers the {self._resource!r} resource, or none could start its bridge "
                f'within {timeout:.0f}s; start nodes with ray start --resources=\'{{"{self._resource}": '
                f"8}}'. Alive nodes and their resources: {offered}"
            )
        log.info(
            "ray: %d node(s) ready, %d slot(s)",
            sum(n.ready for n in self._nodes.values()),
            sum(n.capacity for n in self._nodes.values() if n.ready),
        )

    def _discover(self) -> list[Lost]:
        """Start actors on new nodes; give back the jobs of nodes the cluster reports dead."""
        self._next_discover = time.monotonic() + DISCOVER_INTERVAL
        lost: list[Lost] = []
        alive: dict[str, int] = {}
        for n in _nodes():
            if n.get("Alive"):
                alive[n["NodeID"]] = int(n.get("Resources", {}).get(self._resource, 0))
        for node in list(self._nodes.values()):
            if node.node_id not in alive:
                lost.extend(self._node_died(node.index, "the cluster reports the node dead"))
        if self._closing:
            return lost
        held = {n.node_id for n in self._nodes.values()}
        for node_id, total in alive.items():
            if total > 0 and node_id not in held and self._failures[node_id] < MAX_START_FAILURES:
                self._add_node(node_id, min(total, self._slots))
        return lost

    def _add_node(self, node_id: str, capacity: int) -> None:
        index = self._next_index
        self._next_index += 1
        actor = self._actor_cls.options(
            num_cpus=0,
            resources={self._resource: capacity},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            max_restarts=0,
            max_task_retries=0,
            name=None,
        ).remote(self._config, index, node_id, self._hub, self._log_level)
        self._nodes[index] = _Node(index, node_id, actor, capacity)
        self._starts[actor.start.remote()] = index

    def _started(self, ref: Any) -> None:
        index = self._starts.pop(ref)
        node = self._nodes.get(index)
        if node is None:
            return
        try:
            node.info = dict(ray.get(ref))
        except RayError as exc:
            self._failures[node.node_id] += 1
            log.error("ray node %s could not start its bridge: %s", node.node_id, exc)
            self._node_died(index, str(exc))
            return
        node.ready = True
        log.info("ray node %s ready (%d slots): %s", node.node_id, node.capacity, node.info)

    # ---------------------------------------------------------------------------- pool interface

    @property
    def capacity(self) -> int:
        """Ray nodes ready no attempt ahead of a free slot (``prelaunch`` is 0)."""
        return self._slots

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by :meth:`poll` (running, waiting, or to be reported)."""
        undelivered = sum(len(i.jobs) if isinstance(i, Lost) else 1 for i in self._out)
        return len(self._pending) + sum(len(n.jobs) for n in self._nodes.values()) + undelivered

    @property
    def free_slots(self) -> int:
        running = sum(len(n.jobs) for n in self._nodes.values())
        free = sum(n.free for n in self._nodes.values() if n.ready)
        return max(0, min(self._slots - running, free) - len(self._pending))

    @property
    def nodes(self) -> dict[str, int]:
        """Ready nodes and their slots."""
        return {n.node_id: n.capacity for n in self._nodes.values() if n.ready}

    def submit(self, job_id: str, job: Job) -> None:
        """Queue a job; it starts at once if a node has a free slot."""
        self._pending.append((job_id, job))
        self._dispatch()

    def poll(self, timeout: float) -> list[Finished | Lost]:
        """Results that arrived within ``timeout``, and jobs lost with a dead node."""
        out, self._out = self._out, []
        if time.monotonic() >= self._next_discover:
            out.extend(self._discover())
        refs = list(self._runs) + list(self._starts)
        ready: list[Any] = []
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=0 if out else timeout)
            if ready and len(refs) > 1:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        elif not out:
            time.sleep(timeout)  # nothing to wait on: the scheduler is waiting for a retry's backoff
        for ref in ready:
            if ref in self._starts:
                self._started(ref)
            elif ref in self._runs:
                out.extend(self._collect(ref))
        self._dispatch()
        out.extend(self._starved())
        return out

    def hold_all(self) -> None:
        """Nothing to hold: Ray nodes ready no attempt ahead of a free slot (``prelaunch`` is 0)."""

    def cancel_all(self) -> None:
        """Cancel every job: running ones through their node (CancelTask, then a ``cancelled`` record),
        waiting ones here (a ``cancelled`` record without a start)."""
        now = datetime.now(timezone.utc)
        while self._pending:
            job_id, job = self._pending.popleft()
            record = new_record(
                self._config.run_id,
                job,
                decide(Cancelled()),
                started=now,
                ended=now,
                passed=None,
            )
            self._out.append(Finished(job_id, job, JobResult(record.model_dump(mode="json"))))
        for node in self._nodes.values():
            if node.ready and node.jobs:
                node.actor.cancel_all.remote()

    def close(self, *, kill: bool = False) -> None:
        """Stop the node actors (their hosts and bridges), let a subscriber read the last events, stop
        the hub, and shut Ray down if this pool connected it. ``kill``: give the nodes less time."""
        self._close(timeout=2.0 if kill else 10.0)

    def _close(self, timeout: float) -> None:
        self._closing = True
        nodes = list(self._nodes.values())
        stops = [n.actor.stop.remote() for n in nodes if n.ready]
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=timeout)
        for node in nodes:
            with contextlib.suppress(Exception):
                ray.kill(node.actor, no_restart=True)
        self._nodes.clear()
        self._runs.clear()
        self._starts.clear()
        hub = getattr(self, "_hub", None)
        if hub is not None:
            with contextlib.suppress(Exception):
                ray.get(hub.drain.remote(HUB_DRAIN_TIMEOUT), timeout=HUB_DRAIN_TIMEOUT + 10)
            with contextlib.suppress(Exception):
                ray.kill(hub, no_restart=True)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def events(self, timeout: float = 1.0, max_items: int = 10_000) -> list[dict[str, Any]]:
        """The run's next forwarded events (this process as the one subscriber; see
        :class:`orchestrator.ray.events.EventFeed` for another process)."""
        events, _dropped = ray.get(self._hub.get.remote(max_items, timeout), timeout=timeout + 30)
        return list(events)

    # ------------------------------------------------------------------------------- internals

    def _dispatch(self) -> None:
        while self._pending:
            running = sum(len(n.jobs) for n in self._nodes.values())
            candidates = [n for n in self._nodes.values() if n.ready and n.free > 0]
            if running >= self._slots or not candidates:
                break
            node = max(candidates, key=lambda n: (n.free, -n.index))
            job_id, job = self._pending.popleft()
            ref = node.actor.run.remote(job_id, job, self._shipped_template(job))
            node.jobs[job_id] = job
            self._runs[ref] = (node.index, job_id)

    def _shipped_template(self, job: Job) -> Shipped | None:
        path = job.attempt.case.workspace
        if not self._ship or path is None:
            return None
        shipped = self._shipped.get(path)
        if shipped is None:
            try:
                data = pack_template(path)
            except OSError as exc:
                # The node's own copy fails the same way and records it as a setup failure.
                log.error("cannot pack workspace template %s: %s", path, exc)
                return None
            if len(data) > SHIP_WARN_BYTES:
                log.warning(
                    "workspace template %s is %d MB: every node fetches it once per run",
                    path,
                    len(data) >> 20,
                )
            shipped = Shipped(hashlib.sha256(data).hexdigest()[:32], ray.put(data))
            self._shipped[path] = shipped
        return shipped

    def _collect(self, ref: Any) -> list[Finished | Lost]:
        index, job_id = self._runs.pop(ref)
        node = self._nodes.get(index)
        if node is None:  # pragma: no cover - a dead node's refs are dropped with it
            return []
        try:
            result = ray.get(ref)
        except RayTaskError as exc:
            job = node.jobs.pop(job_id)
            log.error("attempt %s failed on node %s: %s", job_id, node.node_id, exc)
            return [Finished(job_id, job, Crashed(f"{type(exc).__name__}: {exc}"))]
        except RayError as exc:
            return list(self._node_died(index, f"{type(exc).__name__}: {exc}"))
        return [Finished(job_id, node.jobs.pop(job_id), result)]

    def _node_died(self, index: int, reason: str) -> list[Lost]:
        node = self._nodes.pop(index, None)
        if node is None:
            return []
        self._runs = {r: v for r, v in self._runs.items() if v[0] != index}
        self._starts = {r: i for r, i in self._starts.items() if i != index}
        with contextlib.suppress(Exception):
            ray.kill(node.actor, no_restart=True)
        if not node.jobs:
            log.warning("ray node %s gone (%s)", node.node_id, reason.splitlines()[0][:300])
            return []
        log.error(
            "ray node %s lost with %d attempt(s) in flight: %s",
            node.node_id,
            len(node.jobs),
            reason.splitlines()[0][:300],
        )
        return [Lost(index, None, dict(node.jobs))]

    def _starved(self) -> list[Lost]:
        """Waiting jobs with no node to go to for :data:`NO_NODE_GRACE`: lost (the scheduler retries or
        records them), so a run whose cluster vanished ends instead of waiting forever."""
        if not self._pending or any(self._nodes.values()):
            self._starved_since = None
            return []
        now = time.monotonic()
        if self._starved_since is None:
            self._starved_since = now
            log.error("no Ray node offers %r: %d attempt(s) waiting", self._resource, len(self._pending))
        if now - self._starved_since < NO_NODE_GRACE:
            return []
        jobs = dict(self._pending)
        self._pending.clear()
        self._starved_since = None
        return [Lost(-1, None, jobs)]


def _live_dir(config: WorkerConfig) -> str:
    """Where the hub writes the nodes' live transcripts: the run directory's (this machine's)."""
    return str(live_transcripts.live_dir(Path(config.results_dir))) if config.results_dir else ""


def _nodes() -> list[dict[str, Any]]:
    return list(ray.nodes())  # type: ignore[no-untyped-call]


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nobody answers: ray.init retries one for minutes."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port; let Ray interpret it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorStartError(
            f"nothing answers at {hostport} ({exc}): is the Ray head running (ray start --head) and "
            "reachable from here?"
        ) from None
