"""The simulated extension host: Roo's API command semantics over an :class:`IpcServer` (protocol 2.4, 7).

One host is one VS Code window: one current task at a time, every task it ever ran kept in a history (for
CancelTask/ResumeTask rehydration). Commands are handled one at a time, in arrival order, and every event
a command causes is emitted before the next command is read, so the order of events is reproducible.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from ipc_bridge.redaction import Redactor
from ipc_bridge.roo.events import make_event
from ipc_bridge.roo.protocol import (
    CancelTask,
    CloseTask,
    DeleteQueuedMessage,
    GetCommands,
    GetModels,
    GetModes,
    ResumeTask,
    SendMessage,
    StartNewTask,
    TaskCommandMessage,
    event_message,
)
from ipc_bridge.simulator.agent import Agent
from ipc_bridge.simulator.host_link import MODE_NAMES
from ipc_bridge.simulator.lags import EngineLags
from ipc_bridge.simulator.script import (
    DEFAULT_SCRIPT,
    Script,
    ScriptError,
    chaos_outcome,
    host_options,
    load_script,
    normalize_engine,
    parse_script,
)
from ipc_bridge.simulator.server import IpcServer
from ipc_bridge.simulator.task import Clock, TaskInstance
from ipc_bridge.simulator.tools import secret_values

log = logging.getLogger(__name__)

ENGINE_USAGE_WINDOW = 2.0
"""Seconds of the engine's taskTokenUsageUpdated throttle (scaled by time_scale in the simulator)."""

_ID_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: task ids look like the engine's UUIDv7s

COMMANDS = [
    {
        "name": "init",
        "source": "built-in",
        "filePath": "<built-in:init>",
        "description": "Analyze codebase and create concise AGENTS.md files for AI assistants",
    }
]
MODELS = {
    "simulator/model": {
        "maxTokens": 8192,
        "contextWindow": 128000,
        "supportsImages": False,
        "supportsPromptCache": False,
        "inputPrice": 0,
        "outputPrice": 0,
        "description": "the scripted agent of the Roo Code simulator",
    }
}


def _script_mapping(script: Script | Mapping[str, Any] | str | Path | None) -> dict[str, Any] | None:
    if script is None:
        return None
    if isinstance(script, Script):
        return script.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(script, (str, Path)):
        return load_script(script)
    parse_script(script)  # fail at construction, not at the first task
    return dict(script)


