"""The real engine's own lags, which no script sets: how long a host takes to listen, and a task to be
created and to start (issue #14, measured on the Roo CLI 3.52.1 and 3.50.4 driven by ``orchestrate run``).

Each lag is a seeded draw (the host's seed), scaled by ``time_scale`` like every scripted duration, so a
fast run keeps the order of events and a run is reproducible. ``engine_lags: false`` leaves them out, for
measurements of the orchestrator's own overhead.
"""

from __future__ import annotations

import random

STARTUP = (1.9, 3.0)
"""Seconds from the host's start to its socket listening. The real CLI takes 1.9-3 s alone on 2 cores, up
to 10 s with 3 starting at once (a target's ``launch_timeout`` must cover that)."""
FIRST_CREATE = (0.019, 0.12)
"""StartNewTask -> taskCreated, a host's first task: 19-112 ms in the recordings (up to 560 ms with 3
hosts starting at once)."""
NEXT_CREATE = (0.002, 0.01)
"""StartNewTask -> taskCreated for a later task of the same host: within 10 ms (protocol notes 7.8)."""
CREATE_TO_START = (0.025, 0.17)
"""taskCreated -> taskStarted (the prompt is said a third of the way in): 25-170 ms."""


class EngineLags:
    """The draws of one host, in the order it needs them."""

    def __init__(self, seed: int, scale: float) -> None:
        self._rng = random.Random(f"engine-lags:{seed}")
        self.scale = scale

    def _draw(self, bounds: tuple[float, float]) -> float:
        return self._rng.uniform(*bounds) * self.scale

    def startup(self) -> float:
        return self._draw(STARTUP)

    def create(self, *, first: bool) -> float:
        return self._draw(FIRST_CREATE if first else NEXT_CREATE)

    def start(self) -> float:
        return self._draw(CREATE_TO_START)
