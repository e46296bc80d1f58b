"""``orchestrate run --baseline RUN --stop-when-decided``: Wald's sequential probability ratio test (SPRT)
on the direction of the discordant pairs, checked after every pair, so that a run can stop starting
attempts as soon as the paired comparison is decided and still keep its error rates.

The model. A discordant pair (case, model, repeat) passed on one side and failed on the other; it is a
*regression* (pass->fail) with probability p. Concordant pairs say nothing about p and are not counted
(as in McNemar's test); neither are pairs with an infrastructure error on either side (not graded). Under
H0, "no difference", p = 1/2. "Regressed" is H1+: p = ``p1`` (0.75 by default: three flips of four go
the bad way); "improved" is H1-: p = 1 - ``p1``. The two-sided test is two one-sided SPRTs of H0, each at
``alpha / 2``, each stopping at its first boundary:

* the regression side's log likelihood ratio after r regressions and i improvements is
  ``r log(2 p1) + i log(2 (1 - p1))``, the improvement side's the same with r and i swapped;
* a side crossing ``log A = log((1 - beta) / (alpha / 2))`` rejects H0 ("regressed" or "improved": the
  decision, at once); crossing ``log B = log(beta / (1 - alpha / 2))`` closes that side for H0;
* once both sides are closed for H0 the decision is "no difference" (power 1 - beta against p1).

So the probability of deciding "regressed" or "improved" when there is no difference is at most about
``alpha`` (Wald's bounds are approximate; each side's is at most ``(alpha / 2) / (1 - beta)``, and the
discrete overshoot keeps it below alpha: the tests simulate it). With the defaults (alpha 0.05, beta
0.2, p1 0.75) nine regressions in a row, and no improvement, decide "regressed".

Assumptions, and what breaks them:

* Discordant pairs are independent. Repeats of one case are not (a case that regressed tends to regress
  in every repeat), so with many repeats a few cases weigh like many pairs and the test decides sooner
  than its error rate promises; one repeat a case is the clean setting.
* The order in which attempts finish does not depend on their outcomes. When it does (failures that end
  by a timeout finish last, a crash finishes first) the early pairs over-represent one direction and
  the test may decide on that alone: its error rate is no longer kept. McNemar's p of a finished run
  (``orchestrate compare``) does not depend on the order and stays valid.
* The run is not looked at again and again under different tests: this test is the only stopping rule.

Pure: plain integers in, a :class:`Decision` out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Hypothesis = Literal["regressed", "improved", "no_difference"]

ALPHA = 0.05
"""Probability of deciding "regressed" or "improved" when there is no difference (two-sided)."""
BETA = 0.2
"""Probability of missing a difference of the size ``P1`` (power 0.8, the usual design value)."""
P1 = 0.75
"""The effect "regressed" is tested against: the share of discordant pairs that are regressions."""


@dataclass(frozen=True)
class Decision:
    """Which hypothesis the test accepted, and on how many discordant pairs."""

    hypothesis: Hypothesis
    pass_to_fail: int
    fail_to_pass: int

    @property
    def discordant(self) -> int:
        return self.pass_to_fail + self.fail_to_pass

    def as_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "pass_to_fail": self.pass_to_fail,
            "fail_to_pass": self.fail_to_pass,
            "discordant": self.discordant,
        }


@dataclass(frozen=True)
class Design:
    """The test's parameters and Wald's boundaries (in log form) for each one-sided test."""

    alpha: float = ALPHA
    beta: float = BETA
    p1: float = P1

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 < self.beta < 1 and 0.5 < self.p1 < 1):
            raise ValueError(f"need 0 < alpha, beta < 1 and 1/2 < p1 < 1, got {self}")

    @property
    def upper(self) -> float:
        """log A = log((1 - beta) / (alpha / 2)): a side's ratio at or above it rejects H0."""
        return math.log((1 - self.beta) / (self.alpha / 2))

    @property
    def lower(self) -> float:
        """log B = log(beta / (1 - alpha / 2)): a side's ratio at or below it accepts H0."""
        return math.log(self.beta / (1 - self.alpha / 2))

    def llr(self, toward: int, away: int) -> float:
        """A side's log likelihood ratio (H1 over H0) after ``toward`` pairs in its direction and
        ``away`` in the other."""
        return toward * math.log(2 * self.p1) + away * math.log(2 * (1 - self.p1))


class DiscordantSPRT:
    """The two one-sided tests' state, checked with the running counts after every discordant pair."""

    def __init__(self, design: Design | None = None) -> None:
        self.design = design or Design()
        self._closed: dict[Hypothesis, bool] = {"regressed": False, "improved": False}
        """Per side: True once its ratio reached log B (that side accepted H0; it looks no further)."""
        self.decision: Decision | None = None
        """The first decision reached; it stands whatever comes after."""

    def check(self, pass_to_fail: int, fail_to_pass: int) -> Decision | None:
        """The decision once reached (the counts are those after the latest discordant pair)."""
        if self.decision is not None:
            return self.decision
        sides: tuple[tuple[Hypothesis, int, int], ...] = (
            ("regressed", pass_to_fail, fail_to_pass),
            ("improved", fail_to_pass, pass_to_fail),
        )
        for side, toward, away in sides:
            if self._closed[side]:
                continue
            llr = self.design.llr(toward, away)
            if llr >= self.design.upper:
                self.decision = Decision(side, pass_to_fail, fail_to_pass)
                return self.decision
            self._closed[side] = llr <= self.design.lower
        if all(self._closed.values()):
            self.decision = Decision("no_difference", pass_to_fail, fail_to_pass)
        return self.decision


def decide(regressions: Iterable[bool], design: Design | None = None) -> Decision | None:
    """The test run over a sequence of discordant pairs (True: a regression), stopping at its decision;
    None when the sequence ends undecided."""
    test = DiscordantSPRT(design)
    counts = [0, 0]
    for regression in regressions:
        counts[0 if regression else 1] += 1
        if (decision := test.check(*counts)) is not None:
            return decision
    return None
