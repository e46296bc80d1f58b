"""A run's manifest (``manifest.json``): what ran, from which suite and code, on which machine. The
writer redacts it (:meth:`orchestrator.results.store.ResultsWriter.write_manifest`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.results.records import SCHEMA_VERSION
from orchestrator.suite.config import Suite


def _git_info(directory: Path) -> dict[str, Any] | None:
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def build_manifest(
    suite: Suite,
    *,
    run_id: str,
    config_hash: str,
    argv: Iterable[str],
    started_at: datetime,
    attempts_planned: int,
    extension_version: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a run (``suite`` is a :class:`orchestrator.suite.config.Suite`; redaction is applied by
    the writer). ``extra`` is merged in (overrides, options)."""
    import platform
    import socket
    import sys

    from orchestrator import __version__

    source = suite.source
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "suite_name": suite.name,
        "suite_file": str(source) if source else None,
        "config_hash": config_hash,
        "attempts_planned": attempts_planned,
        "suite": suite.redacted(),
        "versions": {
            "orchestrator": __version__,
            "python": platform.python_version(),
            "extension": extension_version,
        },
        "git": _git_info(suite.base_dir),
        "command_line": list(argv),
        "host": {"hostname": socket.gethostname(), "platform": sys.platform, "cpus": os.cpu_count()},
        "started_at": started_at.isoformat(),
        "ended_at": None,
        **(dict(extra) if extra else {}),
    }
