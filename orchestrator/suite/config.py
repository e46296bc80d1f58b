"""The suite file: validated models, loading with line numbers and ``${ENV}``, redaction, CLI overrides.

::

    suite = load_suite("configs/suite.yaml")           # raises SuiteError (exit code 2) on any problem
    suite = apply_overrides(suite, slots=8, tags=["python"])
    suite.redacted()                                     # JSON-ready, secrets replaced by "***"

Paths in the file are relative to the file's directory. Every mapping refuses unknown keys, except the
``configuration`` blocks (RooCodeSettings has hundreds of keys; the ones we know are type-checked
because one wrong-typed key makes the engine drop StartNewTask silently) and ``simulate`` (checked by
the simulator). Top-level keys starting with ``x-`` are ignored: a place for YAML anchors
(``x-common: &common {...}``, then ``<<: *common`` in each case).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ipc_bridge.durations import PositiveDuration
from ipc_bridge.redaction import Redactor
from ipc_bridge.roo.shapes import RooCodeSettings
from orchestrator.processes.child_env import referenced_variables
from orchestrator.status import OutcomeLimits
from orchestrator.suite.file_checks import MIB, FileCheckError, check_template, read_regular
from orchestrator.suite.messages import duplicate_ids, validation_problems
from orchestrator.suite.reader import MarkedDict, load_marked_yaml
from orchestrator.suite.targets import (
    MAX_SLOTS,
    SimulatorTarget,
    Target,
)
from orchestrator.suite.types import (
    Command,
    Count,
    EnvMap,
    PathText,
    SafeId,
    Settings,
    Strict,
    existing_path,
    resolve_path,
    whole_number,
)
from orchestrator.suite.yaml_loader import Problem, SuiteError, interpolate, line_col

# ----------------------------------------------------------------------------- suite and cases


class Defaults(OutcomeLimits):
    """The suite's ``defaults``: the outcome timers (:class:`OutcomeLimits`, whose defaults are the
    suite's) and the run's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    retries: Count = Field(default=2, ge=0, le=100)
    """Extra attempts after an infrastructure failure (never after an agent failure)."""
    retry_backoff: PositiveDuration = 5.0
    """First backoff; it doubles per retry, with jitter, up to retry_backoff_max."""
    retry_backoff_max: PositiveDuration = 120.0
    configuration: Settings = Field(default_factory=RooCodeSettings)
    """RooCodeSettings sent with StartNewTask; each model's, then each case's, merge over it."""
    setup_timeout: PositiveDuration = 300.0
    check_timeout: PositiveDuration = 120.0
    env: EnvMap = Field(default_factory=dict)
    """Added to the environment of setup and check commands."""

    @field_validator("api_retry_limit", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        return whole_number(value)  # as every count of the suite: YAML's yes/no are no numbers


class ModelSpec(Strict):
    id: SafeId
    description: str | None = None
    configuration: Settings = Field(default_factory=RooCodeSettings)


class Budget(Strict):
    max_cost_usd: float | None = Field(default=None, gt=0)
    """Stop starting attempts once this much is spent."""


class Case(Strict):
    id: SafeId
    description: str | None = None
    prompt: str | None = None
    prompt_file: PathText | None = None
    workspace: PathText | None = None
    """Template directory copied fresh for every attempt (an empty directory when unset)."""
    setup: list[Command] = Field(default_factory=list)
    check: Command | None = None
    """Grading: exit status 0 = passed."""
    check_timeout: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    configuration: Settings = Field(default_factory=RooCodeSettings)
    env: EnvMap = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    simulate: dict[str, Any] | None = None
    """The simulated agent's script; ignored by real hosts. Checked at load time when the target is the
    built-in simulator (a typo there would otherwise run a different scenario, or none)."""

    @field_validator("simulate")
    @classmethod
    def _simulate_parses(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        context = info.context if isinstance(info.context, dict) else {}
        if value is not None and context.get("simulator"):
            from ipc_bridge.simulator.script import ScriptError, parse_script

            try:
                parse_script(value)
            except ScriptError as exc:
                raise ValueError(f"{exc} (the simulator's script: see docs/simulator.md)") from None
        return value

    @field_validator("workspace")
    @classmethod
    def _workspace_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = existing_path(resolve_path(value, info), "workspace directory", want_dir=True)
        checked = _cache(info, "workspaces")
        if path not in checked:  # cases often share one template: walk it once
            try:
                check_template(path)
            except FileCheckError as exc:
                checked[path] = str(exc)
            else:
                checked[path] = ""
        if checked[path]:
            raise ValueError(checked[path])
        return path

    @field_validator("prompt_file")
    @classmethod
    def _prompt_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = existing_path(resolve_path(value, info), "prompt_file", want_dir=False)
        _cache(info, "prompts")[path] = _read_prompt(path)
        return path

    @model_validator(mode="after")
    def _one_prompt(self, info: ValidationInfo) -> Case:
        if self.prompt_file is not None:
            if self.prompt is not None:
                raise ValueError(f"case {self.id}: give prompt or prompt_file, not both")
            read = _cache(info, "prompts").get(self.prompt_file)
            self.prompt = read if read is not None else _read_prompt(self.prompt_file)
        if self.prompt is None or not self.prompt.strip():
            raise ValueError(f"case {self.id}: the prompt is empty: add prompt: or prompt_file:")
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        if any(not t.strip() for t in value):
            raise ValueError("a tag is empty: remove it")
        return value


MAX_PROMPT_BYTES = 1 * MIB
"""Largest prompt_file."""
MAX_ATTEMPTS = 100_000
"""Most attempts in a run (cases x models x repeats): each is planned in memory before the first runs."""


def _cache(info: ValidationInfo, name: str) -> dict[Any, Any]:
    """A dict shared by one validation (empty and unshared without a context)."""
    context = info.context if isinstance(info.context, dict) else {}
    found: dict[Any, Any] = context.setdefault(name, {})
    return found


def _read_prompt(path: Path) -> str:
    try:
        data = read_regular(path, MAX_PROMPT_BYTES, f"prompt_file {path}", "shorten the prompt")
    except FileCheckError as exc:
        raise ValueError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"prompt_file {path} is not UTF-8 text ({exc.reason}): save it as UTF-8") from None
    if "\0" in text:
        raise ValueError(f"prompt_file {path} contains a NUL character: it is not a text file")
    return text


def _no_duplicate_ids(items: list[Any], what: str) -> None:
    # ids that differ only in case name one result file on a case-insensitive filesystem
    seen: dict[str, str] = {}
    for item in items:
        folded = item.id.casefold()
        if folded in seen:
            raise ValueError(
                f"duplicate {what} id {item.id!r} (and {seen[folded]!r}): ids must be unique, also "
                "ignoring letter case"
            )
        seen[folded] = item.id


class Suite(Strict):
    name: SafeId
    description: str | None = None
    target: Target = Field(default_factory=SimulatorTarget)
    defaults: Defaults = Field(default_factory=Defaults)
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(id="default")])
    """One matrix axis; when absent, one model "default" that only uses defaults.configuration."""
    repeats: Count = Field(default=1, ge=1, le=10_000)
    """Another axis (pass@k)."""
    budget: Budget = Field(default_factory=Budget)
    cases: list[Case]

    _source: Path | None = PrivateAttr(default=None)
    _secrets: frozenset[str] = PrivateAttr(default=frozenset())
    _referenced_env: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        # kind is the union's tag; without it pydantic would only say "kind is missing" and hide the
        # real mistake, while the documented default is the simulator
        target = data.get("target") if isinstance(data, dict) else None
        if isinstance(target, dict) and "kind" not in target:
            data = {**data, "target": {**target, "kind": "simulator"}}
        return data

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        if not value:
            raise ValueError("no models: the matrix is empty; list at least one model (id: ...)")
        _no_duplicate_ids(value, "model")
        return value

    @field_validator("cases")
    @classmethod
    def _cases(cls, value: list[Case]) -> list[Case]:
        if not value:
            raise ValueError("no cases: the matrix is empty; add at least one case (id:, prompt:, ...)")
        _no_duplicate_ids(value, "case")
        return value

    # ------------------------------------------------------------------------------- accessors

    @property
    def source(self) -> Path | None:
        """The suite file (None for a suite built in Python)."""
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source is not None else Path.cwd()

    @property
    def secret_values(self) -> frozenset[str]:
        return self._secrets

    @property
    def referenced_env(self) -> frozenset[str]:
        """The environment variables the suite's ``${...}`` refer to (see :mod:`orchestrator.processes.child_env`)."""
        return self._referenced_env

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)

    def model(self, model_id: str) -> ModelSpec:
        for model in self.models:
            if model.id == model_id:
                return model
        raise KeyError(model_id)

    def configuration_for(self, case: Case, model: ModelSpec) -> dict[str, Any]:
        """The StartNewTask configuration: defaults, then the model's, then the case's keys (a shallow
        merge: a key given later replaces the whole value). Holds the real secrets: never log it."""
        return {
            **self.defaults.configuration.wire(),
            **model.configuration.wire(),
            **case.configuration.wire(),
        }

    def limits_for(self, case: Case) -> OutcomeLimits:
        limits = self.defaults.model_dump(include=set(OutcomeLimits.model_fields))
        if case.timeout is not None:
            limits["timeout"] = case.timeout
        return OutcomeLimits.model_validate(limits)

    def check_timeout_for(self, case: Case) -> float:
        return case.check_timeout if case.check_timeout is not None else self.defaults.check_timeout

    def env_for(self, case: Case) -> dict[str, str]:
        """Extra environment of the case's setup and check commands."""
        return {**self.defaults.env, **case.env}

    def redactor(self) -> Redactor:
        return Redactor(self._secrets)

    def redacted(self) -> dict[str, Any]:
        """The resolved suite, JSON-ready, with every secret replaced by ``"***"``."""
        redacted: dict[str, Any] = self.redactor()(self.model_dump(mode="json"))
        return redacted


