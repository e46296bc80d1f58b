"""The simulator script: what a simulated task does, written by case authors in YAML or JSON.

A script reaches the simulator two ways: ``--script FILE`` for the whole host, and per task under the key
``simulate`` of the StartNewTask ``configuration`` (a key real hosts strip). Both are plain mappings; the
per-task one is merged over the host one key by key (top-level keys only), then validated here. Unknown
keys are errors: a typo in a case must fail loudly, not run a different scenario.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from ipc_bridge.durations import Duration, not_bool

Outcome = Literal[
    "completed", "aborted", "hang", "followup", "crash", "freeze", "api_error", "api_error_noauto"
]
Engine = Literal["3.52", "3.50"]
ToolFailure = Literal["say_error", "tool_failed", "both"]
UsagePoint = Literal["text", "ask", "end"]

ENGINES: tuple[str, ...] = get_args(Engine)


class ScriptError(ValueError):
    """A script that does not validate; the message names the key and what is wrong with it."""


def _engine(value: Any) -> Any:
    # YAML reads `engine: 3.50` as the float 3.5; also accept full versions such as "3.52.1".
    if isinstance(value, float):
        value = f"{value:.2f}"
    if isinstance(value, str):
        for engine in ENGINES:
            if value == engine or value.startswith(engine + "."):
                return engine
    return value


def normalize_engine(value: str | float) -> str:
    """``"3.52"``, ``"3.52.1"``, ``3.5`` ... -> one of :data:`ENGINES`; ValueError otherwise."""
    engine = _engine(value)
    if engine not in ENGINES:
        raise ValueError(
            f"unknown engine {value!r}: use {' or '.join(ENGINES)} (or a full version like 3.52.1)"
        )
    return str(engine)


class HostOptions(BaseModel):
    """How a simulated host runs, whatever its tasks' scripts say: ``orchestrate simulate``'s
    ``--seed``, ``--time-scale``, ``--status-delay`` and ``--no-engine-lags``, a farm's ``open`` keys,
    and a suite's ``target.options``. The one definition of what the simulator accepts for them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: Annotated[int, BeforeValidator(not_bool)] = 0
    """Seed of task ids, timing jitter and ``chaos`` draws."""
    time_scale: Annotated[float, BeforeValidator(not_bool)] = Field(1.0, gt=0, le=1000, allow_inf_nan=False)
    """Multiplies every scripted duration (0.05 = 20x faster)."""
    status_delay: Annotated[float, BeforeValidator(not_bool)] = Field(2.0, ge=0, le=3600, allow_inf_nan=False)
    """Seconds between an ask and its taskIdle/taskInteractive/taskResumable, as in the engine."""
    engine_lags: StrictBool = True
    """The engine's own lags (:mod:`ipc_bridge.simulator.lags`: ~2 s to listen, tens of ms to create and
    start a task), scaled by ``time_scale``; false leaves them out (benchmarks of the orchestrator)."""


def host_options(**values: Any) -> HostOptions:
    """:class:`HostOptions` from keyword values; :class:`ScriptError` naming the key otherwise."""
    try:
        return HostOptions.model_validate(values)
    except ValidationError as exc:
        raise ScriptError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r}: file paths are relative to the workspace and may not contain '..'")
    return value


