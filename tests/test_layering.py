"""The import graph keeps to the architecture (../shared/design/architecture.md, "Target layout"; README, Layout).

Every module of ``ipc_bridge`` and ``orchestrator`` is parsed with :mod:`ast` (nothing is imported), and
the graph of its imports is checked against three rules:

* dependencies run one way: each module belongs to a layer (:data:`LAYERS`, by its longest prefix) that
  may import only the layers listed for it, so ``roo`` and ``wire`` import nothing of server, client or
  simulator, ``results`` never imports ``run``, ``hosts`` never imports ``run``, the scheduler (``run``)
  never imports ``orchestrator.ray`` nor Ray itself;
* no import cycles between modules;
* each name has one import path: a name is imported from the module that defines it, never from one that
  merely imported it (a re-export), except the public surface that README.md names
  (:data:`PUBLIC_SURFACE`). Tests and benchmarks are held to this rule as importers.

Which imports count: all of them. An import inside a function, and one under ``if TYPE_CHECKING:``,
is still a dependency of the code (of its calls, or of its types), so it must follow the layers like any
other; a cycle closed through a deferred or TYPE_CHECKING-only import is still a cycle, which the
deferral only hides from the interpreter, and fails here too.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ipc_bridge", "orchestrator")
IMPORTERS = ("tests", "benchmarks")
"""Read only as importers (the one-import-path rule); they are not layered."""

IPC_LEAVES = (
    "ipc_bridge.durations",
    "ipc_bridge.json_compat",
    "ipc_bridge.lifeline",
    "ipc_bridge.log_limits",
    "ipc_bridge.redaction",
)
"""Helpers of no layer, which every part of both packages may import; they import none of them."""
IPC_ALL = (
    "ipc_bridge",
    *IPC_LEAVES,
    "ipc_bridge.roo",
    "ipc_bridge.wire",
    "ipc_bridge.server",
    "ipc_bridge.client",
    "ipc_bridge.simulator",
)
ORCH_BASE = (
    "orchestrator",
    "orchestrator.status",
    "orchestrator.processes",
    "orchestrator.stats",
    "orchestrator.sequential",
)
"""The package root (its version), the outcome's vocabulary, the process helpers, the statistics and the
sequential test: leaves all may import."""
BELOW = (*ORCH_BASE, "orchestrator.outcome", "orchestrator.tally", "orchestrator.verdict")
"""What every layer of the orchestrator may import (README, Layout): the leaves and the outcome rules."""

LAYERS: dict[str, tuple[str, ...]] = {
    # layer: the other layers it may import (its own modules may always import each other)
    "ipc_bridge": (),
    **{leaf: () for leaf in IPC_LEAVES},
    "ipc_bridge.roo": ("ipc_bridge", *IPC_LEAVES),
    "ipc_bridge.wire": ("ipc_bridge", *IPC_LEAVES),
    "ipc_bridge.server": ("ipc_bridge", *IPC_LEAVES, "ipc_bridge.roo", "ipc_bridge.wire"),
    "ipc_bridge.client": ("ipc_bridge", *IPC_LEAVES, "ipc_bridge.roo", "ipc_bridge.wire"),
    "ipc_bridge.simulator": ("ipc_bridge", *IPC_LEAVES, "ipc_bridge.roo"),
    "orchestrator": (),
    "orchestrator.status": ("orchestrator", *IPC_LEAVES),
    "orchestrator.processes": ("orchestrator", *IPC_LEAVES),
    "orchestrator.stats": ("orchestrator",),
    "orchestrator.sequential": ("orchestrator",),
    "orchestrator.tally": (*ORCH_BASE, "ipc_bridge.roo"),
    "orchestrator.verdict": ORCH_BASE,
    "orchestrator.outcome": (*ORCH_BASE, "orchestrator.tally", "orchestrator.verdict", "ipc_bridge.roo"),
    "orchestrator.suite": (*BELOW, *IPC_ALL),
    "orchestrator.hosts": (*BELOW, "orchestrator.suite", *IPC_ALL),
    "orchestrator.results": (*BELOW, "orchestrator.suite", *IPC_ALL),
    "orchestrator.analysis": (*BELOW, "orchestrator.suite", "orchestrator.results"),
    "orchestrator.view": (
        *BELOW,
        "orchestrator.suite",
        "orchestrator.results",
        "orchestrator.analysis",
        *IPC_ALL,
    ),
    "orchestrator.run": (
        *BELOW,
        "orchestrator.suite",
        "orchestrator.hosts",
        "orchestrator.results",
        *IPC_ALL,
    ),
    "orchestrator.ray": (
        *BELOW,
        "orchestrator.suite",
        "orchestrator.hosts",
        "orchestrator.results",
        "orchestrator.run",
        *IPC_ALL,
    ),
    "orchestrator.cli": (
        *BELOW,
        "orchestrator.suite",
        "orchestrator.hosts",
        "orchestrator.results",
        "orchestrator.run",
        "orchestrator.ray",
        "orchestrator.analysis",
        "orchestrator.view",
        *IPC_ALL,
    ),
    "orchestrator.__main__": ("orchestrator.cli",),
}

FORBIDDEN: dict[tuple[str, str], str] = {
    # Edges inside one layer that the layers cannot express.
    ("orchestrator.results.store", "orchestrator.results.report"): "the writer does not depend on the report",
}

THIRD_PARTY: dict[str, tuple[str, ...]] = {
    # A third-party package that only some layers may import.
    "ray": ("orchestrator.ray",),
}

PENDING: dict[tuple[str, str], str] = {
    # Violations that other parts of issue #11 remove on their own branches, each named with its part:
    # ("module", "imported module"): "part: what removes it". Tolerated until then, and only then: once
    # one is gone, test_pending_violations_are_still_there asks for its line here to go.
}

PUBLIC_SURFACE = {
    ("orchestrator.results", "load"),
    ("orchestrator.results", "live"),
    ("orchestrator.analysis", "compare_runs"),
    ("orchestrator.analysis", "pass_at_k"),
    ("orchestrator.analysis", "pass_rate"),
}
"""Names a package ``__init__`` re-exports because README.md tells users to import them from there."""


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module."""
    target: str
    """The imported module (``from a import b`` with ``a.b`` a module imports ``a.b``)."""
    name: str | None
    """The name taken from ``target``; None when the module itself is imported."""
    alias: str
    """What the name is bound to in ``source``."""
    line: int

    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _discover(tops: tuple[str, ...]) -> dict[str, Module]:
    found = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "node_modules" in path.parts or "fixtures" in path.parts:
                continue
            name = _module_name(path)
            found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