# ------------------------------------------------------------------------------------ loading


def _matrix_too_big(cases: int, models: int, repeats: int) -> str | None:
    attempts = cases * models * repeats
    if attempts <= MAX_ATTEMPTS:
        return None
    return (
        f"{cases:,} cases x {models:,} models x {repeats:,} repeats is {attempts:,} attempts, more than the "
        f"{MAX_ATTEMPTS:,} a run may plan: split the suite, or lower repeats"
    )


def _matrix_problem(suite: Suite, raw: MarkedDict) -> list[Problem]:
    message = _matrix_too_big(len(suite.cases), len(suite.models), suite.repeats)
    if message is None:
        return []
    key = "repeats" if "repeats" in raw else "cases"
    line, column = line_col(raw.marks.get(key))
    return [Problem(line, column, key, message)]


def load_suite(path: str | Path, *, env: Mapping[str, str] | None = None) -> Suite:
    """Read, interpolate and validate a suite file. Raises :class:`SuiteError` naming the file, line and
    key of every problem found (nothing else is started or written by this function)."""
    path = Path(path)
    raw = load_marked_yaml(path)
    for extension in [k for k in raw if isinstance(k, str) and k.startswith("x-")]:
        del raw[extension]  # a place for YAML anchors, as in docker-compose files
    referenced = referenced_variables(raw)
    raw, secrets, problems = interpolate(raw, os.environ if env is None else env, path)
    duplicates = duplicate_ids(raw)
    problems += duplicates
    base = path.resolve().parent
    try:
        target = raw.get("target")
        kind = target.get("kind", "simulator") if isinstance(target, dict) else "simulator"
        suite = Suite.model_validate(raw, context={"base_dir": base, "simulator": kind == "simulator"})
    except ValidationError as exc:
        found = validation_problems(exc, raw, Suite)
        if duplicates:  # already reported with the duplicate's own line
            found = [p for p in found if not p.message.startswith("duplicate ")]
        # an unset ${VAR} left an empty value behind: its own problem is the one to report
        reported = {p.key for p in problems}
        problems += [p for p in found if p.key not in reported]
    else:
        problems += _matrix_problem(suite, raw)
    if problems:
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        # A message may quote a value (a key's value of the wrong type), which may hold a secret.
        redact = Redactor(secrets)
        raise SuiteError(path, [dataclasses.replace(p, message=redact.text(p.message)) for p in problems])
    suite._source = path.resolve()
    suite._secrets = frozenset(secrets)
    suite._referenced_env = frozenset(referenced)
    return suite


