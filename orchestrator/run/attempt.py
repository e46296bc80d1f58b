"""One attempt, start to finish: workspace → host → StartNewTask → outcome → check → record.

Runs inside a worker process, in asyncio, through that process's one :class:`BridgeClient`. Every path
out of :meth:`AttemptRunner.run` — success, agent failure, host crash, bridge loss, cancellation —
produces exactly one record and leaves no host process, socket or workspace behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
from collections.abc import Awaitable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from ipc_bridge.client.types import BridgeError, BridgeRestarted, Event
from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import Host, HostError, HostExited
from orchestrator.outcome import OutcomeTracker
from orchestrator.results.records import CheckResult, Timings
from orchestrator.run.attempt_hosts import AttemptHosts
from orchestrator.run.grading import run_command
from orchestrator.run.jobs import Job, JobResult, WorkerConfig, new_record
from orchestrator.run.slot_events import AttemptBridge, SlotEvents, is_partial, transcript_row
from orchestrator.status import Status
from orchestrator.suite.plan import Attempt

log = logging.getLogger(__name__)

SLOT_DOWN = "slot_down"
DISCONNECTED = "extension host disconnected"
EXIT_WAIT = 2.0
"""How long a host whose connection went down is given to exit, so that its record says how it did."""
TASK_EVENT = "task_event"

T = TypeVar("T")


class _Phase:
    """Lap times on the loop's clock (the one the attempt's deadlines use)."""

    def __init__(self) -> None:
        self.timings = Timings()
        self._loop = asyncio.get_running_loop()
        self._t = self._loop.time()

    def lap(self, name: str) -> None:
        now = self._loop.time()
        setattr(self.timings, name, round(now - self._t, 4))
        self._t = now


class SlotGate(Protocol):
    """The run's slots, for attempts readied ahead (``prelaunch``)."""

    async def acquire(self, ticket: str) -> bool:
        """A slot for ``ticket``'s task; False if held back (a spent budget, a stop)."""

    def release(self, ticket: str) -> None:
        """``ticket``'s task is over: its slot may go to the next readied attempt."""


