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
import shutil
from collections.abc import Awaitable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ipc_bridge.client.task_commands import StartFailed as StartRefused
from ipc_bridge.client.types import BridgeError, BridgeRestarted, CommandError, Event
from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import Host, HostError, HostExited
from orchestrator.outcome import OutcomeTracker
from orchestrator.results.records import CheckResult, Timings
from orchestrator.run.attempt_hosts import AttemptHosts
from orchestrator.run.grading import run_command
from orchestrator.run.jobs import Job, JobResult, WorkerConfig, new_record
from orchestrator.run.live_transcript import LiveLog, LiveTranscript
from orchestrator.run.slot_events import (
    AttemptBridge,
    SlotEvents,
    is_partial,
    transcript_row,
    unless_restart,
)
from orchestrator.status import AttemptOutcome, Status
from orchestrator.suite.plan import Attempt
from orchestrator.verdict import (
    DISCONNECTED,
    Cancelled,
    HostDisconnected,
    HostEnded,
    LaunchFailed,
    SetupFailed,
    StartFailed,
    StreamLost,
    Verdict,
    decide,
    of_outcome,
)

log = logging.getLogger(__name__)

SLOT_DOWN = "slot_down"
EXIT_WAIT = 2.0
"""How long a host whose connection went down is given to exit, so that its record says how it did."""
STOP_CANCEL_TIMEOUT = 2.0
"""How long a stopped attempt waits for its CancelTask to be delivered."""
STOP_HOST_GRACE = 2.0
"""A stopped attempt's host gets this long after SIGTERM, not the target's close grace: the user wants out."""
DETACH_TIMEOUT = 5.0
CANCELLED_WITHIN = STOP_CANCEL_TIMEOUT + 3 * STOP_HOST_GRACE + DETACH_TIMEOUT + 4.0
"""A cancelled attempt has its record by then: the steps above (a host's stop takes up to three graces: a
farmed host's close, kill and exit; a launched host's SIGTERM and what it left outside its group), plus
room for the rest of its teardown (the workspace, the transcript, the host's log) on a loaded machine. The
scheduler waits as long after a stop."""
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
        live: LiveLog | None = None,
    ) -> None:
        """``gate``: where a readied attempt (workspace, host, attach) gets its slot before its task
        starts; None: every job given runs at once. ``live``: where running attempts' transcripts are
        shown as they grow (None: nowhere)."""
        self.client = client
        self.config = config
        self.wid = wid
        self._gate = gate
        self._live = live
        self._counter = itertools.count(1)
        self._hosts = AttemptHosts(config, wid, farm)
        self._restart = asyncio.Event()
        self._restarted = "the bridge restarted"
        client.on_restart.append(self._on_restart)

    def _on_restart(self, restarted: BridgeRestarted) -> None:
        self._restarted = str(restarted)
        self._restart.set()
        self._restart = asyncio.Event()

    def _unless_restart(self, request: Awaitable[T], restart: asyncio.Event) -> Awaitable[T]:
        return unless_restart(request, restart, lambda: self._restarted)

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
        transcript = self._live.transcript(job, slot) if self._live is not None else []
        tracker: OutcomeTracker | None = None
        outcome: AttemptOutcome | None = None
        host: Host | None = None
        launched: Host | None = None  # the host, kept for its record after teardown
        host_log: Path | None = None
        host_end: str | None = None  # how the host ended by itself, if it did
        check: CheckResult | None = None
        diff: str | None = None
        verdict: Verdict | None = None
        attached = False  # the slot exists in the bridge: it must be detached, its task cancelled if stopped
        holding = False  # one of this worker's slots: given back as soon as the agent is done
        task_started = False  # StartNewTask may have gone out: the attempt gets a record, whatever happens
        unstarted = False
        stopped = False  # cancelled (a stop of the run): the host is not given its close grace
        workspace = self._hosts.workspace(job)
        try:
            try:
                await self._prepare(attempt, workspace)
                phase.lap("setup_s")
            except _HarnessError as exc:
                raise _Stop(SetupFailed(str(exc))) from exc
            try:
                host, socket_path = await self._hosts.host(job, workspace, slot)
                launched = host
                host_log = host.log_path if host is not None else None
            except HostExited as exc:
                raise _Stop(HostEnded(str(exc))) from exc
            except (HostError, OSError) as exc:
                raise _Stop(LaunchFailed(str(exc))) from exc
            attached = True  # even a failed attach may leave a connecting slot behind
            restart = self._restart  # set by the next bridge restart: then the slot is gone
            # The stream before the attach: its subscription goes out first, so the bridge welcomes it
            # before the slot's first event and it needs no snapshot. It follows the slot while the
            # attempt waits for a slot of the run: its welcome is then not on the task's clock.
            events = SlotEvents(self.client.events(slot, since_seq=0), restart, lambda: self._restarted)
            try:
                if self._gate is not None:
                    # Readied ahead: attached now, started when the run grants a slot.
                    attach = self.client.attach(slot, socket_path, self._hosts.launch_timeout())
                    await self._come_up(host, self._unless_restart(attach, restart))
                    phase.lap("launch_s")
                    if not await self._gate.acquire(ticket):
                        raise _Unstarted
                    holding = True
                    phase.lap("wait_s")
                else:
                    phase.lap("launch_s")  # the attach goes with the StartNewTask, on the task's clock
                task_started = True
                now = asyncio.get_running_loop().time()
                task_id = await self._start(attempt, slot, host, socket_path, restart)
                # Made here, not in _follow: a Ctrl-C in the middle still finds what it knew.
                tracker = OutcomeTracker(now, attempt.limits)
                if isinstance(task_id, BridgeError):
                    now = asyncio.get_running_loop().time()
                    tracker.force(StartFailed(str(task_id)), now)
                else:
                    await self._follow(slot, task_id, events, tracker, transcript)
            finally:
                await events.aclose()
            outcome = tracker.result()
            verdict = of_outcome(outcome)
            phase.lap("agent_s")
            # The task is over: a readied attempt may start now, while this one tears down and is checked.
            holding = self._release(holding, ticket)
            if outcome.reason == DISCONNECTED and host is not None:
                await host.wait(EXIT_WAIT)  # most likely exiting (a crash): its exit status says how
            # CloseTask is for a task a responsive host has: a host that never reported one (it never
            # answered StartNewTask) would only sit out the grace.
            host_end = await self._cleanup_host(
                slot, host, tracker.host_responsive, close=tracker.root is not None
            )
            host, attached = None, False
            verdict = of_outcome(outcome, host_end)
            # Before the check, which may write files of its own: what the agent (and setup) changed.
            diff = await self._diff(job, workspace)
            phase.lap("teardown_s")
            if not verdict.status.is_infra and attempt.case.check:
                check = await run_command(
                    attempt.case.check, workspace, timeout=attempt.check_timeout, env=attempt.env or None
                )
                phase.lap("check_s")
        except _Stop as stop:
            verdict = decide(stop.ending)
        except _Unstarted:
            unstarted = True
        except asyncio.CancelledError:
            # Stopped in its cancel, teardown or check: what the agent did is known, its grade is not.
            task_ended = tracker.status if tracker is not None else None
            verdict = decide(Cancelled(task_ended, verdict.error if verdict is not None else None))
            unstarted = not task_started
            if task_started and phase.timings.agent_s is None:
                phase.lap("agent_s")  # how long the task ran before the stop
            stopped = True
            if attached and task_started:
                # A leased host (socket target) is not closed afterwards: its task must be stopped here.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.cancel(slot), STOP_CANCEL_TIMEOUT)
        finally:
            self._release(holding, ticket)
            if host is not None or attached:
                cleanup = self._cleanup_host(slot, host, close=not stopped)
                host_end = await asyncio.shield(cleanup) or host_end
            if not self.config.keep_workspaces:
                await asyncio.shield(self._hosts.release(workspace))
            if isinstance(transcript, LiveTranscript):
                await asyncio.shield(transcript.close())  # before the record, which supersedes it
        # Kept in the results: what a host wrote, and why it died (redacted like every record).
        host_log_name, host_output = await asyncio.shield(
            self._hosts.output(
                job,
                host_log,
                tail=verdict is None or verdict.status is Status.INFRA_ERROR or host_end is not None,
            )
        )
        if unstarted:
            # Never run (a stop or a spent budget held it back): nothing to record.
            return JobResult({}, unstarted=True)
        assert verdict is not None  # every way out of the try that is not unstarted gave one
        if check is not None:
            passed: bool | None = check.passed
        else:
            passed = True if verdict.status is Status.COMPLETED and not attempt.case.check else None
        ended = datetime.now(timezone.utc)
        record = new_record(
            self.config.run_id,
            job,
            verdict,
            started=started,
            ended=ended,
            passed=passed,
            task_id=tracker.root if tracker else None,
            slot=slot,
            node=self.config.node,
            timings=phase.timings,
            check=check,
            host_log=host_log_name,
            host_output_tail=host_output,
            host_killed=list(launched.killed) if launched is not None else [],
            kept_workspace=self._hosts.in_results(workspace) if self.config.keep_workspaces else None,
        )
        if outcome is not None:
            record.metrics = outcome.metrics  # no event is taken after the outcome: still the same
        elif tracker is not None:
            record.metrics = tracker.metrics()
        return JobResult(record.model_dump(mode="json"), transcript, diff=diff)

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
        """The workspace's diff; a failure to take it costs the attempt its diff, nothing more."""
        try:
            return await self._hosts.diff(job, workspace)
        except OSError as exc:
            log.warning("%s: no workspace diff: %s", job.attempt.key.slug, exc)
            return None

    async def _come_up(self, host: Host | None, request: Awaitable[T]) -> T:
        """``request`` (an attach, or an attach_start), whose errors say the host did not come up
        (:class:`_Stop`). A launched host that ends meanwhile ends it at once (:class:`HostExited`),
        not after the whole ``launch_timeout``."""
        try:
            return await self._while_host(host, request)
        except HostExited as exc:
            raise _Stop(HostEnded(str(exc))) from exc
        except (HostError, BridgeError, OSError) as exc:
            raise _Stop(LaunchFailed(str(exc))) from exc

    @staticmethod
    async def _while_host(host: Host | None, request: Awaitable[T]) -> T:
        attach = asyncio.ensure_future(request)
        if host is None:
            return await attach
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
            raise HostExited(str(host.ended_by_itself))  # how it ended: the verdict's words say the rest
        return attach.result()

    async def _start(
        self, attempt: Attempt, slot: str, host: Host | None, socket_path: str, restart: asyncio.Event
    ) -> str | BridgeError:
        """StartNewTask: the new task's id, or the error that left it unstarted. Readied ahead (a
        gate), the slot is attached already; otherwise the attach goes in the same request
        (``attach_start``), and its failure is the host's (:class:`_Stop`, as in :meth:`_come_up`)."""
        configuration = dict(attempt.configuration)
        if attempt.case.simulate is not None:
            # Real hosts strip unknown configuration keys (zod strip mode), so any target may get
            # it; a simulator behind a command or vscode target needs it.
            configuration["simulate"] = attempt.case.simulate
        start_timeout = attempt.limits.start_timeout
        try:
            if self._gate is not None:
                start = self.client.start_task(
                    slot, attempt.prompt, configuration, start_timeout=start_timeout
                )
                return await self._unless_restart(start, restart)
            opening = self.client.attach_start(
                slot,
                socket_path,
                attempt.prompt,
                configuration,
                connect_timeout=self._hosts.launch_timeout(),
                start_timeout=start_timeout,
            )
            return await self._come_up(host, self._started(self._unless_restart(opening, restart)))
        except _NotStarted as exc:
            return exc.error
        except BridgeError as exc:
            return exc

    @staticmethod
    async def _started(opening: Awaitable[str]) -> str:
        """An attach_start's task id; an error that does not say the attach failed (the start did, or
        no answer came: the bridge restarted or was lost) leaves the task unstarted (:class:`_NotStarted`)
        rather than the host down."""
        try:
            return await opening
        except StartRefused as exc:
            raise _NotStarted(exc.cause) from exc
        except CommandError:
            raise  # the attach was refused: the host did not come up
        except BridgeError as exc:
            raise _NotStarted(exc) from exc

    async def _follow(
        self,
        slot: str,
        task_id: str,
        events: SlotEvents,
        tracker: OutcomeTracker,
        transcript: list[dict[str, Any]],
    ) -> None:
        """Follow the slot's ``events`` into ``tracker`` (made at the loop's time of the StartNewTask
        that created ``task_id``) until it is settled: its outcome decided and, when that leaves the
        task running, the CancelTask sent and answered or not (the tracker's rules say what either means)."""
        loop = asyncio.get_running_loop()
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
                tracker.force(StreamLost(str(exc)), loop.time())
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
            tracker.force(HostDisconnected(), now)

    async def _cleanup_host(
        self, slot: str, host: Host | None, responsive: bool = True, *, close: bool = True
    ) -> str | None:
        """CloseTask and the host's grace to exit (if ``close``), then make sure it is gone; detach the
        slot. A host known to be unresponsive is killed at once: it would sit out the grace and a SIGTERM
        too. Returns how the host had ended by itself before, if it had."""
        ended = None
        detached = False
        if host is not None:
            ended = host.ended_by_itself
            if not responsive:
                await host.kill()
            elif not close:
                await host.stop(grace=STOP_HOST_GRACE)
            else:
                try:
                    # CloseTask and detach in one request: the bridge hangs up once the host has it.
                    closed = await asyncio.wait_for(self.client.close_detach(slot), DETACH_TIMEOUT)
                except (BridgeError, asyncio.TimeoutError):
                    pass  # the host never got it (bridge restarted, host gone): no grace to wait for
                else:
                    detached = True
                    if closed:  # the host has it: its grace to exit
                        await host.wait(self._hosts.close_grace)
                await host.stop(grace=STOP_HOST_GRACE)
        if not detached:
            with contextlib.suppress(BridgeError, asyncio.TimeoutError):
                await asyncio.wait_for(self.client.detach(slot), DETACH_TIMEOUT)
        return ended


class _HarnessError(Exception):
    pass


class _Unstarted(Exception):
    """Held back before StartNewTask."""


class _NotStarted(Exception):
    """An attach_start attached the host (or may have), but its task did not start: ``error`` says why."""

    def __init__(self, error: BridgeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Stop(Exception):
    """The attempt ended before its task: ``ending`` says how (:func:`orchestrator.verdict.decide`)."""

    def __init__(self, ending: SetupFailed | HostEnded | LaunchFailed) -> None:
        super().__init__(ending)
        self.ending = ending