def apply_overrides(
    suite: Suite,
    *,
    slots: int | None = None,
    tags: Sequence[str] = (),
    case_ids: Sequence[str] = (),
    model_ids: Sequence[str] = (),
    repeats: int | None = None,
) -> Suite:
    """The suite with command-line overrides applied (``--slots``, ``--filter TAG`` (any of), ``--case``
    and ``--model`` (ids or shell globs), ``--repeats``). Raises :class:`SuiteError` when a selection
    matches nothing or a value is out of range."""
    cases = list(suite.cases)
    if case_ids:
        cases = _select(cases, case_ids, suite, "--case", "case")
    if tags:
        wanted = set(tags)
        cases = [c for c in cases if wanted & set(c.tags)]
        if not cases:
            known = sorted({t for c in suite.cases for t in c.tags})
            raise _override_error(
                suite, "--filter", f"no case has tag {' or '.join(tags)}; tags in the suite: {known}"
            )
    models = _select(list(suite.models), model_ids, suite, "--model", "model") if model_ids else suite.models
    update: dict[str, Any] = {"cases": cases, "models": models}
    if repeats is not None:
        if repeats < 1:
            raise _override_error(suite, "--repeats", f"must be at least 1, got {repeats}")
        update["repeats"] = repeats
    too_big = _matrix_too_big(len(cases), len(models), update.get("repeats", suite.repeats))
    if too_big is not None:
        raise _override_error(suite, "--repeats", too_big)
    if slots is not None:
        if slots < 1:
            raise _override_error(suite, "--slots", f"must be at least 1, got {slots}")
        if slots > MAX_SLOTS:
            raise _override_error(suite, "--slots", f"must be at most {MAX_SLOTS}, got {slots}")
        too_many = suite.target.too_many_slots(slots)
        if too_many is not None:
            raise _override_error(suite, "--slots", too_many)
        update["target"] = suite.target.model_copy(update={"slots": slots})
    return suite.model_copy(update=update)


def _select(items: list[Any], patterns: Sequence[str], suite: Suite, option: str, what: str) -> list[Any]:
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [item.id for item in items if fnmatch.fnmatchcase(item.id, pattern)]
        if not hits:
            known = ", ".join(item.id for item in items)
            raise _override_error(suite, option, f"no {what} matches {pattern!r}; {what}s: {known}")
        chosen.update(hits)
    return [item for item in items if item.id in chosen]


def _override_error(suite: Suite, option: str, message: str) -> SuiteError:
    return SuiteError(suite.source, [Problem(None, None, option, message)])
