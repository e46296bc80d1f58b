"""The workspace diff: what it shows of each kind of change, and its bounds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ipc_bridge.redaction import Redactor
from orchestrator.run import workspace_diff as wd
from orchestrator.run.workspace_diff import TRUNCATED, workspace_diff

SECRET = "sk-test-4f1c9e2b7d"


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """A template and its copy, as an attempt's workspace is made (``copytree``, symlinks as links)."""
    template = tmp_path / "template"
    (template / "pkg").mkdir(parents=True)
    (template / "main.py").write_text("def f():\n    return 1\n")
    (template / "pkg" / "old.txt").write_text("old\n")
    (template / "same.txt").write_text("same\n")
    (template / "blob.bin").write_bytes(b"\0\1\2")
    workspace = tmp_path / "ws"
    shutil.copytree(template, workspace, symlinks=True)
    return template, workspace


def test_an_unchanged_copy_has_no_diff(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    assert workspace_diff(template, workspace) == ""


def test_added_removed_and_modified_files_are_a_unified_diff(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    (workspace / "main.py").write_text("def f():\n    return 2\n")
    (workspace / "pkg" / "old.txt").unlink()
    (workspace / "pkg" / "new.txt").write_text("new\n")
    text = workspace_diff(template, workspace)
    assert "--- a/main.py\n+++ b/main.py\n" in text
    assert "-    return 1\n+    return 2\n" in text
    assert "--- a/pkg/old.txt\n+++ /dev/null\n" in text and "\n-old\n" in text
    assert "--- /dev/null\n+++ b/pkg/new.txt\n" in text and "\n+new\n" in text
    assert "same.txt" not in text


def test_a_file_only_touched_is_not_in_the_diff(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    os.utime(workspace / "same.txt", ns=(1, 1))
    assert workspace_diff(template, workspace) == ""


def test_binary_files_are_named_not_diffed(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    (workspace / "blob.bin").write_bytes(b"\0\1\2\3")
    (workspace / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    text = workspace_diff(template, workspace)
    assert "Binary file changed blob.bin: file, 3 bytes -> file, 4 bytes" in text
    assert "Binary file changed latin1.txt: (none) -> file, 5 bytes" in text


def test_symlinks_are_compared_by_target_never_followed(trees: tuple[Path, Path], tmp_path: Path) -> None:
    template, workspace = trees
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("PRIVATE CONTENT\n")
    (workspace / "link").symlink_to(outside)
    (workspace / "file_link").symlink_to(outside / "private.txt")
    (workspace / "main.py").unlink()
    (workspace / "main.py").symlink_to("/etc/hostname")
    text = workspace_diff(template, workspace)
    assert f"Changed file_link: (none) -> symlink -> {outside / 'private.txt'}" in text
    assert f"Changed link: (none) -> symlink -> {outside}" in text
    assert "Changed main.py: file, 22 bytes -> symlink -> /etc/hostname" in text
    assert "PRIVATE" not in text and "private.txt\n+" not in text


def test_a_secret_written_by_the_agent_is_redacted(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    (workspace / "main.py").write_text(f"def f():\n    return '{SECRET}'\n")
    (workspace / f"{SECRET}.txt").write_text("x\n")
    text = workspace_diff(template, workspace, Redactor([SECRET]).text)
    assert SECRET not in text
    assert "+    return '***'" in text and "+++ b/***.txt" in text


def test_without_a_template_every_file_is_added(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    text = workspace_diff(None, tmp_path)
    assert text == "--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+a\n"


def test_git_directories_are_left_out(trees: tuple[Path, Path]) -> None:
    template, workspace = trees
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert workspace_diff(template, workspace) == ""


def test_the_diff_is_capped_and_says_so(trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    template, workspace = trees
    monkeypatch.setattr(wd, "MAX_DIFF_BYTES", 2000)
    for i in range(50):
        (workspace / f"f{i:02}.txt").write_text("line of text\n" * 10)
    text = workspace_diff(template, workspace)
    assert len(text.encode()) <= 2000 + 100
    assert text.rstrip().endswith(f"{TRUNCATED} (over 2000 bytes)")
    assert "f00.txt" in text and "f49.txt" not in text


def test_large_files_are_named_not_read(trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    template, workspace = trees
    monkeypatch.setattr(wd, "MAX_FILE_BYTES", 100)
    (workspace / "big.txt").write_text("x" * 1000)
    opened: list[Path] = []
    real_read = wd._read
    monkeypatch.setattr(wd, "_read", lambda p: opened.append(p) or real_read(p))
    text = workspace_diff(template, workspace)
    assert "Large file changed big.txt: (none) -> file, 1000 bytes (not diffed)" in text
    assert opened == []


def test_a_tree_with_too_many_files_is_diffed_in_part(
    trees: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    template, workspace = trees
    monkeypatch.setattr(wd, "MAX_ENTRIES", 20)
    (workspace / "deps").mkdir()
    for i in range(40):
        (workspace / "deps" / f"m{i}.js").write_text("x\n")
    text = workspace_diff(template, workspace)
    assert text.rstrip().endswith(f"{TRUNCATED} (more than 20 files in a tree)")
    assert text.count("+++ b/deps/") < 20