class SimulatorHost:
    """A simulated Roo Code extension host listening on ``socket_path``.

    ``script`` (a :class:`Script`, a mapping, or a YAML/JSON file) applies to every task; a task's own
    ``configuration["simulate"]`` is merged over it. ``time_scale`` multiplies every scripted duration,
    the usage throttle window and the engine's own lags (``engine_lags``: ~2 s to listen, tens of ms to
    create and start a task); ``status_delay`` is the engine's 2 s lag of taskIdle/taskInteractive/
    taskResumable behind their ask. ``on_crash`` is what the ``crash`` outcome does: the CLI passes
    ``os._exit``; by default the host drops every connection and stops listening, leaving the socket
    file behind like a dead process. A script's ``chaos`` turns a task's outcome into ``crash`` or
    ``freeze`` by a draw that depends only on ``seed`` and how many tasks the host started before.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        workspace: str | os.PathLike[str] | None = None,
        engine: str = "3.52",
        script: Script | Mapping[str, Any] | str | Path | None = None,
        seed: int = 0,
        time_scale: float = 1.0,
        status_delay: float = 2.0,
        *,
        engine_lags: bool = True,
        usage_window: float | None = None,
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        options = host_options(
            seed=seed, time_scale=time_scale, status_delay=status_delay, engine_lags=engine_lags
        )
        seed, time_scale, status_delay = options.seed, options.time_scale, options.status_delay
        self.lags = EngineLags(seed, time_scale) if options.engine_lags else None
        self.socket_path = os.fspath(socket_path)
        self.workspace = Path(workspace) if workspace is not None else None
        self.engine = normalize_engine(engine)
        self.seed = seed
        self.time_scale = time_scale
        self.status_delay = status_delay
        self.usage_window = ENGINE_USAGE_WINDOW * time_scale if usage_window is None else usage_window
        self.server = IpcServer(self.socket_path, self._on_command)
        self._script = _script_mapping(script)
        self._on_crash = on_crash
        self._ids = random.Random(f"task-ids:{seed}")
        self._id_ms = _ID_EPOCH_MS + self._ids.randrange(10**10)
        self._last_ts = 0
        self._current: TaskInstance | None = None
        self._runner: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._history: dict[str, TaskInstance] = {}
        self._closed = asyncio.Event()
        self._stopping = False
        self._frozen = asyncio.Event()
        self._tasks_started = 0
        self._stop_task: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.workspace is None:
            self.workspace = Path.cwd()
        if self.lags is not None:
            # the extension host loads before it listens (node-ipc unlinks the path only then)
            await asyncio.sleep(self.lags.startup())
            if self._stopping:
                return
        await self.server.start()

    async def wait_closed(self) -> None:
        """Until CloseTask, :meth:`stop` or a crash ends the host."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def stop(self) -> None:
        """End the host like closing its window: no more events, connections closed, socket removed."""
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        self._cancel_tasks()
        await self.server.close()
        self._closed.set()
        log.info("simulator on %s stopped", self.socket_path)

    def request_stop(self) -> None:
        """Stop soon (from a callback or a signal handler, where nothing can be awaited)."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self.stop())

    def crash(self) -> None:
        """The ``crash`` outcome: the host process dies without a goodbye."""
        log.warning("simulated crash of the host on %s", self.socket_path)
        if self._on_crash is not None:
            self._on_crash()
            return
        self._stopping = True
        self.server.abort()
        self._cancel_tasks()
        self._closed.set()

    def freeze(self) -> None:
        """The ``freeze`` outcome: silent for good, like a SIGSTOPped window. Nothing goes out, every
        command is ignored, new clients get no Ack; :meth:`stop` still ends the host."""
        log.warning("simulated freeze of the host on %s", self.socket_path)
        self._frozen.set()
        self.server.freeze()
        if self._current is not None:
            self._current.end()  # its timers could not send anything any more

    @property
    def frozen(self) -> bool:
        return self._frozen.is_set()

    async def wait_frozen(self) -> None:
        """Until the ``freeze`` outcome silenced the host."""
        await self._frozen.wait()

    async def __aenter__(self) -> SimulatorHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._current is not None:
            self._current.end()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulated task failed", exc_info=task.exception())

    # ------------------------------------------------------------------- services for agents

    def emit(self, name: str, *payload: Any) -> None:
        """Broadcast one TaskEvent (validated against its payload tuple) to every client."""
        if self._stopping or self._frozen.is_set():
            return
        self.server.broadcast(event_message(make_event(name, *payload)))

    def next_ts(self) -> int:
        """A ClineMessage ts: ms since the epoch, strictly increasing (unique within every task)."""
        self._last_ts = max(int(time.time() * 1000), self._last_ts + 1)
        return self._last_ts

    def new_task_id(self) -> str:
        """A UUIDv7-shaped id, a pure function of the seed and how many ids came before."""
        self._id_ms += self._ids.randint(1, 5000)
        bits = (self._id_ms << 80) | (0x7 << 76) | (self._ids.getrandbits(12) << 64)
        bits |= (0b10 << 62) | self._ids.getrandbits(62)
        return str(uuid.UUID(int=bits))

    def set_current(self, instance: TaskInstance) -> None:
        self._current = instance
        self._history[instance.id] = instance

    def start_lag(self) -> float:
        """taskCreated -> taskStarted of the next task (0 without engine lags)."""
        return self.lags.start() if self.lags is not None else 0.0

    # ------------------------------------------------------------------------------ commands

    def _on_command(self, client_id: str, message: TaskCommandMessage) -> None:
        cmd = message.data
        log.info("command %s from %s", cmd.commandName, client_id)
        if self._stopping or self._frozen.is_set():
            return
        if isinstance(cmd, GetModes):
            modes = [{"slug": slug, "name": name} for slug, name in MODE_NAMES.items()]
            self._reply(client_id, "modesResponse", modes)
        elif isinstance(cmd, GetCommands):
            self._reply(client_id, "commandsResponse", COMMANDS)
        elif isinstance(cmd, GetModels):
            self._reply(client_id, "modelsResponse", MODELS)
        elif isinstance(cmd, StartNewTask):
            self._start_new_task(cmd)
        elif isinstance(cmd, CancelTask):
            self._cancel_task()
        elif isinstance(cmd, CloseTask):
            # the window closes: no event, the socket goes away
            self.request_stop()
        elif isinstance(cmd, ResumeTask):
            self._resume_task(cmd.data)
        elif isinstance(cmd, SendMessage):
            self._send_message(cmd.data.text or "", cmd.data.images)
        elif isinstance(cmd, DeleteQueuedMessage):
            self._delete_queued(cmd.data)

    def _reply(self, client_id: str, name: str, payload: Any) -> None:
        self.server.send(client_id, event_message(make_event(name, payload)))

    def _abort_current(self, *, unfocus: bool) -> TaskInstance | None:
        """removeClineFromStack / abortTask: the current task stops; usage flushed before taskAborted."""
        if self._runner is not None:
            # also a task still being created: it never will be
            self._runner.cancel()
            self._runner = None
        inst = self._current
        if inst is None:
            return None
        if unfocus:
            inst.event("taskUnfocused")
        if not inst.aborted:
            inst.throttle.flush()
            inst.event("taskAborted")
            inst.aborted = True
        inst.end()
        return inst

    def _start_new_task(self, cmd: StartNewTask) -> None:
        config = cmd.data.configuration.wire()
        error = None
        try:
            base = (
                self._script if self._script is not None else ({} if "simulate" in config else DEFAULT_SCRIPT)
            )
            script = parse_script(config.get("simulate"), base=base)
        except ScriptError as exc:
            log.error("StartNewTask: %s", exc)
            error, script = str(exc), Script()
        injected = chaos_outcome(self.seed, script.chaos, self._tasks_started)
        self._tasks_started += 1
        if injected is not None:
            log.warning(
                "chaos: task %d on %s gets outcome %s", self._tasks_started, self.socket_path, injected
            )
            script = script.model_copy(update={"outcome": injected})
        self._abort_current(unfocus=True)
        assert self.workspace is not None, "start() the host first"
        agent = Agent(
            self,
            script,
            engine=self.engine,
            seed=self.seed,
            workspace=self.workspace,
            clock=Clock(),
            auto_approval=config.get("autoApprovalEnabled", True) is not False,
            redactor=Redactor(secret_values(config)),
            no_profile=config.get("currentApiConfigName") == "",
        )
        inst = agent.new_instance(self.new_task_id())
        if self.lags is None:
            # every event of the start is out before the next command is read
            self.set_current(inst)
            agent.start_at_once(inst, cmd.data.text)
            self._runner = self._spawn(self._run_task(agent, inst, error))
            return
        # nothing is current until the task exists: a CancelTask meanwhile finds no task
        self._current = None
        lag = self.lags.create(first=self._tasks_started == 1)
        self._runner = self._spawn(self._run_task(agent, inst, error, prompt=cmd.data.text, lag=lag))

    async def _run_task(
        self,
        agent: Agent,
        inst: TaskInstance,
        error: str | None,
        *,
        prompt: str | None = None,
        lag: float = 0,
    ) -> None:
        """A new task's script (or its script error); given its ``prompt``, it is created after the
        engine's ``lag`` and started first."""
        if prompt is not None:
            await agent.clock.sleep(lag)
            self.set_current(inst)
            await agent.start(inst, prompt)
        if error is None:
            await agent.work(inst)
        else:
            await self._invalid_script(inst, error)

    async def _invalid_script(self, inst: TaskInstance, error: str) -> None:
        # Visible in the task's own messages, and a "stuck" signal for the orchestrator.
        inst.say("error", error)
        inst.ask("mistake_limit_reached", error)
        inst.schedule_status("taskIdle", self.status_delay)
        await inst.clock.forever()

    def _rehydrate(self, task_id: str, *, abort_current: bool) -> None:
        """createTaskWithHistoryItem: a new instance of a known task, waiting on a resume ask."""
        source = self._history[task_id]
        clock = Clock()
        inst = TaskInstance(
            task_id,
            emit=self.emit,
            next_ts=self.next_ts,
            clock=clock,
            usage_window=self.usage_window,
            tokens=source.tokens,
            parent_id=source.parent_id,
        )
        inst.completed = source.completed
        inst.event("taskCreated")
        if abort_current:
            self._abort_current(unfocus=False)
        self.set_current(inst)
        inst.event("taskFocused")
        inst.throttle.call()
        inst.ask("resume_completed_task" if inst.completed else "resume_task", "")
        inst.schedule_status("taskIdle" if inst.completed else "taskResumable", self.status_delay)
        self._runner = self._spawn(clock.forever())

    def _cancel_task(self) -> None:
        if self._current is None:
            # also while a new task is being created: the engine has no task to cancel yet
            log.info("CancelTask without a current task ignored")
            return
        old = self._abort_current(unfocus=False)
        if old is None:
            return
        self._rehydrate(old.id, abort_current=False)

    def _resume_task(self, task_id: str) -> None:
        if task_id not in self._history:
            log.warning("ResumeTask: no task %s in this host's history", task_id)
            return
        self._rehydrate(task_id, abort_current=True)

    def _send_message(self, text: str, images: list[str] | None) -> None:
        inst = self._current
        if inst is None or inst.aborted:
            log.info("SendMessage without a running task dropped")
            return
        if inst.answer is not None and not inst.answer.done():
            inst.answer.set_result(text)
            return
        queued: dict[str, Any] = {
            "timestamp": self.next_ts(),
            "id": str(uuid.UUID(int=self._ids.getrandbits(128), version=4)),
            "text": text,
        }
        if images:
            queued["images"] = images
        inst.queue.append(queued)
        inst.event("queuedMessagesUpdated", list(inst.queue))

    def _delete_queued(self, message_id: str) -> None:
        inst = self._current
        if inst is None:
            return
        kept = [m for m in inst.queue if m["id"] != message_id]
        if len(kept) != len(inst.queue):
            inst.queue[:] = kept
            inst.event("queuedMessagesUpdated", list(inst.queue))