class AttemptRunner:
    """Runs jobs for one worker process; several at once (one asyncio task each)."""

    def __init__(
        self,
        client: AttemptBridge,
        config: WorkerConfig,
        wid: int,
        farm: SimulatorFarm | None = None,
        *,
        gate: SlotGate | None = None,
    ) -> None:
        """``gate``: where a readied attempt (workspace, host, attach) gets its slot before its task
        starts; None: every job given runs at once."""
        self.client = client
        self.config = config
        self.wid = wid
        self._gate = gate
        self._counter = itertools.count(1)
        self._hosts = AttemptHosts(config, wid, farm)
        self._restart = asyncio.Event()
        self._restarted = "the bridge restarted"
        client.on_restart.append(self._on_restart)

    def _on_restart(self, restarted: BridgeRestarted) -> None:
        self._restarted = str(restarted)
        self._restart.set()
        self._restart = asyncio.Event()

    async def _unless_restart(self, request: Awaitable[T], restart: asyncio.Event) -> T:
        """Await a bridge request or stream, ended by BridgeError as soon as ``restart`` is set.

        The slot of an attempt lives on the bridge it was attached to; once that bridge is gone, what
        was in flight may have gone with it: a request would only be resent to the successor after its
        whole timeout (30-40 s for attach and StartNewTask), and a stream still subscribing or taking
        its snapshot would wait as long, the attempt then timing out as if its host were silent."""
        waiter = asyncio.ensure_future(restart.wait())
        task = asyncio.ensure_future(request)
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled():
            raise BridgeError(self._restarted)
        return task.result()

    async def close(self) -> None:
        """Stop what the runner started for its attempts (the simulator farm). The worker calls it last."""
        await self._hosts.close()

    async def run(self, job: Job, ticket: str = "") -> JobResult:
        """Run ``job`` (``ticket`` names it to the gate) to its record, or to an unstarted result when
        the gate held it back or it was cancelled before its task started."""
        started = datetime.now(timezone.utc)
        phase = _Phase()
        attempt = job.attempt
        n = next(self._counter)
        slot = f"w{self.wid}-{n}"
        transcript: list[dict[str, Any]] = []
        tracker: OutcomeTracker | None = None
        host: Host | None = None
        launched: Host | None = None  # the host, kept for its record after teardown
        host_log: Path | None = None
        host_end: str | None = None  # how the host ended by itself, if it did
        check: CheckResult | None = None
        diff_file: str | None = None
        status, reason = Status.INFRA_ERROR, ""
        error_class: Literal["infra", "harness"] | None = "infra"
        error: str | None = None
        attached = False  # the slot exists in the bridge: it must be detached, its task cancelled if stopped
        holding = False  # one of this worker's slots: given back as soon as the agent is done
        task_started = False  # StartNewTask may have gone out: the attempt gets a record, whatever happens
        unstarted = False
        workspace = self._hosts.workspace(job)
        try:
            try:
                await self._prepare(attempt, workspace)
                phase.lap("setup_s")
            except _HarnessError as exc:
                raise _Stop(Status.INFRA_ERROR, "setup failed", "harness", str(exc)) from exc
            try:
                host, socket_path = await self._hosts.host(job, workspace, slot)
                launched = host
                host_log = host.log_path if host is not None else None
                attached = True  # even a failed attach may leave a connecting slot behind
                restart = self._restart  # set by the next bridge restart: then the slot is gone
                await self._unless_restart(self._attach(host, slot, socket_path), restart)
                phase.lap("launch_s")
            except HostExited as exc:
                raise _Stop(Status.INFRA_ERROR, str(exc), "infra", str(exc)) from exc
            except (HostError, BridgeError, OSError) as exc:
                raise _Stop(Status.INFRA_ERROR, "extension host did not come up", "infra", str(exc)) from exc
            # Subscribed while the attempt waits for a slot: the welcome and the snapshot of its stream
            # are then not on the task's clock.
            events = SlotEvents(self.client.events(slot, since_seq=0), restart, lambda: self._restarted)
            try:
                if self._gate is not None:
                    if not await self._gate.acquire(ticket):
                        raise _Unstarted
                    holding = True
                    phase.lap("wait_s")
                task_started = True
                # Made here, not in _follow: a Ctrl-C in the middle still finds what it knew.
                tracker = OutcomeTracker(asyncio.get_running_loop().time(), attempt.limits)
                await self._follow(attempt, slot, restart, events, tracker, transcript)
            finally:
                await events.aclose()
            outcome = tracker.result()
            status, reason, error = outcome.status, outcome.reason, outcome.error
            responsive = tracker.host_responsive
            error_class = "infra" if status.is_infra else None
            phase.lap("agent_s")
            # The task is over: a readied attempt may start now, while this one tears down and is checked.
            holding = self._release(holding, ticket)
            if reason == DISCONNECTED and host is not None:
                await host.wait(EXIT_WAIT)  # most likely exiting (a crash): its exit status says how
            # CloseTask is for a task a responsive host has: a host that never reported one (it never
            # answered StartNewTask) would only sit out the grace.
            host_end = await self._cleanup_host(slot, host, responsive, close=tracker.root is not None)
            host, attached = None, False
            if status.is_infra and host_end and error is None:
                error = f"the extension host {host_end}"
            # Before the check, which may write files of its own: what the agent (and setup) changed.
            diff_file = await self._diff(job, workspace)
            phase.lap("teardown_s")
            if not status.is_infra and attempt.case.check:
                check = await run_command(
                    attempt.case.check, workspace, timeout=attempt.check_timeout, env=attempt.env or None
                )
                phase.lap("check_s")
        except _Stop as stop:
            status, reason, error_class, error = stop.status, stop.reason, stop.error_class, stop.detail
        except _Unstarted:
            unstarted = True
        except asyncio.CancelledError:
            status, reason, error_class = Status.CANCELLED, "cancelled by the orchestrator", None
            unstarted = not task_started
            if task_started and phase.timings.agent_s is None:
                phase.lap("agent_s")  # how long the task ran before the stop
            if tracker is not None and tracker.status is not None:
                # Stopped in its cancel, teardown or check: what the agent did is known, its grade is not.
                reason += f" after the task ended {tracker.status.value}"
            if attached and task_started:
                # A leased host (socket target) is not closed afterwards: its task must be stopped here.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.cancel(slot), 2)
        finally:
            self._release(holding, ticket)
            if host is not None or attached:
                host_end = await asyncio.shield(self._cleanup_host(slot, host)) or host_end
            if not self.config.keep_workspaces:
                await asyncio.shield(_remove(workspace))
        # Kept in the results: what a host wrote, and why it died (redacted like every record).
        host_log_name, host_output = await asyncio.shield(
            self._hosts.output(job, host_log, tail=status is Status.INFRA_ERROR or host_end is not None)
        )
        if unstarted:
            # Never run (a stop or a spent budget held it back): nothing to record.
            return JobResult({}, unstarted=True)
        if check is not None:
            passed: bool | None = check.passed
        else:
            passed = True if status is Status.COMPLETED and not attempt.case.check else None
        ended = datetime.now(timezone.utc)
        record = new_record(
            self.config.run_id,
            job,
            status,
            started=started,
            ended=ended,
            passed=passed,
            reason=reason,
            error_class=error_class if (status.is_infra or error) else None,
            error=error,
            task_id=tracker.root if tracker else None,
            slot=slot,
            node=self.config.node,
            timings=phase.timings,
            check=check,
            host_log=host_log_name,
            host_output_tail=host_output,
            host_killed=list(launched.killed) if launched is not None else [],
            kept_workspace=self._hosts.in_results(workspace) if self.config.keep_workspaces else None,
            diff_file=diff_file,
        )
        if tracker is not None:
            record.metrics = tracker.metrics()
        return JobResult(record.model_dump(mode="json"), transcript)

    def _release(self, holding: bool, ticket: str) -> bool:
        if holding and self._gate is not None:
            self._gate.release(ticket)
        return False

    # ---------------------------------------------------------------------------------- phases

    async def _prepare(self, attempt: Attempt, workspace: Path) -> None:
        template = attempt.case.workspace
        if template is not None:
            await asyncio.to_thread(shutil.copytree, template, workspace, dirs_exist_ok=True, symlinks=True)
        for command in attempt.case.setup:
            result = await run_command(
                command, workspace, timeout=attempt.setup_timeout, env=attempt.env or None
            )
            if not result.passed:
                raise _HarnessError(
                    f"setup command {command!r} exited {result.exit_code}: {result.output_tail[-500:]}"
                )

    async def _diff(self, job: Job, workspace: Path) -> str | None:
        """The workspace's diff, kept; a failure to take it costs the attempt its diff, nothing more."""
        try:
            return await self._hosts.diff(job, workspace)
        except OSError as exc:
            log.warning("%s: no workspace diff: %s", job.attempt.key.slug, exc)
            return None

    async def _attach(self, host: Host | None, slot: str, socket_path: str) -> None:
        """Attach the slot to the host's socket; a launched host that ends meanwhile is noticed at once
        (:class:`HostExited`), not after the whole ``launch_timeout``."""
        attach = asyncio.ensure_future(
            self.client.attach(slot, socket_path, connect_timeout=self._hosts.launch_timeout())
        )
        if host is None:
            await attach
            return
        ended = asyncio.ensure_future(host.wait(None))
        try:
            await asyncio.wait({attach, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not attach.done() and await host.hand_off():
                # A launcher that started the host detached, as `code` does: now the host is what it
                # started, whose end is noticed as the launcher's was.
                ended = asyncio.ensure_future(host.wait(None))
                await asyncio.wait({attach, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not attach.done():
                attach.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attach
        if attach.cancelled():
            raise HostExited(f"extension host {host.ended_by_itself} before listening on its socket")
        attach.result()

    async def _follow(
        self,
        attempt: Attempt,
        slot: str,
        restart: asyncio.Event,
        events: SlotEvents,
        tracker: OutcomeTracker,
        transcript: list[dict[str, Any]],
    ) -> None:
        """Start the task and follow the slot's ``events`` into ``tracker`` (made at the loop's time of
        the StartNewTask) until it is settled: its outcome decided and, when that leaves the task
        running, the CancelTask sent and answered or not (the tracker's rules say what either means)."""
        loop = asyncio.get_running_loop()
        configuration = dict(attempt.configuration)
        if attempt.case.simulate is not None:
            # Real hosts strip unknown configuration keys (zod strip mode), so any target may get
            # it; a simulator behind a command or vscode target needs it.
            configuration["simulate"] = attempt.case.simulate
        try:
            task_id = await self._unless_restart(
                self.client.start_task(
                    slot, attempt.prompt, configuration, start_timeout=attempt.limits.start_timeout
                ),
                restart,
            )
        except BridgeError as exc:
            tracker.force(Status.INFRA_ERROR, f"StartNewTask failed: {exc}", loop.time())
            return
        # Before any event: the stream may replay tasks the slot saw before this one.
        tracker.task_started(task_id, loop.time())
        while not tracker.settled:
            if tracker.wants_cancel:
                await self._cancel(slot, events, tracker, transcript)
                continue
            deadline = tracker.next_deadline()
            wait = 1.0 if deadline is None else max(0.0, deadline - loop.time())
            try:
                item = await events.get(wait)
            except Exception as exc:
                tracker.force(Status.INFRA_ERROR, f"lost the event stream: {exc}", loop.time())
                continue
            if item is not None:
                self._take(item, tracker, transcript)
            tracker.tick(loop.time())

    async def _cancel(
        self, slot: str, events: SlotEvents, tracker: OutcomeTracker, transcript: list[dict[str, Any]]
    ) -> None:
        """CancelTask, for an outcome that leaves the task running. Events already received are taken
        first: they predate the command and are no answer to it."""
        for item in await events.ready():
            self._take(item, tracker, transcript)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.client.cancel(slot), tracker.limits.cancel_timeout)
        except (BridgeError, asyncio.TimeoutError):
            tracker.cancel_undelivered(loop.time())
        else:
            tracker.cancel_sent(loop.time())

    @staticmethod
    def _take(item: Event, tracker: OutcomeTracker, transcript: list[dict[str, Any]]) -> None:
        """One event of the slot: to the tracker, and unless it is a partial message, to the transcript
        as received (partial messages never leave the worker)."""
        now = asyncio.get_running_loop().time()
        if item.msg_type == TASK_EVENT:
            event = item.raw.get("event")
            if not isinstance(event, dict):
                return
            if not is_partial(event):
                transcript.append(transcript_row(now - tracker.started_at, item.seq, event))
            tracker.feed_raw(event, now)
        elif item.msg_type == SLOT_DOWN:
            tracker.force(Status.INFRA_ERROR, DISCONNECTED, now)

    async def _cleanup_host(
        self, slot: str, host: Host | None, responsive: bool = True, *, close: bool = True
    ) -> str | None:
        """CloseTask (if ``close``), give the host its grace to exit, then make sure it is gone; detach
        the slot. A host known to be unresponsive is killed at once: it would sit out the grace and a
        SIGTERM too. Returns how the host had ended by itself before, if it had."""
        ended = None
        if host is not None:
            ended = host.ended_by_itself
            if not responsive:
                await host.kill()
            elif not close:
                await host.stop(grace=2.0)
            else:
                try:
                    await asyncio.wait_for(self.client.close_task(slot), 5)
                except (BridgeError, asyncio.TimeoutError):
                    pass  # the host never got it (bridge restarted, host gone): no grace to wait for
                else:
                    await host.wait(self._hosts.close_grace)
                await host.stop(grace=2.0)
        with contextlib.suppress(BridgeError, asyncio.TimeoutError):
            await asyncio.wait_for(self.client.detach(slot), 5)
        return ended


async def _remove(workspace: Path) -> None:
    try:
        os.rmdir(workspace)  # nothing was put in it: one syscall, not worth a thread
    except OSError:
        # rmdir blocks for milliseconds per directory on some disks: not on the event loop
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)


class _HarnessError(Exception):
    pass


class _Unstarted(Exception):
    """Held back before StartNewTask."""


class _Stop(Exception):
    def __init__(
        self, status: Status, reason: str, error_class: Literal["infra", "harness"] | None, detail: str
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error_class = error_class
        self.detail = detail
