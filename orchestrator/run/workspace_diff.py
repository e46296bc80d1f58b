"""What the agent changed: a workspace as a unified diff against the template it was copied from.

Taken when the agent's task is over and its host is gone, before the check runs (the check may build or
write files; what it leaves is not the agent's doing). Bounded whatever the workspace holds: at most
:data:`MAX_ENTRIES` files are looked at per tree, a file is diffed only up to :data:`MAX_FILE_BYTES`
(larger ones are named, never read), and the text stops at :data:`MAX_DIFF_BYTES` with "diff truncated".
Symlinks are compared by their target, never followed. A file whose size and mtime are what the template's
copy kept (``copytree`` preserves mtimes) is unchanged without being read. ``.git`` directories are left
out: their objects are noise, and the files they track are diffed anyway.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_DIFF_BYTES = 1 << 20
"""The diff's size: beyond it, the text ends with :data:`TRUNCATED`."""
MAX_FILE_BYTES = 256 << 10
"""Files larger than this (either side) are listed as changed, not read (difflib is slow on big files)."""
MAX_ENTRIES = 20_000
"""Entries walked per tree: a workspace with more (a dependency install) is diffed in part."""
SKIPPED_DIRS = frozenset({".git"})
TRUNCATED = "diff truncated"


@dataclass(frozen=True)
class _Entry:
    kind: str  # "file", "link" or "other"
    size: int
    mtime_ns: int
    link: str | None = None


def _walk(root: Path | None, budget: list[int]) -> tuple[dict[str, _Entry], bool]:
    """Every entry under ``root`` by its relative POSIX path, without following a symlink; False as the
    second value when ``budget[0]`` entries ran out first."""
    out: dict[str, _Entry] = {}
    if root is None or not root.is_dir():
        return out, True
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for item in items:
            if budget[0] <= 0:
                return out, False
            budget[0] -= 1
            rel = f"{prefix}{item.name}"
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = _Entry("link", 0, 0, os.readlink(item.path))
            elif stat.S_ISDIR(st.st_mode):
                if item.name not in SKIPPED_DIRS:
                    stack.append((f"{rel}/", Path(item.path)))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = _Entry("file", st.st_size, st.st_mtime_ns)
            else:
                out[rel] = _Entry("other", 0, 0)
    return out, True


def _read(path: Path) -> bytes | None:
    """A regular file's bytes (at most :data:`MAX_FILE_BYTES` + 1); None if unreadable. O_NOFOLLOW: a
    file swapped for a symlink since the walk is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_FILE_BYTES + 1)


def _text(data: bytes | None) -> list[str] | None:
    """Lines of a text file; None for binary (a NUL byte, or not UTF-8)."""
    if data is None or b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None


def _describe(entry: _Entry | None) -> str:
    if entry is None:
        return "(none)"
    if entry.kind == "link":
        return f"symlink -> {entry.link}"
    if entry.kind == "file":
        return f"file, {entry.size} bytes"
    return "special file"


def _file_diff(rel: str, old: _Entry | None, new: _Entry | None, a: Path | None, b: Path) -> Iterator[str]:
    """The diff of one path that is not the same on both sides."""
    a_name = f"a/{rel}" if old is not None else "/dev/null"
    b_name = f"b/{rel}" if new is not None else "/dev/null"
    if (old is not None and old.kind != "file") or (new is not None and new.kind != "file"):
        yield f"Changed {rel}: {_describe(old)} -> {_describe(new)}"
        return
    sizes = [e.size for e in (old, new) if e is not None]
    if max(sizes) > MAX_FILE_BYTES:
        yield f"Large file changed {rel}: {_describe(old)} -> {_describe(new)} (not diffed)"
        return
    before = _read(a / rel) if old is not None and a is not None else b""
    after = _read(b / rel) if new is not None else b""
    if before == after:
        return  # only its mtime changed
    old_lines, new_lines = _text(before), _text(after)
    if old_lines is None or new_lines is None:
        yield f"Binary file changed {rel}: {_describe(old)} -> {_describe(new)}"
        return
    yield from difflib.unified_diff(old_lines, new_lines, a_name, b_name, lineterm="")


def workspace_diff(template: Path | None, workspace: Path, redact: Callable[[str], str] = lambda s: s) -> str:
    """``workspace`` against ``template`` (None: against nothing, every file added) as a unified diff,
    redacted by ``redact`` line by line, bounded as the module says; "" when nothing changed."""
    budget = [MAX_ENTRIES]
    old, old_whole = _walk(template, budget)
    budget = [MAX_ENTRIES]
    new, new_whole = _walk(workspace, budget)
    lines: list[str] = []
    size = 0
    for rel in sorted(old.keys() | new.keys()):
        o, n = old.get(rel), new.get(rel)
        if o is not None and n is not None and o == n and o.kind == "file":
            continue  # size and mtime as copied: not written since
        if o == n and (o is None or o.kind != "file"):
            continue
        for line in _file_diff(rel, o, n, template, workspace):
            line = redact(line)
            size += len(line.encode()) + 1
            if size > MAX_DIFF_BYTES:
                lines.append(f"... {TRUNCATED} (over {MAX_DIFF_BYTES} bytes)")
                return "\n".join(lines) + "\n"
            lines.append(line)
    if not (old_whole and new_whole):
        lines.append(f"... {TRUNCATED} (more than {MAX_ENTRIES} files in a tree)")
    return "\n".join(lines) + "\n" if lines else ""
