"""Each target kind's fields that say where its hosts are, how many run and how fast they start stay out of
an attempt's config hash; what changes a host's behaviour goes in."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.suite.config import apply_overrides, load_suite
from orchestrator.suite.plan import build_plan
from orchestrator.suite.yaml_loader import SuiteError


def _keys(tmp_path: Path, target: str) -> list[str]:
    (tmp_path / "a.sock").touch()
    (tmp_path / "b.sock").touch()
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: h\ntarget: {target}\ncases: [{{id: a, prompt: x}}]\n")
    return [a.key.config_hash for a in build_plan(load_suite(suite, env={}))]


@pytest.mark.parametrize(
    ("base", "moved", "changed"),
    [
        (
            "{kind: simulator}",
            "{kind: simulator, slots: 9, launch_timeout: 5s, close_grace: 1s, prelaunch: 2, executor: ray}",
            "{kind: simulator, engine: 3.50.4}",
        ),
        (
            "{kind: vscode, args: [--a]}",
            "{kind: vscode, args: [--a], slots: 3, launch_timeout: 2m, close_grace: 1s, prelaunch: 1}",
            "{kind: vscode, args: [--b]}",
        ),
        (
            "{kind: command, argv: [host, '{socket}']}",
            "{kind: command, argv: [host, '{socket}'], slots: 2, launch_timeout: 9s, executor: ray}",
            "{kind: command, argv: [other, '{socket}']}",
        ),
        (
            "{kind: socket, sockets: [a.sock]}",
            "{kind: socket, sockets: [b.sock, a.sock], slots: 2, connect_timeout: 3s}",
            None,
        ),
    ],
)
def test_where_and_how_many_hosts_run_is_not_hashed(
    tmp_path: Path, base: str, moved: str, changed: str | None
) -> None:
    first = _keys(tmp_path, base)
    assert _keys(tmp_path, moved) == first
    if changed is not None:
        assert _keys(tmp_path, changed) != first


def test_slots_beyond_the_sockets_listed_are_refused(tmp_path: Path) -> None:
    for name in ("a.sock", "b.sock"):
        (tmp_path / name).touch()
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: h\ntarget: {kind: socket, sockets: [a.sock, b.sock]}\ncases: [{id: a, prompt: x}]\n"
    )
    suite = load_suite(path, env={})
    assert apply_overrides(suite, slots=2).target.slots == 2
    with pytest.raises(SuiteError, match=r"--slots.*3 is more than the 2 sockets listed"):
        apply_overrides(suite, slots=3)
    launched = load_suite(_write(tmp_path, "{kind: command, argv: [x]}"), env={})
    assert apply_overrides(launched, slots=300).target.slots == 300


def _write(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "other.yaml"
    path.write_text(f"name: h\ntarget: {target}\ncases: [{{id: a, prompt: x}}]\n")
    return path
