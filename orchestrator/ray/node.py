"""The Ray executor's node side: one actor per node that offers extension-host slots.

The actor is to its node what a worker process is to a local run, plus the bridge: it makes a private
runtime directory on its node, starts that node's bridge (:func:`start_bridge_process`), and runs the
jobs it is given through one :class:`AttemptRunner` on its asyncio loop, several at once, exactly as a
local worker does (:func:`orchestrator.run.worker.run_guarded`). Hosts, workspaces and check commands all
live on the node; only the job goes in and the record and transcript come out.

Ray runs an async actor's methods and ``__init__`` on one event-loop thread that lives as long as the
actor, so the bridge and host processes (tied to the thread that started them by ``PR_SET_PDEATHSIG``)
die with the actor, including when its node is lost.

Exercise templates may be shipped with the job (:class:`Shipped`: a tar in the object store) for nodes
that do not share the driver's filesystem; each node unpacks a template once and reuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ipc_bridge.server.launcher import BridgeProcess, start_bridge_process
from ipc_bridge.wire.connection_file import read_connection_file
from orchestrator.hosts import marks as host_marks
from orchestrator.processes import runtime_dir
from orchestrator.processes.child_env import service_env
from orchestrator.ray.events import Forwarder, ForwardingClient
from orchestrator.ray.live import HubChannel
from orchestrator.run.attempt import AttemptRunner
from orchestrator.run.executor import Crashed
from orchestrator.run.jobs import Job, JobResult, WorkerConfig, new_record
from orchestrator.run.live_transcript import LiveLog
from orchestrator.run.local import new_runtime_dir
from orchestrator.run.worker import hide_secrets, run_guarded
from orchestrator.verdict import Cancelled, decide

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Shipped:
    """A workspace template sent with the job: ``blob`` is an ObjectRef to the tar's bytes. It travels
    nested in this object so that Ray does not fetch it for a node that has unpacked it already."""

    digest: str
    blob: Any


def pack_template(path: Path) -> bytes:
    """``path``'s tree as an uncompressed tar (symlinks kept, as the local copy keeps them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def unpack_template(data: bytes, dest: Path) -> None:
    """Extract into ``dest`` (a new directory), refusing members that would land outside it."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 has no extraction filters
                root = tmp.resolve()
                for member in tar.getmembers():
                    target = (tmp / member.name).resolve()
                    if root != target and root not in target.parents:
                        raise ValueError(f"template member {member.name!r} points outside the workspace")
                tar.extractall(tmp)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class NodeRunner:
    """A Ray async actor (wrapped with ``ray.remote`` by :mod:`orchestrator.ray.pool`)."""

    def __init__(
        self, config: WorkerConfig, index: int, node_id: str, hub: Any, log_level: str = "WARNING"
    ) -> None:
        hide_secrets(config)
        logging.basicConfig(
            level=log_level.upper(),
            format=f"%(asctime)s %(levelname)s node-{index} %(name)s: %(message)s",
        )
        self.index = index
        self.node_id = node_id
        self._hub = hub
        self._base = config
        self._config: WorkerConfig | None = None
        self._runtime: Path | None = None
        self._bridge: BridgeProcess | None = None
        self._client: ForwardingClient | None = None
        self._runner: AttemptRunner | None = None
        self._forwarder: Forwarder | None = None
        self._live: HubChannel | None = None
        self._running: dict[str, asyncio.Task[JobResult | Crashed]] = {}
        self._templates: dict[str, Path] = {}
        self._unpacking: dict[str, asyncio.Lock] = {}

    async def start(self) -> dict[str, Any]:
        """Runtime dir, bridge, client: ready to run jobs. Returns facts about the node for the driver."""
        # Blocking for the bridge's start (well under a second): it must be started from this thread.
        config = self._start_bridge()
        self._config = config
        client = ForwardingClient(read_connection_file(Path(config.connection_file)))
        self._client = client
        live = None
        if self._hub is not None:
            self._forwarder = Forwarder(self._hub, self.node_id)
            client.sink = self._forwarder
            # Running attempts' transcripts, to the driver's machine (see orchestrator.ray.live).
            self._live = HubChannel(self._hub)
            live = LiveLog(self._live, config.redactor, node=self.node_id)
        self._runner = AttemptRunner(client, config, self.index, live=live)
        return {"node_id": self.node_id, "hostname": socket.gethostname(), "pid": os.getpid()}

    def _start_bridge(self) -> WorkerConfig:
        # Made as a local run's is, named after this actor's process: if the actor is killed outright, the
        # next run (or node actor) on this machine removes it and ends its hosts. Not when it keeps
        # workspaces: they are the user's then.
        runtime = new_runtime_dir(owned=not self._base.keep_workspaces)
        self._runtime = runtime
        work = runtime / "work"
        work.mkdir()
        (runtime / "templates").mkdir()
        with open(runtime / runtime_dir.BRIDGE_LOG, "ab") as bridge_log:
            self._bridge = start_bridge_process(
                runtime / "bridge", stderr=bridge_log, env=service_env(), secrets=self._base.redactor.values
            )
        return dataclasses.replace(
            self._base,
            connection_file=str(self._bridge.connection_file),
            runtime_dir=str(runtime),
            work_dir=str(work),
            results_dir="",  # the driver's: perhaps on another machine
            node=self.node_id,
        )

    async def run(self, job_id: str, job: Job, shipped: Shipped | None) -> JobResult | Crashed:
        """Run one job to its record (a crash in the runner is :class:`Crashed`, never an exception)."""
        if self._runner is None:
            raise RuntimeError("NodeRunner.start() was not called")
        task = asyncio.ensure_future(self._run(self._runner, job_id, job, shipped))
        self._running[job_id] = task
        try:
            return await task
        finally:
            self._running.pop(job_id, None)

    async def _run(
        self, runner: AttemptRunner, job_id: str, job: Job, shipped: Shipped | None
    ) -> JobResult | Crashed:
        if shipped is not None:
            started = datetime.now(timezone.utc)
            try:
                local = await self._template(shipped)
            except asyncio.CancelledError:
                assert self._config is not None
                record = new_record(
                    self._config.run_id,
                    job,
                    decide(Cancelled()),
                    started=started,
                    ended=datetime.now(timezone.utc),
                    passed=None,
                    node=self.node_id,
                )
                return JobResult(record.model_dump(mode="json"))
            except Exception as exc:
                log.error("attempt %s: cannot unpack its workspace template: %s", job_id, exc)
                return Crashed(f"workspace template not unpacked: {exc}")
            case = job.attempt.case.model_copy(update={"workspace": local})
            job = dataclasses.replace(job, attempt=dataclasses.replace(job.attempt, case=case))
        return await run_guarded(runner, job_id, job)

    async def _template(self, shipped: Shipped) -> Path:
        path = self._templates.get(shipped.digest)
        if path is not None:
            return path
        assert self._runtime is not None
        lock = self._unpacking.setdefault(shipped.digest, asyncio.Lock())
        async with lock:
            path = self._templates.get(shipped.digest)
            if path is None:
                data: bytes = await shipped.blob
                path = self._runtime / "templates" / shipped.digest
                await asyncio.to_thread(unpack_template, data, path)
                self._templates[shipped.digest] = path
        return path

    async def cancel_all(self) -> int:
        """Cancel every running attempt (each still returns its ``cancelled`` record)."""
        for task in self._running.values():
            task.cancel()
        return len(self._running)

    async def stop(self) -> None:
        """Wait for running attempts, stop the runner's hosts, the bridge, and remove the runtime dir."""
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        try:
            if self._runner is not None:
                await self._runner.close()
            if self._forwarder is not None:
                await self._forwarder.close()
            if self._live is not None:
                await self._live.close()
            if self._client is not None:
                await self._client.close()
        finally:
            if self._bridge is not None:
                self._bridge.stop()
            if self._runtime is not None:
                # What escaped its host's teardown (recorded below this actor, its subreaper): as at a
                # local run's end.
                await asyncio.to_thread(host_marks.end_marked, host_marks.of_run(self._runtime))
            if self._runtime is not None and not self._base.keep_workspaces:
                with contextlib.suppress(OSError):
                    shutil.rmtree(self._runtime)