PROJECT = _discover(PACKAGES)
EVERYTHING = {**PROJECT, **_discover(IMPORTERS)}


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def imports_of(module: Module) -> list[Import]:
    """Every import of ``module``, wherever it is written."""
    if module.name in EVERYTHING and EVERYTHING[module.name] is module:
        return _imports_of(module.name)
    return list(_imports(module))


@functools.cache
def _imports_of(name: str) -> list[Import]:
    return list(_imports(EVERYTHING[name]))


_BY_NAME = re.compile(r"([A-Za-z_][\w.]*):([A-Za-z_]\w*)")


def _imports(module: Module) -> Iterator[Import]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(
                    module.name, alias.name, None, alias.asname or alias.name.split(".")[0], node.lineno
                )
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in EVERYTHING:
                    yield Import(module.name, full, None, alias.asname or alias.name, node.lineno)
                else:
                    yield Import(module.name, base, alias.name, alias.asname or alias.name, node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "package.module:name", imported by name later (the command line's lazy commands, a
            # process's entry point): a dependency all the same. Bound to no name here.
            match = _BY_NAME.fullmatch(node.value)
            if match and _project(match[1]):
                yield Import(module.name, match[1], match[2], "", node.lineno)


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def layer_of(module: str) -> str | None:
    """The layer of ``module``: the longest prefix named in :data:`LAYERS`. A package's root names only
    itself (its ``__init__``), so that a new top-level module is in no layer until one is chosen for it."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return prefix
    return module if module in LAYERS else None


def _bound_at_top(body: list[ast.stmt]) -> Iterator[str]:
    """Names a module binds itself (not by importing them): defs, classes, assignments, at module
    level and in its top-level ``if``/``try``/``with``/``for`` blocks."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            yield from (n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
            yield from _bound_at_top(node.body)
            yield from _bound_at_top(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _bound_at_top(block)


@functools.cache
def defines(module: str) -> frozenset[str]:
    """The names ``module`` defines (its submodules included, for a package)."""
    mod = EVERYTHING[module]
    names = set(_bound_at_top(mod.tree.body))
    names.discard("__all__")
    if mod.is_package:
        names.update(m.rsplit(".", 1)[1] for m in EVERYTHING if m.rsplit(".", 1)[0] == module and m != module)
    return frozenset(names)


def layer_violations() -> dict[tuple[str, str], str]:
    """``(module, imported module) -> why it may not``, one entry per offending import."""
    problems: dict[tuple[str, str], str] = {}
    for module in PROJECT.values():
        source = layer_of(module.name)
        if source is None:
            problems[module.name, ""] = f"{module.name}: in no layer of LAYERS (decide where it belongs)"
            continue
        for imp in imports_of(module):
            top = imp.target.split(".")[0]
            edge = (module.name, imp.target)
            if top in THIRD_PARTY and source not in THIRD_PARTY[top]:
                problems[edge] = f"{imp.where()} imports {imp.target}: only {THIRD_PARTY[top]} may"
            if not _project(imp.target):
                continue
            target = layer_of(imp.target)
            if target is None:
                continue  # reported as in no layer
            if target != source and target not in LAYERS[source]:
                problems[edge] = f"{imp.where()} imports {imp.target}: {source} may not import {target}"
            for (src, dst), why in FORBIDDEN.items():
                if module.name == src and (imp.target == dst or imp.target.startswith(dst + ".")):
                    problems[edge] = f"{imp.where()} imports {imp.target}: {why}"
    return problems


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in PROJECT}
    for module in PROJECT.values():
        for imp in imports_of(module):
            if imp.target in PROJECT and imp.target != module.name:
                edges[module.name].add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _definer(name: str) -> str:
    where = sorted(m for m in EVERYTHING if _project(m) and name in defines(m))
    return ", ".join(where) or "nowhere in the packages"


def reexports() -> list[str]:
    """Names imported from a project module that does not define them, attribute reads of such names off
    an imported module, and ``__all__`` entries naming foreign names."""
    problems = []
    for module in EVERYTHING.values():
        module_aliases = {}
        for imp in imports_of(module):
            if not _project(imp.target) or imp.target not in EVERYTHING:
                continue
            if imp.name is None:
                if imp.alias == imp.target.split(".")[-1] or imp.alias != imp.target.split(".")[0]:
                    module_aliases[imp.alias] = imp.target
                continue
            if imp.name not in defines(imp.target) and (imp.target, imp.name) not in PUBLIC_SURFACE:
                problems.append(
                    f"{imp.where()} imports {imp.name} from {imp.target}, which defines it not "
                    f"(defined in {_definer(imp.name)})"
                )
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
            ):
                target = module_aliases[node.value.id]
                if node.attr not in defines(target) and not node.attr.startswith("__"):
                    problems.append(
                        f"{module.name}:{node.lineno} reads {node.attr} off {target}, which defines it "
                        f"not (defined in {_definer(node.attr)})"
                    )
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and _project(_absolute(module, node)):
                for alias in node.names:
                    if alias.asname == alias.name:
                        problems.append(
                            f"{module.name}:{node.lineno} imports {alias.name} as {alias.name}: a re-export"
                        )
        own = defines(module.name)
        for node in module.tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                for entry in ast.literal_eval(node.value):
                    if entry not in own and (module.name, entry) not in PUBLIC_SURFACE:
                        problems.append(f"{module.name}: __all__ names {entry}, defined elsewhere")
    return problems


# ------------------------------------------------------------------------------------------- tests


def test_every_import_follows_the_layers() -> None:
    problems = layer_violations()
    unexpected = [why for edge, why in problems.items() if edge not in PENDING]
    assert not unexpected, "\n".join(unexpected)


def test_pending_violations_are_still_there() -> None:
    """A violation that another part of the redesign removed must leave :data:`PENDING` too."""
    gone = [
        f"{src} -> {dst} ({who})"
        for (src, dst), who in PENDING.items()
        if (src, dst) not in layer_violations()
    ]
    assert not gone, "fixed: remove from PENDING:\n" + "\n".join(gone)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_each_name_has_one_import_path() -> None:
    problems = reexports()
    assert not problems, "\n".join(problems)


# The checker itself: each rule catches what it is there for.


def _fake(name: str, source: str) -> Module:
    return Module(name, ROOT / (name.replace(".", "/") + ".py"), ast.parse(source))


def test_checker_sees_imports_in_functions_and_type_checking_blocks() -> None:
    module = _fake(
        "ipc_bridge.wire.example",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ipc_bridge.client.types import BridgeLost\n"
        "def f():\n    from ipc_bridge.server import bridge\n    import ray\n"
        'LAZY = {"bridge": "ipc_bridge.server.cli:bridge"}\n',
    )
    found = {(i.target, i.name) for i in imports_of(module)}
    assert ("ipc_bridge.client.types", "BridgeLost") in found
    assert ("ipc_bridge.server.bridge", None) in found
    assert ("ray", None) in found
    assert ("ipc_bridge.server.cli", "bridge") in found


def test_checker_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]


def test_checker_knows_definitions_from_imports() -> None:
    names = set(
        _bound_at_top(
            ast.parse(
                "import os\nfrom x import Y\nA = 1\nB: int\nclass C: ...\ndef d(): ...\n"
                "try:\n    E = 1\nexcept ImportError:\n    F = None\n"
            ).body
        )
    )
    assert names == {"A", "B", "C", "d", "E", "F"}


def test_a_new_top_level_module_is_in_no_layer() -> None:
    assert layer_of("ipc_bridge.roo.framing") == "ipc_bridge.roo"
    assert layer_of("orchestrator") == "orchestrator"
    assert layer_of("orchestrator.newcomer") is None


def test_every_layer_named_exists() -> None:
    """A renamed package must not leave its rule behind, silently checking nothing."""
    for layer, allowed in LAYERS.items():
        for name in (layer, *allowed):
            assert any(m == name or m.startswith(name + ".") for m in PROJECT), name
