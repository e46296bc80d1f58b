"""StrictModes for a CURVE keys directory, as sshd checks ``~/.ssh``: the bridge refuses to start on
keys that another local user could have written or read.

``authorized/`` decides who may connect, so whoever can write there, or write a key file in it, or point
a symlink in it at a file of theirs, can let anyone in. Checked, before any key is read or created:

* every directory (the keys directory, ``authorized/``, ``clients/``) is a real directory, owned by us
  or root, mode 0700 (no access for group or others: the secrets are in them);
* every file in them is a regular file (no symlink, which could lead out of the directory), owned by us
  or root, not writable by group or others; a secret file (``*.key_secret``) not readable by them either.

Each refusal names the path and the command that fixes it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRET_SUFFIX = ".key_secret"
SUBDIRS = ("authorized", "clients")


class KeyPermissionError(RuntimeError):
    """A keys directory or key file that others could change or read."""


def _owned(path: Path, st: os.stat_result) -> None:
    if st.st_uid not in (os.getuid(), 0):
        raise KeyPermissionError(
            f"{path} is owned by uid {st.st_uid}, not by us ({os.getuid()}) or root: "
            f"chown {os.getuid()} {path}, or use a keys directory of your own"
        )


def check_dir(path: Path) -> None:
    """``path`` (if it exists): a real directory of ours, 0700."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise KeyPermissionError(f"{path} is a symlink: use the directory it points to, or remove it")
    if not stat.S_ISDIR(st.st_mode):
        raise KeyPermissionError(f"{path} is not a directory")
    _owned(path, st)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyPermissionError(
            f"{path} is open to other users (mode {mode:04o}): chmod 700 {path}, and check the keys in it"
        )


def check_file(path: Path) -> None:
    """``path``: a regular file of ours that no one else can write (or read, for a secret)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise KeyPermissionError(f"{path} is a symlink: copy the key it points to in its place")
    if not stat.S_ISREG(st.st_mode):
        raise KeyPermissionError(f"{path} is not a regular file: remove it")
    _owned(path, st)
    mode = stat.S_IMODE(st.st_mode)
    if path.name.endswith(SECRET_SUFFIX) and mode & 0o077:
        raise KeyPermissionError(f"{path} is readable by others (mode {mode:04o}): chmod 600 {path}")
    if mode & 0o022:
        raise KeyPermissionError(f"{path} is writable by others (mode {mode:04o}): chmod go-w {path}")


def check_keys_dir(root: Path) -> None:
    """Refuse ``root`` and what it holds if another user could have changed it (see the module doc)."""
    root = Path(os.path.realpath(root))  # the keys directory itself may be reached through a link
    dirs = [root, *(root / name for name in SUBDIRS)]
    for directory in dirs:
        check_dir(directory)
    for directory in dirs:
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.name in SUBDIRS and directory == root:
                continue
            check_file(entry)
