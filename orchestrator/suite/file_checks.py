"""Files a suite names, read and walked without ever blocking or running away.

A suite names files the orchestrator reads (the suite itself, ``prompt_file``) and directory trees it
hashes and copies for every attempt (``workspace``). Any of them may be a FIFO (opening it blocks
until a writer comes), a device (``/dev/zero`` never ends), a pseudo filesystem (``/proc``,
``/sys``: files that report size 0 and block or change when read) or simply huge. Everything here
opens with ``O_NONBLOCK`` and checks what it opened with ``fstat`` before reading, and every walk
uses ``lstat`` only, never follows a symlink, and stops at a stated cap.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MIB = 1024 * 1024

MAX_WORKSPACE_ENTRIES = 20_000
"""Files, directories and symlinks in one workspace template (each attempt copies all of them)."""
MAX_WORKSPACE_BYTES = 1024 * MIB
"""Total size of the regular files of one workspace template."""

# filesystems whose files are the kernel's, not data: reading them blocks, never ends or changes
_PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)
# where those live when the mount table cannot be read (not Linux)
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class FileCheckError(ValueError):
    """A named file or tree that cannot be used; the message says what it is and what to give."""


def kind_of(mode: int) -> str:
    """What a file is, in words (for messages)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def size_text(n: int) -> str:
    if n >= 1024 * MIB:
        return f"{n / (1024 * MIB):.1f} GiB"
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n} bytes"


