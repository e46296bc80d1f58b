"""Where a run is heading, from the attempts it finished: the projected total cost and the time to
completion that the progress bar shows beside the budget. A pure function of running sums, so that the
bar keeps no list of records and the figures can be checked by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Projection:
    cost_usd: float
    """Spent so far plus the mean cost per finished attempt times the attempts left."""
    remaining_s: float
    """The mean duration per finished attempt times the waves of ``slots`` attempts still to run."""

    def over(self, budget_usd: float | None) -> bool:
        """Whether the projected cost exceeds ``budget_usd`` (never without a budget)."""
        return budget_usd is not None and self.cost_usd > budget_usd


def project(*, spent_usd: float, busy_s: float, finished: int, left: int, slots: int) -> Projection | None:
    """The projection after ``finished`` attempts (final records) that cost ``spent_usd`` and kept their
    slots busy ``busy_s`` seconds in all, with ``left`` attempts to go on ``slots`` slots at once.

    Assumptions: the attempts left cost and last what the finished ones did on average (retries and
    cancelled tries included in the sums, so their overhead is projected too), and they run in waves of
    ``slots`` (``ceil(left / slots)`` mean durations; attempts running now count as not yet started,
    which errs long near the end). None before the first attempt finished: nothing to project from."""
    if finished < 1 or slots < 1 or left < 0:
        return None
    mean_cost = spent_usd / finished
    mean_s = busy_s / finished
    return Projection(cost_usd=spent_usd + mean_cost * left, remaining_s=mean_s * math.ceil(left / slots))
