"""The environment of every process a run starts: the one place where it is built.

The suite's secrets belong in StartNewTask's configuration only, which workers send from the job data
they are given. So:

* setup and check commands (and the agent's tests they run) get :func:`command_env`: a minimal base of
  this process's environment (:data:`COMMAND_BASE`) plus the suite's ``env:`` entries, nothing else;
* the bridge, the workers and the hosts get :func:`service_env`: this process's environment without the
  variables the suite's ``${...}`` refer to and without any variable whose name looks secret
  (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, the rule that marks a suite value secret),
  plus what their spawn site adds on purpose (a target's ``env:``, the bridge's own HMAC key);
* children whose spawn takes no environment (multiprocess's spawned workers and its resource tracker,
  a local Ray cluster) inherit it: :func:`withhold` takes those variables out of this process's own
  environment before any of them starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from ipc_bridge.redaction import SECRET_KEY

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)")
"""``${NAME`` (``${NAME}``, ``${NAME:-default}``); ``$${`` is a literal, skipped."""

COMMAND_BASE = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR"}
)
"""What a setup or check command gets of the orchestrator's environment (and every ``LC_*``)."""


def withheld(name: str, referenced: Collection[str] = ()) -> bool:
    """Whether variable ``name`` stays out of a child's environment unless its spawn site adds it: a
    secret-looking name, or one the suite's ``${...}`` refers to (outside :data:`COMMAND_BASE`: a
    ``${HOME}`` in a path does not make HOME a secret for anyone)."""
    if SECRET_KEY.search(name):
        return True
    return name in referenced and name not in COMMAND_BASE and not name.startswith("LC_")


def service_env(referenced: Collection[str] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the bridge, a worker or a host: this process's without what is withheld,
    then ``extra`` (given on purpose: kept even when its names look secret)."""
    env = {k: v for k, v in os.environ.items() if not withheld(k, referenced)}
    env.update(extra or {})
    return env


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a setup or check command: :data:`COMMAND_BASE` and ``LC_*`` of this process's,
    then ``extra`` (the suite's ``env:`` for the case)."""
    env = {k: v for k, v in os.environ.items() if k in COMMAND_BASE or k.startswith("LC_")}
    env.update(extra or {})
    return env


def withhold(referenced: Collection[str] = ()) -> None:
    """Take what :func:`service_env` leaves out out of this process's own environment, for the children
    that inherit it. Call it before any child starts (the main process, once the suite is loaded; a
    worker or a Ray node actor first thing)."""
    for name in [k for k in os.environ if withheld(k, referenced)]:
        del os.environ[name]


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
