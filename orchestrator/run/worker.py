"""A worker process: one event loop, one bridge client, several attempts at once.

The inbox and the pipe back are :mod:`orchestrator.run.channel` pipes: the loop reads the inbox when it is
readable (no thread), and neither end ever blocks it. Messages are described in
:mod:`orchestrator.run.executor`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from ipc_bridge.client.bridge_client import BridgeClient
from ipc_bridge.redaction import redact_process_output
from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.processes.child_env import withhold
from orchestrator.run.attempt import AttemptRunner
from orchestrator.run.attempt_hosts import simulator_farm
from orchestrator.run.channel import Receiver, Sender
from orchestrator.run.executor import (
    Assign,
    Cancel,
    Connect,
    Crashed,
    Done,
    Go,
    Handoff,
    Hold,
    Ready,
    Released,
    Stop,
    ToWorker,
)
from orchestrator.run.jobs import Job, JobResult, WorkerConfig
from orchestrator.run.live_transcript import FileChannel, LiveLog
from orchestrator.run.pool import receive, send

log = logging.getLogger(__name__)


class Gate:
    """A worker's side of the run's slots (see :mod:`orchestrator.run.pool`): a readied attempt says it is
    ready and waits for its go; a task that is over gives its slot back at once."""

    def __init__(self, wid: int, outbox: Sender) -> None:
        self._wid = wid
        self._outbox = outbox
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._held = False

    async def acquire(self, ticket: str) -> bool:
        if self._held:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        send(self._outbox, Ready(self._wid, ticket))
        try:
            return await future
        finally:
            del self._waiting[ticket]

    def release(self, ticket: str) -> None:
        # To a job readied here if there is one (no round trip through the main process), else back.
        for waiting, future in self._waiting.items():
            if not future.done():
                future.set_result(True)
                send(self._outbox, Handoff(self._wid, ticket, waiting))
                return
        send(self._outbox, Released(self._wid, ticket))

    def go(self, ticket: str) -> None:
        future = self._waiting.get(ticket)
        if future is not None and not future.done():
            future.set_result(True)

    def hold(self) -> None:
        """No more gos: every readied attempt still waiting ends unstarted, and so will later ones."""
        self._held = True
        for future in self._waiting.values():
            if not future.done():
                future.set_result(False)


async def run_guarded(runner: AttemptRunner, job_id: str, job: Job) -> JobResult | Crashed:
    """One job's result, whatever happens: a bug in the runner becomes :class:`Crashed` (the scheduler
    records it as a harness error) instead of a job that never reports back. Shared with the Ray
    executor's node actors."""
    try:
        return await runner.run(job, job_id)
    except Exception as exc:
        log.error("attempt %s crashed: %s", job_id, traceback.format_exc())
        return Crashed(f"{type(exc).__name__}: {exc}")


def hide_secrets(config: WorkerConfig) -> None:
    """First thing in a process that runs attempts (a worker, a Ray node actor): whatever it and the
    children that share its stderr (a forked simulator farm) print is redacted, and its own environment
    loses what its children must not inherit (see :mod:`orchestrator.processes.child_env`)."""
    withhold(config.referenced_env, config.redactor.values)
    redact_process_output(config.redactor)


def worker_main(wid: int, inbox: Any, outbox: Any, config: WorkerConfig, gated: bool = False) -> None:
    """Entry point of a worker process (see :class:`orchestrator.run.pool.Pool`). ``gated``: its jobs are
    readied, then wait for a slot granted by the main process; otherwise each one starts at once."""
    hide_secrets(config)
    logging.basicConfig(
        level=os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING").upper(),
        format=f"%(asctime)s %(levelname)s worker-{wid} %(name)s: %(message)s",
    )
    farm = simulator_farm(config, wid)
    if farm is not None:
        # Now, while this process has no thread, event loop or ZMQ context: the farm is then serving
        # by the time the first attempt needs a host.
        farm.prefork()
    # The start-up's objects (modules, pydantic schemas) out of the collector's sight, as the bridge
    # does: every full collection walked them all, ~20 % of a subscriber's CPU per event.
    gc.freeze()
    asyncio.run(_serve(wid, Receiver(inbox), Sender(outbox), config, gated, farm))


def read_inbox(inbox: Receiver, messages: asyncio.Queue[ToWorker]) -> None:
    """Hand what arrived to the loop's queue; a pipe that ended (the main process is gone) is a Stop."""
    loop = asyncio.get_running_loop()
    for raw in inbox.read():
        msg = receive(raw)
        if not isinstance(msg, ToWorker):
            log.error("unexpected message from the main process: %r", msg)
            continue
        messages.put_nowait(msg)
    if inbox.ended:
        loop.remove_reader(inbox.fileno())
        messages.put_nowait(Stop())


async def _serve(
    wid: int, inbox: Receiver, outbox: Sender, config: WorkerConfig, gated: bool, farm: SimulatorFarm | None
) -> None:
    messages: asyncio.Queue[ToWorker] = asyncio.Queue()
    asyncio.get_running_loop().add_reader(inbox.fileno(), read_inbox, inbox, messages)
    # The farm starts while the bridge does: the first attempt need not wait for it (a failed start
    # is retried by the first attempt that needs a host).
    warming = asyncio.ensure_future(farm.start()) if farm is not None else None
    client: BridgeClient | None = None
    try:
        connection = config.connection_file
        if not connection:
            # The pool starts while the bridge does (their start-ups overlap): the scheduler then says
            # where the bridge is, before any job.
            match await messages.get():
                case Connect(connection_file):
                    connection = connection_file
                case _:
                    pass  # a stop before the bridge was ever up
        if connection:
            client = await BridgeClient.connect(connection)
    finally:
        if client is None:
            if warming is not None:
                warming.cancel()
            if farm is not None:
                await farm.close()
    if client is None:
        return
    gate = Gate(wid, outbox) if gated else None
    # Running attempts' transcripts go straight to the run directory (see orchestrator.run.live_transcript).
    live = LiveLog(FileChannel(Path(config.results_dir)), config.redactor) if config.results_dir else None
    runner = AttemptRunner(client, config, wid, farm, gate=gate, live=live)
    tasks: dict[str, asyncio.Task[None]] = {}

    async def run_job(job_id: str, job: Job) -> None:
        try:
            result = await run_guarded(runner, job_id, job)
        finally:
            tasks.pop(job_id, None)
        send(outbox, Done(wid, job_id, result))

    try:
        while True:
            match await messages.get():
                case Assign(job_id, job):
                    tasks[job_id] = asyncio.ensure_future(run_job(job_id, job))
                case Go(job_id):
                    if gate is not None:
                        gate.go(job_id)
                case Hold():
                    if gate is not None:
                        gate.hold()
                case Cancel():
                    if gate is not None:
                        gate.hold()  # what has not started yet ends without a record
                    for task in list(tasks.values()):
                        task.cancel()
                case Stop():
                    break
                case Connect():
                    pass  # already connected: a replacement worker is told first thing, once
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        await runner.close()
        await client.close()
