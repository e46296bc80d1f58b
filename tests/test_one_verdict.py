"""An attempt's status is decided in one place: the state machine (orchestrator/outcome.py, which reads the
task's events, and orchestrator/verdict.py, which maps every other ending and the tracker's outcome to a
:class:`~orchestrator.verdict.Verdict`). Every module of both packages is parsed with :mod:`ast` (nothing
is imported), and outside those modules:

* a member of :class:`~orchestrator.status.Status` is only ever compared with (``status is
  Status.CANCELLED``), never a value given, assigned or returned (that would be a status decided there);
* no :class:`~orchestrator.verdict.Verdict` is made;
* an :class:`~orchestrator.results.records.AttemptRecord` is made only by ``orchestrator.run.jobs.new_record``,
  which takes the verdict whole, and ``new_record`` is given no status, reason, error class or error of
  its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.status import Status

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ipc_bridge", "orchestrator")
STATE_MACHINE = {"orchestrator.status", "orchestrator.outcome", "orchestrator.verdict"}
RECORD_MAKER = "orchestrator.run.jobs"
VERDICT_FIELDS = {"status", "reason", "error_class", "error"}
_COMPARISONS = (ast.Is, ast.IsNot, ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, ast.parse(path.read_text(), str(path))


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def violations(module: str, tree: ast.Module) -> list[str]:
    """What in ``tree`` (the module ``module``) decides a status outside the state machine."""
    if module in STATE_MACHINE:
        return []
    compared: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and all(isinstance(op, _COMPARISONS) for op in node.ops):
            for operand in (node.left, *node.comparators):
                compared.add(id(operand))
                if isinstance(operand, (ast.Tuple, ast.List, ast.Set)):  # status in (Status.A, Status.B)
                    compared.update(id(item) for item in operand.elts)
    out: list[str] = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Status"
            and node.attr in Status.__members__
            and id(node) not in compared
        ):
            out.append(f"{where}: Status.{node.attr} used as a value, not compared with")
        elif isinstance(node, ast.Call):
            called = _called(node)
            if called == "Verdict":
                out.append(f"{where}: a Verdict made outside orchestrator.verdict")
            elif called == "AttemptRecord" and module != RECORD_MAKER:
                out.append(f"{where}: an AttemptRecord made outside {RECORD_MAKER}.new_record")
            elif called == "new_record":
                given = {k.arg for k in node.keywords if k.arg} & VERDICT_FIELDS
                if given:
                    out.append(f"{where}: new_record given {sorted(given)} besides its verdict")
    return out


def test_no_status_is_decided_outside_the_state_machine() -> None:
    found = [v for module, tree in _modules() for v in violations(module, tree)]
    assert found == []


@pytest.mark.parametrize(
    "code",
    [
        # what the tree did before the verdicts had one place (the scheduler, the attempt runner)
        'self._error_record(job, Status.INFRA_ERROR, "infra", "worker died", detail)',
        'tracker.force(Status.INFRA_ERROR, f"StartNewTask failed: {exc}", loop.time())',
        'status, reason = Status.CANCELLED, "cancelled by the orchestrator"',
        "new_record(run_id, job, verdict, started=now, ended=now, reason='worker died')",
        "Verdict(Status.INFRA_ERROR, 'worker died')",
        "AttemptRecord(run_id='r', status='completed')",
        "return Status.COMPLETED",
    ],
)
def test_the_rule_catches_a_status_decided_elsewhere(code: str) -> None:
    assert violations("orchestrator.run.scheduler", ast.parse(code)) != []


@pytest.mark.parametrize(
    "code",
    [
        "if record.status is Status.CANCELLED: pass",
        "passed = True if verdict.status is Status.COMPLETED and not check else None",
        "ok = status not in (Status.API_ERROR, Status.INFRA_ERROR)",
        "new_record(run_id, job, decide(WorkerDied(1, -9)), started=now, ended=now, passed=None)",
    ],
)
def test_the_rule_lets_a_status_be_read(code: str) -> None:
    assert violations("orchestrator.run.scheduler", ast.parse(code)) == []