EngineName = Annotated[Engine, BeforeValidator(_engine)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Tokens(_Strict):
    """Token totals for all of the task's own model requests (split evenly across them)."""

    in_: int = Field(alias="in", ge=0)
    out: int = Field(ge=0)
    cache_writes: int = Field(0, ge=0)
    cache_reads: int = Field(0, ge=0)


class ToolCall(_Strict):
    """One tool call of the agent (one model request each)."""

    tool: str = Field(min_length=1)
    path: str | None = None
    content: str | None = None
    search: str | None = None
    replace: str | None = None
    command: str | None = None
    output: str = ""
    """execute_command only: the output shown when the command is not run (``run: false``)."""
    run: bool | None = None
    """execute_command only: run ``command`` in the workspace (``sh -c``) and show its real output. By
    default it runs unless the script gives ``output``: see :attr:`runs`."""
    run_timeout: float = Field(60.0, gt=0, allow_inf_nan=False)
    fail: ToolFailure | None = None
    error: str | None = None
    text: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    usage_at: UsagePoint | None = None
    """Where this call's request shows its token update (``text``, ``ask`` or ``end`` of the turn); by
    default as the engine mostly does: before the ask of a file tool, after a command's output or a
    failure's error."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value)

    @property
    def runs(self) -> bool:
        """Whether execute_command runs for real: ``run`` if given, else unless ``output`` is given (a
        scripted output is the opt-out)."""
        return self.run if self.run is not None else "output" not in self.model_fields_set

    @model_validator(mode="after")
    def _required_for_tool(self) -> ToolCall:
        needs = {
            "write_to_file": ("path", "content"),
            "apply_diff": ("path",),
            "execute_command": ("command",),
        }
        missing = [key for key in needs.get(self.tool, ()) if getattr(self, key) is None]
        if missing and self.fail is None:
            raise ValueError(f"tool {self.tool} needs {', '.join(missing)}")
        return self


class Followup(_Strict):
    question: str = "Which option should I use?"
    suggest: list[str] = Field(default_factory=lambda: ["yes", "no"])


class ApiError(_Strict):
    """The model endpoint's failure for the ``api_error*`` outcomes."""

    status: int = Field(500, ge=100, le=599)
    message: str | None = None
    first_wait: int = Field(5, ge=1)
    max_wait: int = Field(600, ge=1)

    text: str | None = None
    """The error exactly as shown, for a failure that is not the OpenAI provider's HTTP error (which
    the engine shows as ``{status}``, newline, ``OpenAI completion error: {message}``)."""

    def describe(self) -> str:
        return self.message or f"{self.status} simulated HTTP {self.status}"

    def retry_text(self) -> str:
        """What ``say:api_req_retry_delayed`` shows above its countdown."""
        return (
            self.text
            if self.text is not None
            else f"{self.status}\nOpenAI completion error: {self.describe()}\n"
        )

    def failed_text(self) -> str:
        """What ``ask:api_req_failed`` shows."""
        return self.text if self.text is not None else f"OpenAI completion error: {self.describe()}"


class Chaos(_Strict):
    """Faults injected at random: the probability that a task's outcome becomes ``crash`` or ``freeze``
    instead of the scripted one (see :func:`chaos_outcome`)."""

    crash: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    freeze: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_draw(self) -> Chaos:
        # One draw decides both: the bands lie side by side in [0, 1).
        if self.crash + self.freeze > 1 + 1e-9:
            raise ValueError(f"crash + freeze must be <= 1, got {self.crash} + {self.freeze}")
        return self


def chaos_outcome(seed: int | str, chaos: Chaos | Mapping[str, Any] | None, task: int = 0) -> str | None:
    """The fault injected into the ``task``-th task (0 for the first) a host with seed ``seed`` starts:
    ``"crash"``, ``"freeze"`` or None. A pure function, so whoever knows a host's seed can tell which
    of its tasks were hit: one draw in [0, 1) below ``crash`` crashes, in the next ``freeze`` freezes."""
    if chaos is None:
        return None
    if not isinstance(chaos, Chaos):
        chaos = Chaos.model_validate(chaos)
    draw = random.Random(f"chaos:{seed}:{task}").random()
    if draw < chaos.crash:
        return "crash"
    if draw < chaos.crash + chaos.freeze:
        return "freeze"
    return None


class Script(_Strict):
    """What one simulated task does. Every key is optional; see docs/simulator.md."""

    outcome: Outcome = "completed"
    engine: EngineName | None = None
    seed: int | None = None
    duration: Duration = 2.0
    """The agent's own work, spread evenly over its turns and, in each turn, over its planned steps
    (:mod:`ipc_bridge.simulator.pace`); waits on outside things come on top."""
    jitter: float = Field(0.2, ge=0, lt=1, allow_inf_nan=False)
    """Each step of the agent's work takes its share of ``duration`` times a seeded factor in
    [1 - jitter, 1 + jitter]; 0 gives exact timings (benchmarks)."""
    write_delay: Duration = 1.0
    """The engine's pause after a file edit before its next request (writeDelayMs), scaled like every
    duration; not part of ``duration``."""
    prompt: str | None = None
    text: str = ""
    final_text: str | None = None
    """Assistant text streamed in the final turn (the engine's "Done." before attempt_completion)."""
    chunks: int = Field(1, ge=1, le=100_000)
    files: dict[str, str] = Field(default_factory=dict)
    tools: list[ToolCall] = Field(default_factory=list)
    tokens: Tokens | None = None
    cost: float = Field(0.0, ge=0, allow_inf_nan=False)
    subtasks: list[Script] = Field(default_factory=list)
    completion: str = "Task completed."
    followup: Followup = Field(default_factory=Followup)
    error: ApiError = Field(default_factory=ApiError)
    mode: str = "code"
    workspace: str | None = None
    chaos: Chaos | None = None
    usage_at: UsagePoint | None = None
    """Where the final turn's (and a followup question's) request shows its token update; by default
    after the completion ask when the turn has text, else with the completion."""
    parent_keeps_provider: bool | None = None
    """Whether a parent re-created after its subtask still has the provider StartNewTask gave it. By
    default as the engine: 3.52 keeps it, 3.50 loses it and every later request fails (issue #14)."""

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            _relative_path(path)
        return value

    def tool_calls(self) -> list[ToolCall]:
        """``files`` as write_to_file calls, then ``tools``, in order."""
        writes = [ToolCall(tool="write_to_file", path=p, content=c) for p, c in self.files.items()]
        return writes + list(self.tools)


DEFAULT_SCRIPT: dict[str, Any] = {
    "outcome": "completed",
    "text": "I will create the file.",
    "files": {"hello.txt": "hello from the simulator\n"},
    "completion": "Created hello.txt",
}
"""What a task does when neither the host nor the task gives a script."""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, Annotated) or type(annotation).__name__ == "UnionType":
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] | None = Script
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    if model is None:
        return []
    return sorted(field.alias or name for name, field in model.model_fields.items())


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(script)"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(loc[:-1]))
            lines.append(f"unknown key {where!r} (allowed here: {allowed})")
        else:
            lines.append(f"{where}: {err['msg']}")
    return "invalid simulator script: " + "; ".join(lines)


def parse_script(data: Any, base: Mapping[str, Any] | None = None) -> Script:
    """Validate a script mapping, merged over ``base`` (top-level keys of ``data`` win)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ScriptError(f"invalid simulator script: expected a mapping, got {type(data).__name__}")
    merged = {**(base or {}), **data}
    try:
        return Script.model_validate(merged)
    except ValidationError as exc:
        raise ScriptError(_describe(exc)) from None


def load_script(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON script file; returns the validated mapping (kept raw for per-task merging)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ScriptError(f"cannot read simulator script {path}: {exc}") from exc
    if data is None:
        data = {}
    parse_script(data)
    return dict(data)
