"""The plan: the suite's matrix (cases x models x repeats) as attempts with stable keys.

An attempt's key is ``(case id, model id, repeat index, config hash)``. The config hash covers everything
that can change the attempt's result: the case (prompt text, setup, check, timeouts, simulate script),
the model, the merged StartNewTask configuration, the outcome limits, the target kind, and the content
of the workspace template. Secrets enter it redacted, so rotating an API key does not invalidate
finished work; slots, budget and repeats do not enter it at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.status import OutcomeLimits
from orchestrator.suite.config import Case, ModelSpec, Suite
from orchestrator.suite.file_checks import FileCheckError, open_regular_nofollow, walk_tree
from orchestrator.suite.yaml_loader import Problem, SuiteError

HASH_LENGTH = 16
"""Hex digits kept of the sha256 (64 bits: no collision in any realistic number of configurations)."""

_SKIP_DIRS = frozenset({".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
# where the files are does not matter, what they hold does (the prompt text and the workspace digest)
_CASE_NOT_HASHED = frozenset({"tags", "description", "workspace", "prompt_file"})


@dataclass(frozen=True, order=True)
class AttemptKey:
    case_id: str
    model_id: str
    repeat: int
    config_hash: str

    @property
    def slug(self) -> str:
        """``case__model__repeat``: ids cannot contain ``__``, so it parses back unambiguously."""
        return f"{self.case_id}__{self.model_id}__{self.repeat}"

    def events_name(self, attempt: int) -> str:
        """File name of an attempt's transcript: ``<case>__<model>__<repeat>__<attempt>.jsonl``."""
        return f"{self.slug}__{attempt}.jsonl"


@dataclass(frozen=True)
class Attempt:
    """Everything a worker needs to run one attempt (picklable). ``configuration`` holds the real
    secrets: send it to the host, never log or write it."""

    key: AttemptKey
    index: int
    """Position in the plan (the order attempts are started in)."""
    case: Case
    model: ModelSpec
    prompt: str
    configuration: dict[str, Any]
    limits: OutcomeLimits
    setup_timeout: float
    check_timeout: float
    env: dict[str, str]
    """Extra environment for setup and check commands."""
    retries: int
    """Extra attempts allowed after infrastructure failures."""
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Plan:
    suite: Suite
    config_hash: str
    """Hash of the whole (overridden) suite: see :func:`suite_hash`."""
    attempts: tuple[Attempt, ...]

    def __len__(self) -> int:
        return len(self.attempts)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self.attempts)

    def keys(self) -> frozenset[AttemptKey]:
        return frozenset(a.key for a in self.attempts)


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    # a path under a directory whose name is not UTF-8 holds surrogate escapes: hash them as they are
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


