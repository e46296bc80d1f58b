"""The ``soak`` marker: the full soak benchmark as a test (minutes of CPU), deselected unless asked for
with ``-m soak``."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: the full soak (benchmarks/soak.py, minutes); run with -m soak")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("soak") is not None]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]
