"""Wald's SPRT on the discordant pairs (:mod:`orchestrator.sequential`): its boundaries by hand, the
decisions they imply, and a seeded simulation of its error rates."""

from __future__ import annotations

import math
import random

import pytest

from orchestrator.sequential import Design, DiscordantSPRT, decide


def test_the_boundaries_are_walds_in_log_form_with_alpha_split_over_two_sides() -> None:
    d = Design()  # alpha 0.05 (0.025 a side), beta 0.2, p1 0.75
    assert d.upper == pytest.approx(math.log(0.8 / 0.025))  # log A = log 32 = 3.4657
    assert d.lower == pytest.approx(math.log(0.2 / 0.975))  # log B = -1.5841
    # A regression multiplies the regression side's ratio by 0.75 / 0.5, an improvement by 0.25 / 0.5.
    assert d.llr(3, 1) == pytest.approx(3 * math.log(1.5) + math.log(0.5))


def test_nine_regressions_in_a_row_decide_regressed_and_eight_do_not() -> None:
    # 8 log 1.5 = 3.24 < log 32 = 3.47 <= 9 log 1.5 = 3.65
    assert decide([True] * 8) is None
    decision = decide([True] * 20)
    assert decision is not None and decision.as_dict() == {
        "hypothesis": "regressed",
        "pass_to_fail": 9,
        "fail_to_pass": 0,
        "discordant": 9,
    }
    improved = decide([False] * 9)
    assert improved is not None and (improved.hypothesis, improved.fail_to_pass) == ("improved", 9)


def test_an_improvement_on_the_way_costs_the_regression_side_nearly_two_regressions() -> None:
    # log 0.5 = -0.69 is 1.71 regressions' worth: one improvement among them needs 11 regressions
    # (11 log 1.5 + log 0.5 = 3.77; 10 log 1.5 + log 0.5 = 3.36 < 3.47).
    assert decide([False] + [True] * 10) is None
    decision = decide([False] + [True] * 20)
    assert decision is not None and decision.as_dict() == {
        "hypothesis": "regressed",
        "pass_to_fail": 11,
        "fail_to_pass": 1,
        "discordant": 12,
    }
    # (the improvement side closed for H0 after 3 regressions: 3 log 0.5 = -2.08 <= log B)


def test_both_sides_accepting_no_difference_decide_no_difference() -> None:
    # Alternating flips: after r regressions and r improvements each side is at r (log 1.5 + log 0.5)
    # = -0.288 r, at or below log B = -1.584 first at r = 6 (-1.726; r = 5 gives -1.438).
    seq = [True, False] * 10
    assert decide(seq[:11]) is None
    decision = decide(seq)
    assert decision is not None and decision.as_dict() == {
        "hypothesis": "no_difference",
        "pass_to_fail": 6,
        "fail_to_pass": 6,
        "discordant": 12,
    }


def test_a_decision_stands_whatever_comes_after() -> None:
    test = DiscordantSPRT()
    assert test.check(9, 0) is not None
    decision = test.check(9, 30)
    assert decision is not None and decision.hypothesis == "regressed" and decision.discordant == 9


def test_a_design_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="p1"):
        Design(p1=0.5)


def _simulate(p: float, runs: int, seed: int) -> dict[str, int]:
    """How often each decision is reached over ``runs`` sequences of pairs that regress with prob. p."""
    rng = random.Random(seed)
    seen = {"regressed": 0, "improved": 0, "no_difference": 0, "undecided": 0}
    for _ in range(runs):
        decision = decide(rng.random() < p for _ in range(2000))
        seen[decision.hypothesis if decision is not None else "undecided"] += 1
    return seen


def test_with_no_difference_it_decides_a_difference_at_most_alpha_of_the_time() -> None:
    seen = _simulate(0.5, runs=4000, seed=1)
    # The exact rate (by dynamic programming over the counts) is 0.0447: 0.0223 a side.
    assert seen["undecided"] == 0
    assert (seen["regressed"] + seen["improved"]) / 4000 <= 0.05
    assert seen["regressed"] > 0 and seen["improved"] > 0  # a test that never decides would pass too


def test_against_a_regression_of_the_design_size_its_power_is_at_least_one_minus_beta() -> None:
    seen = _simulate(0.75, runs=2000, seed=2)
    # The exact power is 0.849; its simulated estimate sits well above 0.8 (3 standard errors: 0.024).
    assert seen["regressed"] / 2000 >= 0.8
    assert seen["improved"] <= 2  # the wrong direction: about 1 in 100,000
