"""Fixtures of the interop tests: a process registry that never leaves a node process behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.interop.peers import Processes


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[Processes]:
    registry = Processes(tmp_path)
    try:
        yield registry
    finally:
        await registry.close()
