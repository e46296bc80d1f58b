"""The environment of every process a run starts: the one place where it is built.

The suite's secrets belong in StartNewTask's configuration only, which workers send from the job data
they are given. So:

* setup and check commands (and the agent's tests they run) get :func:`command_env`: a minimal base of
  this process's environment (:data:`COMMAND_BASE`) plus the suite's ``env:`` entries, nothing else;
* every other child (the bridge, the workers, the hosts, a simulator farm) gets :func:`service_env`:
  this process's environment without the variables :func:`withheld` names, plus what its spawn site
  adds on purpose (a target's ``env:``, the bridge's own HMAC key).

What is withheld depends on the suite, so a process that starts children takes it out of its own
environment first (:func:`withhold`: the main process once the suite is loaded, a worker or a Ray node
actor first thing). That also covers the children whose spawn takes no environment: multiprocess's
spawned workers and its resource tracker, a local Ray cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from ipc_bridge.redaction import MIN_SECRET_LEN, SECRET_KEY

COMMAND_BASE = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR"}
)
"""What a setup or check command gets of the orchestrator's environment (and every ``LC_*``)."""

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)")
"""``${NAME`` (``${NAME}``, ``${NAME:-default}``); ``$${`` is a literal, skipped."""


def withheld(name: str, value: str, referenced: Collection[str] = (), secrets: Collection[str] = ()) -> bool:
    """Whether variable ``name`` (holding ``value``) stays out of every child's environment unless its
    spawn site adds it: a secret-looking name (the rule that marks a suite value secret), a variable the
    suite's ``${...}`` refer to, or one holding a secret value of the suite under another name. Never
    one of :data:`COMMAND_BASE` or ``LC_*``: a ``${HOME}`` in a path makes HOME a secret for nobody."""
    if SECRET_KEY.search(name):
        return True
    if name in COMMAND_BASE or name.startswith("LC_"):
        return False
    return name in referenced or (len(value) >= MIN_SECRET_LEN and value in secrets)


def withhold(referenced: Collection[str] = (), secrets: Collection[str] = ()) -> None:
    """Take every variable :func:`withheld` names out of this process's own environment, before any
    child starts (``referenced``: the suite's ``${...}`` names; ``secrets``: its secret values)."""
    for name in [k for k, v in os.environ.items() if withheld(k, v, referenced, secrets)]:
        del os.environ[name]


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the bridge, a worker, a host: this process's (after :func:`withhold`) without
    secret-looking names, then ``extra`` (given on purpose: kept even when its names look secret)."""
    env = {k: v for k, v in os.environ.items() if not withheld(k, v)}
    env.update(extra or {})
    return env


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a setup or check command: :data:`COMMAND_BASE` and ``LC_*`` of this process's,
    then ``extra`` (the suite's ``env:`` for the case)."""
    env = {k: v for k, v in os.environ.items() if k in COMMAND_BASE or k.startswith("LC_")}
    env.update(extra or {})
    return env


def referenced_variables(data: Any) -> set[str]:
    """The names of the variables a suite's ``${...}`` refer to, in its data before interpolation."""
    names: set[str] = set()
    seen: set[int] = set()  # a YAML alias shares one object between places: walk it once
    todo = [data]
    while todo:
        node = todo.pop()
        if isinstance(node, str):
            names.update(m.group(1) for m in _REFERENCE.finditer(node) if m.group(1))
        elif isinstance(node, (dict, list)) and id(node) not in seen:
            seen.add(id(node))
            todo.extend(node.values() if isinstance(node, dict) else node)
    return names
