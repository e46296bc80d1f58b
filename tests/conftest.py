"""Shared fixtures: private short socket directories, the recordings, the npm interop peers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "tests" / "fixtures" / "recordings"  # copied from shared/protocol/recordings
INTEROP = ROOT / "interop"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A private (0700) directory with a short path, so socket paths stay under sun_path's 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load_recording(name: str) -> list[dict[str, Any]]:
    """One recording as a list of ``{t, dir, msg}`` rows."""
    with open(RECORDINGS / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def recording_names() -> list[str]:
    return sorted(p.name for p in RECORDINGS.glob("*.jsonl"))


def node_peers_available() -> bool:
    return shutil.which("node") is not None and (INTEROP / "node_modules" / "node-ipc").is_dir()


requires_node = pytest.mark.skipif(
    not node_peers_available(), reason="node and interop/node_modules (npm ci in interop/) are needed"
)
