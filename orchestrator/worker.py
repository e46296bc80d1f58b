"""A worker process: one event loop, one bridge client, several attempts at once.

The inbox is a multiprocess queue read by a thread (its ``get`` blocks) and handed to the loop; the
loop never blocks on it. Messages are described in :mod:`orchestrator.pool`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from typing import Any

from ipc_bridge.client import BridgeClient

from .attempt import AttemptRunner
from .jobs import Job, JobResult, WorkerConfig
from .pool import receive, send

log = logging.getLogger(__name__)


async def run_guarded(runner: AttemptRunner, job_id: str, job: Job) -> JobResult:
    """One job's result, whatever happens: a bug in the runner becomes a ``crash`` result (the scheduler
    records it as a harness error) instead of a job that never reports back. Shared with the Ray
    executor's node actors."""
    try:
        return await runner.run(job)
    except Exception as exc:
        log.error("attempt %s crashed: %s", job_id, traceback.format_exc())
        return JobResult(record={"crash": f"{type(exc).__name__}: {exc}"})


def worker_main(wid: int, inbox: Any, outbox: Any, config: WorkerConfig) -> None:
    """Entry point of a worker process (see :class:`orchestrator.pool.Pool`)."""
    logging.basicConfig(
        level=os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING").upper(),
        format=f"%(asctime)s %(levelname)s worker-{wid} %(name)s: %(message)s",
    )
    asyncio.run(_serve(wid, inbox, outbox, config))


async def _serve(wid: int, inbox: Any, outbox: Any, config: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def read_inbox() -> None:
        while True:
            msg = receive(inbox.get())
            loop.call_soon_threadsafe(messages.put_nowait, msg)
            if msg[0] == "stop":
                return

    threading.Thread(target=read_inbox, name="inbox", daemon=True).start()
    connection = config.connection_file
    if not connection:
        # The pool starts while the bridge does (their start-ups overlap): the scheduler then says where
        # the bridge is, before any job.
        msg = await messages.get()
        if msg[0] != "connect":
            return
        connection = msg[1]
    client = await BridgeClient.connect(connection)
    runner = AttemptRunner(client, config, wid)
    running: dict[str, asyncio.Task[None]] = {}

    async def run_job(job_id: str, job: Job) -> None:
        try:
            result = await run_guarded(runner, job_id, job)
        finally:
            running.pop(job_id, None)
        send(outbox, ("done", wid, job_id, result))

    try:
        while True:
            msg = await messages.get()
            if msg[0] == "job":
                _, job_id, job = msg
                running[job_id] = asyncio.ensure_future(run_job(job_id, job))
            elif msg[0] == "cancel":
                for task in list(running.values()):
                    task.cancel()
            elif msg[0] == "stop":
                break
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
    finally:
        await runner.close()
        await client.close()
