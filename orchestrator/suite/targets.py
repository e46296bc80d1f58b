"""Where the extension hosts come from: the ``target`` block of a suite (simulator, socket, vscode,
command)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ipc_bridge.durations import PositiveDuration
from ipc_bridge.simulator.script import HostOptions, normalize_engine
from orchestrator.suite.types import (
    TARGET_PLACEHOLDERS,
    ArgText,
    Count,
    EnvMap,
    PathText,
    Strict,
    existing_path,
    resolve_path,
    whole_number,
)

MAX_SLOTS = 1024
"""Most extension hosts a launched target runs at once."""


def _slots_not_bool(cls: Any, value: Any) -> Any:
    return whole_number(value)


class _Launched(Strict):
    not_hashed: ClassVar[frozenset[str]] = frozenset(
        {"slots", "launch_timeout", "close_grace", "executor", "prelaunch"}
    )
    """Fields that say where hosts run, how many and how fast they start, not how the agent behaves: not
    in an attempt's config hash (a Ray run resumes a local one)."""

    slots: int = Field(default=4, ge=1, le=MAX_SLOTS)
    """Extension hosts used at once."""
    executor: Literal["local", "ray"] = "local"
    """Where attempts run: worker processes on this machine, or Ray actors on the cluster's nodes that
    offer extension-host slots (``pip install '.[ray]'``)."""
    launch_timeout: PositiveDuration = 60.0
    """How long a launched host may take until its socket answers."""
    close_grace: PositiveDuration = 10.0
    """After CloseTask, how long a host may take to exit before it is terminated."""
    prelaunch: int | None = Field(default=None, ge=0, le=1024)
    """Attempts readied ahead while every slot is busy: workspace copied, set-up commands run, host
    launched and attached, so that a freed slot starts its next task at once, and a finished attempt's
    teardown and check overlap the next task. At most ``slots`` tasks still run at once; up to
    ``slots + prelaunch`` hosts are alive. Default: ``slots`` for the simulator (its hosts are cheap), 0
    for vscode and command (each readied host is a whole window), and 0 under a ``budget`` (a readied
    attempt starts as soon as a slot frees, before the cost of the one that freed it is known: set
    ``prelaunch`` with a budget and the run may overshoot the budget by that many attempts more). With
    ``executor: ray`` it is 0 (the rule: :mod:`orchestrator.hosts.launched`)."""

    _prelaunch = field_validator("prelaunch", mode="before")(_slots_not_bool)

    def too_many_slots(self, slots: int) -> str | None:
        """Why ``slots`` hosts at once are more than the target has (``--slots``), or None: a launched
        target launches as many as it is asked for (up to ``MAX_SLOTS``)."""
        return None


class SimulatorOptions(HostOptions):
    """``target.options`` of the simulator: the simulator's own host options, and how hosts are run."""

    process_per_host: bool = False
    """A simulator process per host instead of one farm process per worker (docs/simulator.md)."""

    @classmethod
    def given(cls, value: Any) -> dict[str, Any]:
        """The options given, validated, as a mapping of those keys only (what the hash covers)."""
        return cls.model_validate(value).model_dump(exclude_unset=True)


def _known_engine(value: str) -> str:
    normalize_engine(value)  # the simulator's own list; the value is kept as written
    return value


class SimulatorTarget(_Launched):
    kind: Literal["simulator"] = "simulator"
    engine: Annotated[str, AfterValidator(_known_engine)] | None = None
    """Engine version the simulator imitates (e.g. 3.52.1, 3.50.4); the simulator's default if unset."""
    options: Annotated[dict[str, Any], BeforeValidator(SimulatorOptions.given)] = Field(default_factory=dict)
    """Passed to the simulator: seed, time_scale, status_delay, engine_lags (:class:`SimulatorOptions`)."""

    _slots = field_validator("slots", mode="before")(_slots_not_bool)


class SocketTarget(Strict):
    not_hashed: ClassVar[frozenset[str]] = frozenset({"slots", "connect_timeout", "sockets"})
    """Which hosts serve the attempts, how many at once and how fast they answer: not in the config hash."""

    kind: Literal["socket"] = "socket"
    sockets: list[PathText] = Field(min_length=1)
    """Sockets of hosts that already run; attached, never launched or closed."""
    slots: Count = Field(ge=1)
    """Defaults to the number of sockets."""
    connect_timeout: PositiveDuration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _default_slots(cls, data: Any) -> Any:
        if isinstance(data, dict) and "slots" not in data:
            # without a usable sockets list, that is the one problem to report, not slots as well
            sockets = data.get("sockets")
            data = {**data, "slots": max(len(sockets), 1) if isinstance(sockets, list) else 1}
        return data

    @field_validator("sockets")
    @classmethod
    def _resolve_sockets(cls, value: list[Path], info: ValidationInfo) -> list[Path]:
        paths = [resolve_path(p, info) for p in value]
        if len(set(paths)) != len(paths):
            raise ValueError("a socket is listed twice: list each host's socket once")
        return paths

    @model_validator(mode="after")
    def _slots_fit(self) -> SocketTarget:
        if self.slots > len(self.sockets):
            raise ValueError(
                f"slots: {self.slots} is more than the {len(self.sockets)} sockets listed: "
                "lower slots or list more sockets"
            )
        return self

    def too_many_slots(self, slots: int) -> str | None:
        """Why ``slots`` hosts at once are more than the target has (``--slots``), or None."""
        if slots > len(self.sockets):
            return f"{slots} is more than the {len(self.sockets)} sockets listed"
        return None


def _xvfb(value: Any) -> Any:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"xvfb is auto, true or false (got {value!r})")


class VscodeTarget(_Launched):
    kind: Literal["vscode"] = "vscode"
    code: ArgText = Field(default="code", min_length=1)
    """The VS Code executable (a name on PATH or a path)."""
    args: list[ArgText] = Field(default_factory=list)
    xvfb: Annotated[Literal["auto"] | bool, BeforeValidator(_xvfb)] = "auto"
    """Run under xvfb-run: always, never, or when there is no DISPLAY."""
    user_data_dir: PathText | None = None
    extensions_dir: PathText | None = None
    env: EnvMap = Field(default_factory=dict)

    _slots = field_validator("slots", mode="before")(_slots_not_bool)

    @field_validator("user_data_dir", "extensions_dir")
    @classmethod
    def _resolve_dirs(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)


class CommandTarget(_Launched):
    kind: Literal["command"] = "command"
    argv: list[ArgText] = Field(min_length=1)
    """The host's command line; {socket}, {workspace} and {slot} are filled in ({{ }} for braces)."""
    env: EnvMap = Field(default_factory=dict)
    """Added to the host's environment (placeholders filled in too)."""
    cwd: PathText | None = None

    _slots = field_validator("slots", mode="before")(_slots_not_bool)

    @field_validator("argv", "env")
    @classmethod
    def _placeholders(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not value[0].strip():
            raise ValueError("the command (argv[0]) is empty: give the host's executable first")
        items = value if isinstance(value, list) else list(value.values())
        for item in items:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(item) if f is not None]
            except ValueError as exc:
                raise ValueError(f"{item!r}: {exc}; write {{{{ and }}}} for literal braces") from None
            for name in fields:
                if name not in TARGET_PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} in {item!r}: use {{socket}}, {{workspace}} or "
                        "{slot}, and {{ }} for literal braces"
                    )
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        return existing_path(resolve_path(value, info), "cwd", want_dir=True)


Target = Annotated[SimulatorTarget | SocketTarget | VscodeTarget | CommandTarget, Field(discriminator="kind")]