def workspace_digest(path: Path | None) -> str:
    """Content hash of a workspace template (names, exec bits, bytes, symlink targets); caches such as
    ``__pycache__`` and ``.git`` are skipped so that running the tests by hand does not change it.
    Raises :class:`FileCheckError` for anything but regular files, directories and symlinks (never
    blocks on a FIFO or reads a device), or an unreadable file."""
    if path is None:
        return "none"
    sha = hashlib.sha256()
    try:
        for entry in walk_tree(path, _SKIP_DIRS):
            if entry.is_dir or entry.rel.endswith(_SKIP_SUFFIXES):
                continue
            # names are bytes to the filesystem: one that is not UTF-8 is still hashed, as its bytes
            rel = os.fsencode(entry.rel)
            if entry.is_link:
                sha.update(b"L " + rel + b" -> " + os.fsencode(os.readlink(entry.path)) + b"\n")
                continue
            mode = b"x" if os.access(entry.path, os.X_OK) else b"f"
            sha.update(mode + b" " + rel + b"\n")
            with open(open_regular_nofollow(entry.path), "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(chunk)
            sha.update(b"\n")
    except OSError as exc:
        raise FileCheckError(
            f"cannot read workspace {path}: {exc.strerror or exc} ({exc.filename})"
        ) from None
    return sha.hexdigest()[:HASH_LENGTH]


def attempt_hash(suite: Suite, case: Case, model: ModelSpec, *, workspace: str | None = None) -> str:
    """The config hash of one (case, model) pair; ``workspace`` is a precomputed
    :func:`workspace_digest` of the case's template."""
    redact = suite.redactor()
    # each target kind names its fields that say where hosts are or how fast they start (not_hashed)
    not_hashed = suite.target.not_hashed
    target = {k: v for k, v in suite.target.model_dump(mode="json").items() if k not in not_hashed}
    payload = {
        "target": target,
        "case": {k: v for k, v in case.model_dump(mode="json").items() if k not in _CASE_NOT_HASHED},
        "model": {k: v for k, v in model.model_dump(mode="json").items() if k != "description"},
        "configuration": suite.configuration_for(case, model),
        "limits": suite.limits_for(case).model_dump(),
        "setup_timeout": suite.defaults.setup_timeout,
        "check_timeout": suite.check_timeout_for(case),
        "env": suite.env_for(case),
        "workspace": workspace if workspace is not None else workspace_digest(case.workspace),
    }
    return _digest(redact(payload))


def suite_hash(suite: Suite, *, pair_hashes: dict[tuple[str, str], str] | None = None) -> str:
    """Hash of a suite: its name and every (case, model) config hash. Repeats, slots and budget do not
    enter it. Compute it before command-line filters (--case, --model, --filter) if a resumed run
    with other filters should count as the same suite."""
    if pair_hashes is None:
        pair_hashes = _pair_hashes(suite)
    return _digest({"name": suite.name, "pairs": sorted(f"{c}/{m}/{h}" for (c, m), h in pair_hashes.items())})


def _pair_hashes(suite: Suite) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    digests: dict[Path | None, str] = {}  # cases often share one template: hash it once
    for i, case in enumerate(suite.cases):
        if case.workspace not in digests:
            try:
                digests[case.workspace] = workspace_digest(case.workspace)
            except FileCheckError as exc:  # changed since the suite was loaded
                raise SuiteError(
                    suite.source, [Problem(None, None, f"cases[{i}].workspace", str(exc))]
                ) from None
        for model in suite.models:
            out[(case.id, model.id)] = attempt_hash(suite, case, model, workspace=digests[case.workspace])
    return out


def build_plan(suite: Suite) -> Plan:
    """Expand the matrix. Order: repeat, then case, then model (suite order), so that every case and
    model has a first result before any repeat runs, and models alternate on each case."""
    hashes = _pair_hashes(suite)
    # what an attempt needs of its (case, model) pair, computed once and shared by its repeats
    # (a worker copies the configuration before it adds to it)
    pairs = [
        (case, model, _pair_fields(suite, case, model)) for case in suite.cases for model in suite.models
    ]
    attempts: list[Attempt] = []
    for repeat in range(suite.repeats):
        for case, model, fields in pairs:
            key = AttemptKey(case.id, model.id, repeat, hashes[(case.id, model.id)])
            attempts.append(Attempt(key=key, index=len(attempts), case=case, model=model, **fields))
    return Plan(suite=suite, config_hash=suite_hash(suite, pair_hashes=hashes), attempts=tuple(attempts))


def _pair_fields(suite: Suite, case: Case, model: ModelSpec) -> dict[str, Any]:
    assert case.prompt is not None  # validated: a case always has its prompt text
    return {
        "prompt": case.prompt,
        "configuration": suite.configuration_for(case, model),
        "limits": suite.limits_for(case),
        "setup_timeout": suite.defaults.setup_timeout,
        "check_timeout": suite.check_timeout_for(case),
        "env": suite.env_for(case),
        "retries": suite.defaults.retries,
        "tags": tuple(case.tags),
    }


def pending(plan: Plan, done_keys: Collection[AttemptKey]) -> list[Attempt]:
    """The attempts of the plan that have no final record yet, in plan order."""
    done = done_keys if isinstance(done_keys, (set, frozenset)) else set(done_keys)
    return [a for a in plan.attempts if a.key not in done]