def read_regular(path: Path, limit: int, what: str, advice: str) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    Opened without blocking (a FIFO would wait for a writer) and checked with ``fstat`` before
    reading, so a directory, FIFO, socket, device or pseudo file is refused at once. ``what`` names
    the file in messages; ``advice`` says what to do when it is too big."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):  # open() of a socket fails with a baffling ENXIO
            raise FileCheckError(f"{what} is a socket: give a regular file")
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise FileCheckError(f"{what} does not exist: check the path") from None
    except OSError as exc:
        raise FileCheckError(f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileCheckError(f"{what} is {kind_of(st.st_mode)}: give a regular file")
        fstype = _pseudo_filesystem(path.resolve(), st.st_dev)
        if fstype is not None:
            raise FileCheckError(
                f"{what} is on the kernel's {fstype} filesystem, not data: give a regular file"
            )
        too_big = f"{what} is larger than {size_text(limit)}, the most allowed: {advice}"
        if st.st_size > limit:
            raise FileCheckError(too_big.replace("larger than", f"{size_text(st.st_size)}, larger than"))
        chunks: list[bytes] = []
        total = 0
        while total <= limit:  # the size may have grown since fstat
            chunk = os.read(fd, min(limit + 1 - total, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileCheckError(too_big)
        return b"".join(chunks)
    except OSError as exc:
        raise FileCheckError(f"cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- trees


@lru_cache(maxsize=1)
def _filesystem_types() -> dict[int, str] | None:
    """Device number -> filesystem type of every mount (None when there is no mount table)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    types: dict[int, str] = {}
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 3:
            continue
        major, _, minor = fields[2].partition(":")
        after = line.split(" - ", 1)[1].split()
        if major.isdigit() and minor.isdigit() and after:
            types[os.makedev(int(major), int(minor))] = after[0]
    return types


def _pseudo_filesystem(path: Path, device: int) -> str | None:
    """The type of the pseudo filesystem ``path`` is on (device ``device``), or None."""
    types = _filesystem_types()
    if types is None:
        text = str(path)
        return next((root for root in _PSEUDO_ROOTS if text == root or text.startswith(root + "/")), None)
    fstype = types.get(device)
    return fstype if fstype in _PSEUDO_FILESYSTEMS else None


@dataclass(frozen=True)
class Entry:
    """One entry of a tree: its path relative to the root (``/``-separated), where it is, and its
    ``lstat``."""

    rel: str
    path: str
    mode: int
    size: int
    device: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


def walk_tree(root: Path, skip_dirs: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry under ``root`` (not ``root`` itself), depth first: in each directory the
    non-directories sorted by name, then each subdirectory's tree in name order. Never follows a
    symlink, never recurses (no depth limit applies), skips directories named in ``skip_dirs``."""
    pending: list[tuple[str, str]] = [("", os.fspath(root))]
    while pending:
        rel_dir, directory = pending.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs: list[tuple[str, str, int]] = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            rel = f"{rel_dir}{entry.name}"
            if stat.S_ISDIR(st.st_mode):
                if entry.name not in skip_dirs:
                    subdirs.append((rel + "/", entry.path, st.st_dev))
                continue
            yield Entry(rel, entry.path, st.st_mode, st.st_size, st.st_dev)
        for rel_sub, path, device in subdirs:
            yield Entry(rel_sub.rstrip("/"), path, stat.S_IFDIR, 0, device)
        pending.extend((rel_sub, path) for rel_sub, path, _ in reversed(subdirs))


def check_template(root: Path) -> None:
    """Refuse a workspace template that is not a plain tree of files: the whole filesystem, a pseudo
    filesystem, a tree holding a FIFO, socket or device, a symlink leading out of the tree, or more
    than :data:`MAX_WORKSPACE_ENTRIES` entries or :data:`MAX_WORKSPACE_BYTES`. Reads no file."""
    allowed = (
        "a workspace is a directory of regular files, subdirectories and symlinks that stay inside it, "
        f"at most {MAX_WORKSPACE_ENTRIES:,} entries and {size_text(MAX_WORKSPACE_BYTES)}"
    )
    try:
        real = root.resolve(strict=True)
        top = os.stat(real)
    except (OSError, RuntimeError) as exc:
        raise FileCheckError(f"workspace {root} cannot be used: {exc}; {allowed}") from None
    if real == Path(real.anchor):
        raise FileCheckError(f"workspace {root} is the whole filesystem ({real}): {allowed}")
    fstype = _pseudo_filesystem(real, top.st_dev)
    if fstype is not None:
        raise FileCheckError(f"workspace {root} is on the kernel's {fstype} filesystem, not data: {allowed}")
    count = total = 0
    devices = {top.st_dev}
    try:
        for entry in walk_tree(real):
            count += 1
            if count > MAX_WORKSPACE_ENTRIES:
                raise FileCheckError(
                    f"workspace {root} holds more than {MAX_WORKSPACE_ENTRIES:,} entries: {allowed}"
                )
            if entry.is_dir:
                _check_mount(root, entry, devices, allowed)
            elif entry.is_link:
                _check_link(root, real, entry, allowed)
            elif stat.S_ISREG(entry.mode):
                if not os.access(entry.path, os.R_OK):
                    raise FileCheckError(
                        f"workspace {root} holds {entry.rel!r}, which cannot be read: {allowed}"
                    )
                total += entry.size
                if total > MAX_WORKSPACE_BYTES:
                    raise FileCheckError(
                        f"workspace {root} holds more than {size_text(MAX_WORKSPACE_BYTES)}: {allowed}"
                    )
            else:
                raise FileCheckError(
                    f"workspace {root} holds {entry.rel!r}, {kind_of(entry.mode)}, which cannot be copied "
                    f"or hashed: remove it; {allowed}"
                )
    except OSError as exc:
        raise FileCheckError(
            f"cannot read workspace {root}: {exc.strerror or exc} ({exc.filename})"
        ) from None


def _check_mount(root: Path, entry: Entry, devices: set[int], allowed: str) -> None:
    if entry.device in devices:
        return
    devices.add(entry.device)
    fstype = _pseudo_filesystem(Path(entry.path), entry.device)
    if fstype is not None:
        raise FileCheckError(
            f"workspace {root} holds {entry.rel!r}, the kernel's {fstype} filesystem: remove it; {allowed}"
        )


def _check_link(root: Path, real: Path, entry: Entry, allowed: str) -> None:
    target = os.readlink(entry.path)
    # lexically, as the copy keeps the link as it is: it must lead to a place inside the copy
    where = os.path.normpath(os.path.join(os.path.dirname(os.path.join(real, entry.rel)), target))
    if os.path.isabs(target) or not (where == str(real) or where.startswith(str(real) + os.sep)):
        raise FileCheckError(
            f"workspace {root} holds the symlink {entry.rel!r} -> {target!r}, which leads out of the "
            f"workspace (each attempt's copy would reach the original): copy what it points to into "
            f"the workspace, or make it a relative link inside it; {allowed}"
        )


def open_regular_nofollow(path: str) -> int:
    """A file descriptor of the regular file ``path``, opened without following a symlink or blocking;
    :class:`FileCheckError` when it is anything else."""
    try:
        fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise FileCheckError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileCheckError(f"{path} is {kind_of(mode)}, not a regular file: remove it")
    return fd
