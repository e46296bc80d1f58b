"""Matrix expansion, attempt keys, config hashes and the resume filter."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest

from orchestrator.suite.config import Suite, apply_overrides, load_suite
from orchestrator.suite.plan import AttemptKey, build_plan, pending, suite_hash, workspace_digest
from orchestrator.suite.yaml_loader import SuiteError

SUITE = """\
name: plan-demo
target: {kind: simulator, slots: 2}
defaults:
  configuration: {apiProvider: openrouter, openRouterApiKey: "${KEY}"}
models:
  - id: m1
  - id: m2
    configuration: {openRouterModelId: x/y}
repeats: 2
budget: {max_cost_usd: 5}
cases:
  - id: a
    prompt: do a
    workspace: ws
    check: "true"
    tags: [t1]
  - id: b
    prompt: do b
    tags: [t2]
  - id: c
    prompt: do c
"""


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "main.py").write_text("print('hi')\n")
    (tmp_path / "suite.yaml").write_text(SUITE)
    return tmp_path


def load(directory: Path, text: str | None = None, key: str = "sk-key-one") -> Suite:
    if text is not None:
        (directory / "suite.yaml").write_text(textwrap.dedent(text))
    return load_suite(directory / "suite.yaml", env={"KEY": key})


def test_matrix_order_repeat_case_model(suite_dir: Path) -> None:
    plan = build_plan(load(suite_dir))
    assert len(plan) == 3 * 2 * 2
    got = [(a.key.repeat, a.key.case_id, a.key.model_id) for a in plan]
    assert got[:6] == [
        (0, "a", "m1"),
        (0, "a", "m2"),
        (0, "b", "m1"),
        (0, "b", "m2"),
        (0, "c", "m1"),
        (0, "c", "m2"),
    ]
    assert got[6:] == [(1, c, m) for _, c, m in got[:6]]
    assert [a.index for a in plan] == list(range(12))
    assert len(plan.keys()) == 12


def test_attempt_carries_what_the_worker_needs(suite_dir: Path) -> None:
    plan = build_plan(load(suite_dir))
    first = plan.attempts[1]
    assert first.prompt == "do a"
    assert first.configuration == {
        "apiProvider": "openrouter",
        "openRouterApiKey": "sk-key-one",
        "openRouterModelId": "x/y",
    }
    assert first.limits.timeout == 300.0
    assert first.check_timeout == 120.0 and first.retries == 2
    assert first.case.workspace == (suite_dir / "ws").resolve()
    assert first.tags == ("t1",)
    # attempts travel to worker processes
    assert pickle.loads(pickle.dumps(first)) == first


def test_hashes_are_deterministic_and_ignore_secret_values(suite_dir: Path) -> None:
    one = build_plan(load(suite_dir, key="sk-key-one"))
    two = build_plan(load(suite_dir, key="sk-completely-different"))
    assert [a.key for a in one] == [a.key for a in two]
    assert one.config_hash == two.config_hash
    assert "sk-key-one" not in repr(one.attempts[0].key)


def test_hash_differs_per_case_and_model(suite_dir: Path) -> None:
    plan = build_plan(load(suite_dir))
    pairs = {(a.key.case_id, a.key.model_id): a.key.config_hash for a in plan}
    assert len(set(pairs.values())) == 6
    # repeats of the same pair share the hash
    assert all(a.key.config_hash == pairs[(a.key.case_id, a.key.model_id)] for a in plan)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("prompt: do a", "prompt: do A"),
        ('check: "true"', 'check: "false"'),
        ("apiProvider: openrouter", "apiProvider: openai"),
        ("target: {kind: simulator, slots: 2}", "target: {kind: simulator, slots: 2, engine: 3.50.4}"),
        ("defaults:\n", "defaults:\n  timeout: 1m\n"),
        ("    prompt: do a\n", "    prompt: do a\n    simulate: {duration: 1s}\n"),
    ],
)
def test_result_relevant_changes_change_the_hash(suite_dir: Path, old: str, new: str) -> None:
    before = build_plan(load(suite_dir))
    after = build_plan(load(suite_dir, SUITE.replace(old, new)))
    a_before = next(a for a in before if a.key.case_id == "a")
    a_after = next(a for a in after if a.key.case_id == "a")
    assert a_before.key.config_hash != a_after.key.config_hash
    assert before.config_hash != after.config_hash


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("slots: 2", "slots: 7"),
        ("repeats: 2", "repeats: 3"),
        ("max_cost_usd: 5", "max_cost_usd: 50"),
        ("tags: [t1]", "tags: [t1, extra]"),
    ],
)
def test_irrelevant_changes_keep_the_hash(suite_dir: Path, old: str, new: str) -> None:
    before = build_plan(load(suite_dir))
    after = build_plan(load(suite_dir, SUITE.replace(old, new)))
    assert {a.key.config_hash for a in before} == {a.key.config_hash for a in after}
    assert before.config_hash == after.config_hash


def test_workspace_content_enters_the_hash_but_caches_do_not(suite_dir: Path) -> None:
    ws = suite_dir / "ws"
    base = workspace_digest(ws)
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0\1")
    (ws / ".pytest_cache").mkdir()
    (ws / ".pytest_cache" / "v").write_text("x")
    assert workspace_digest(ws) == base
    (ws / "main.py").write_text("print('changed')\n")
    changed = workspace_digest(ws)
    assert changed != base
    (ws / "main.py").chmod(0o755)
    assert workspace_digest(ws) != changed
    (ws / "sub").mkdir()
    (ws / "sub" / "new.txt").write_text("")
    assert len({base, changed, workspace_digest(ws)}) == 3
    assert workspace_digest(None) == "none"


def test_moving_the_suite_keeps_the_hash(suite_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("moved")
    (other / "ws").mkdir()
    (other / "ws" / "main.py").write_text("print('hi')\n")
    (other / "suite.yaml").write_text(SUITE)
    assert build_plan(load(suite_dir)).config_hash == build_plan(load(other)).config_hash


def test_pending_keeps_order_and_skips_done(suite_dir: Path) -> None:
    plan = build_plan(load(suite_dir))
    done = {plan.attempts[0].key, plan.attempts[5].key}
    rest = pending(plan, done)
    assert [a.index for a in rest] == [i for i in range(12) if i not in (0, 5)]
    # a final record made under another configuration does not count
    stale = AttemptKey("a", "m1", 0, "0" * 16)
    assert len(pending(plan, [stale])) == 12
    assert pending(plan, plan.keys()) == []


def test_suite_hash_before_and_after_filters(suite_dir: Path) -> None:
    suite = load(suite_dir)
    filtered = apply_overrides(suite, case_ids=["a"])
    assert suite_hash(filtered) != suite_hash(suite)
    # the per-attempt keys of the remaining cases are the same, so resume works across filters
    keys = {a.key for a in build_plan(filtered)}
    assert keys <= build_plan(suite).keys()


def test_key_names() -> None:
    key = AttemptKey("py-two-fer", "sonnet", 2, "abcd")
    assert key.slug == "py-two-fer__sonnet__2"
    assert key.events_name(3) == "py-two-fer__sonnet__2__3.jsonl"


def test_the_workspace_digest_is_the_one_earlier_runs_were_started_with(tmp_path: Path) -> None:
    # computed by the digest before it was rewritten not to block on special files: a run started
    # then still resumes with the same keys
    ws = tmp_path / "ws"
    for sub in ("sub", ".git", "b"):
        (ws / sub).mkdir(parents=True)
    (ws / "main.py").write_text("print('hi')\n")
    (ws / "sub" / "x.txt").write_text("x")
    (ws / "b" / "y.txt").write_text("y")
    (ws / "b" / "y.txt").chmod(0o755)
    (ws / ".git" / "HEAD").write_text("g")
    os.symlink("main.py", ws / "link")
    os.symlink("missing", ws / "dangling")
    assert workspace_digest(ws) == "6c8f7157a4a4c4a8"


@pytest.mark.timeout(30)
def test_a_fifo_that_appears_after_loading_is_refused_not_waited_on(suite_dir: Path) -> None:
    suite = load(suite_dir)
    os.mkfifo(suite_dir / "ws" / "pipe")  # nobody ever writes to it: reading it would block forever
    with pytest.raises(SuiteError) as error:
        build_plan(suite)
    assert error.value.problems[0].key == "cases[0].workspace"
    assert "pipe is a FIFO (named pipe), not a regular file" in str(error.value)


def test_file_names_that_are_not_utf8_load_and_hash(suite_dir: Path) -> None:
    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 name: a surrogate escape in Python's str
    (suite_dir / "ws" / name).write_text("x")
    first = build_plan(load(suite_dir))
    os.rename(suite_dir / "ws" / name, suite_dir / "ws" / os.fsdecode(b"caf\xe8.txt"))
    assert build_plan(load(suite_dir)).config_hash != first.config_hash


def test_a_directory_symlink_enters_the_hash(suite_dir: Path) -> None:
    (suite_dir / "ws" / "data").mkdir()
    os.symlink("data", suite_dir / "ws" / "current")
    first = workspace_digest(suite_dir / "ws")
    (suite_dir / "ws" / "current").unlink()
    os.symlink(".", suite_dir / "ws" / "current")
    assert workspace_digest(suite_dir / "ws") != first


def test_a_suite_under_a_directory_not_named_in_utf8_hashes(tmp_path: Path) -> None:
    directory = tmp_path / os.fsdecode(b"d\xff")  # the resolved cwd below holds a surrogate escape
    directory.mkdir()
    (directory / "suite.yaml").write_text(
        "name: t\ntarget: {kind: command, argv: [x], cwd: .}\n" + "cases: [{id: a, prompt: x}]\n"
    )
    assert len(build_plan(load_suite(directory / "suite.yaml", env={})).config_hash) == 16
