"""orchestrator.stats against hand-computed small cases and against statsmodels (an implementation
independent of the scipy calls it makes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from orchestrator.stats import (
    bootstrap_mean,
    bootstrap_ratio,
    bootstrap_ratios,
    mcnemar_exact,
    paired_test,
    pass_at_k_unbiased,
    wilson_interval,
)

Z95 = 1.959963984540054


def wilson_by_hand(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_for_6_of_18() -> None:
    low, high = wilson_interval(6, 18)
    assert (low, high) == pytest.approx(wilson_by_hand(6, 18), abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.1628, 0.5625)  # the published 95% interval of 6/18
    assert (low, high) == pytest.approx(proportion_confint(6, 18, alpha=0.05, method="wilson"), abs=1e-12)


@pytest.mark.parametrize(("passed", "n"), [(0, 1), (1, 1), (0, 10), (10, 10), (3, 7), (50, 100), (1, 1000)])
def test_wilson_agrees_with_statsmodels_and_stays_in_0_1(passed: int, n: int) -> None:
    low, high = wilson_interval(passed, n)
    assert (low, high) == pytest.approx(proportion_confint(passed, n, method="wilson"), abs=1e-12)
    assert (low, high) == pytest.approx(wilson_by_hand(passed, n), abs=1e-12)
    scipy_ci = binomtest(passed, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-12)
    assert 0 <= low <= passed / n <= high <= 1
    wider = wilson_interval(passed, n, 0.99)
    assert wider[1] - wider[0] > high - low, "a higher confidence widens the interval"


def test_wilson_at_other_confidences_agrees_with_scipy() -> None:
    for confidence in (0.5, 0.9, 0.99, 0.999):
        ci = binomtest(7, 23).proportion_ci(confidence_level=confidence, method="wilson")
        assert wilson_interval(7, 23, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_of_nothing_is_nan_and_of_nonsense_an_error() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= passed <= n"):
        wilson_interval(5, 4)


def test_mcnemar_exact_for_b1_c6() -> None:
    # Under H0, b ~ Binomial(7, 1/2): p = 2 * P(b <= 1) = 2 * (1 + 7) / 2**7.
    assert mcnemar_exact(1, 6) == pytest.approx(0.125, abs=1e-15)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125, abs=1e-15)
    assert mcnemar([[10, 1], [6, 3]], exact=True).pvalue == pytest.approx(0.125)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 1), (0, 5), (0, 9), (3, 3), (2, 11), (20, 35), (4, 0)])
def test_mcnemar_exact_agrees_with_statsmodels(b: int, c: int) -> None:
    expected = mcnemar([[5, b], [c, 5]], exact=True).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, expected), abs=1e-12)
    n = b + c
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n) if n else 1.0
    assert mcnemar_exact(b, c) == pytest.approx(by_hand, abs=1e-12)


def test_pass_at_k_by_hand() -> None:
    assert pass_at_k_unbiased(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k_unbiased(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k_unbiased(3, 0, 2) == 0.0
    assert pass_at_k_unbiased(3, 2, 2) == 1.0  # only one failure: any two attempts hold a pass
    assert pass_at_k_unbiased(1, 1, 1) == 1.0


def test_pass_at_k_is_the_combinatorial_formula() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k_unbiased(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
            assert pass_at_k_unbiased(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 1, 0), (3, 4, 1), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k_unbiased(n, c, k)


def test_bootstrap_of_two_clusters_spans_their_extremes() -> None:
    # Clusters (sum 1 over 1) and (sum 0 over 3): resamples give 1, 0 or 1/4 (each way: 1/4, 1/4, 1/2).
    low, high = bootstrap_ratio([1.0, 0.0], [1.0, 3.0])
    assert (low, high) == (0.0, 1.0)
    assert bootstrap_ratio([1.0, 0.0], [1.0, 3.0], confidence=0.4) == (0.25, 0.25)


def test_bootstrap_is_seeded_and_needs_two_clusters() -> None:
    values = np.random.default_rng(3).random(40)
    first = bootstrap_mean(values, seed=11)
    assert bootstrap_mean(values, seed=11) == first
    assert bootstrap_mean(values, seed=12) != first
    assert first[0] < values.mean() < first[1]
    assert all(math.isnan(v) for v in bootstrap_mean([0.5]))
    assert bootstrap_mean([0.5, 0.5, 0.5]) == (0.5, 0.5), "constant data: a point, no warning"


def test_several_statistics_share_one_set_of_resamples() -> None:
    rng = np.random.default_rng(8)
    num, den = rng.random((3, 30)), rng.integers(1, 4, 30).astype(float)
    together = bootstrap_ratios(num, den, seed=2)
    alone = [bootstrap_ratio(row, den, seed=2) for row in num]
    assert [pytest.approx(ci, rel=1e-12) for ci in together] == alone
    assert len(set(together)) == 3


def test_paired_test_resamples_cases_not_attempts() -> None:
    """Ten repeats of a case that all end alike carry the information of one: the interval is the one of
    a single repeat a case, where resampling attempts would make it ~sqrt(10) times narrower."""
    rng = np.random.default_rng(5)
    a, b = rng.random(12) < 0.5, rng.random(12) < 0.7
    cases = [f"c{i}" for i in range(12)]
    zeros = [0.0] * 12
    once = paired_test(a, b, zeros, zeros, zeros, zeros, cases)
    ten = paired_test(
        np.repeat(a, 10),
        np.repeat(b, 10),
        zeros * 10,
        zeros * 10,
        zeros * 10,
        zeros * 10,
        np.repeat(cases, 10),
    )
    assert (ten.pairs, ten.cases, once.cases) == (120, 12, 12)
    assert ten.rate_delta == pytest.approx(once.rate_delta)
    assert ten.rate_delta_ci == pytest.approx(once.rate_delta_ci)


def test_paired_test_counts_flips_and_decides_at_5_percent() -> None:
    a = [True] * 10 + [False] * 5
    b = [False] * 9 + [True] * 6  # 9 pass->fail, 5 fail->pass, 1 pass->pass
    cases = [f"c{i}" for i in range(15)]
    cost_a, cost_b = [0.1] * 15, [0.3] * 15
    duration_a, duration_b = [10.0] * 15, [8.0 + i % 2 for i in range(15)]
    test = paired_test(a, b, cost_a, cost_b, duration_a, duration_b, cases)
    assert (test.pass_to_fail, test.fail_to_pass, test.pairs) == (9, 5, 15)
    assert test.p_value == pytest.approx(mcnemar([[1, 9], [5, 0]], exact=True).pvalue)
    assert not test.significant and test.sentence().endswith("not significant at 5%")
    assert test.rate_delta == pytest.approx(6 / 15 - 10 / 15)
    assert test.cost_delta == pytest.approx(0.2) and test.cost_delta_ci == pytest.approx((0.2, 0.2))
    assert test.duration_delta == pytest.approx(-2 + 7 / 15)
    low, high = test.duration_delta_ci
    assert -2 <= low < test.duration_delta < high <= -1

    worse = paired_test([True] * 9, [False] * 9, *([[0.0] * 9] * 4), [f"c{i}" for i in range(9)])
    assert worse.p_value == pytest.approx(2 / 2**9) and worse.significant
    assert worse.sentence().endswith(": significant at 5%")
    assert worse.rate_delta_ci == (-1.0, -1.0)
    assert worse.as_dict()["significant"] is True


def test_paired_test_of_no_pairs() -> None:
    test = paired_test([], [], [], [], [], [], [])
    assert test.pairs == 0 and test.p_value == 1.0 and not test.significant
    assert test.as_dict()["rate_delta_ci"] == [None, None] and test.as_dict()["rate_a"] is None
    assert "nothing to test" in test.sentence()
