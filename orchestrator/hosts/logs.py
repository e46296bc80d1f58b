"""Hosts' logs: written in the run's private runtime directory while a host runs, then kept, redacted,
in the results (``hosts/``). Light to import: the main process keeps the logs of hosts whose worker died
before it could."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TAIL_BYTES = 2048
"""How much of a host's output its record carries."""


def keep_log(raw: Path, kept: Path, redact: Callable[[str], str]) -> bool:
    """Move a host's log from the runtime directory to ``kept``, redacted line by line (a log may be
    large); False, and nothing kept, when the host wrote nothing."""
    try:
        if raw.stat().st_size == 0:
            raw.unlink()
            return False
    except FileNotFoundError:
        return False
    kept.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(raw, encoding="utf-8", errors="replace", newline="") as src,
        open(kept, "a", encoding="utf-8", newline="") as dest,
    ):
        for line in src:
            dest.write(redact(line))
    raw.unlink()
    return True


def output_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a (kept, so redacted) host log, as text."""
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - limit))
        return fh.read().decode("utf-8", errors="replace")
