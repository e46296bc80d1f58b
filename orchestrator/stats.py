"""The statistics behind ``orchestrate report``/``compare`` and :mod:`orchestrator.analysis`, on plain
numbers: Wilson intervals, McNemar's exact test, the unbiased pass@k estimator and a seeded bootstrap
over cases. No pandas here: the command line uses these without the notebook extra.

The exact test and the resampling come from scipy (``scipy.stats.binomtest``, ``scipy.stats.bootstrap``),
the normal quantile from the standard library, rather than being written by hand; the tests hold the
figures to scipy's, to statsmodels' and to hand-computed cases.

Why a bootstrap over *cases*: attempts of one case (its repeats, and both sides of a pair) are not
independent of each other (a hard case is hard for every repeat), so resampling attempts would give
intervals that are too narrow. Resampling whole cases, with all their attempts, treats the suite as the
sample from a population of tasks. With one repeat a case it is the ordinary paired bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy and scipy are imported where they are used, not here: results.store imports the report, hence
# this module, in every `orchestrate run`, and scipy.stats alone takes longer to import than a run's
# start-up should (~1 s; seconds on a busy machine). Only report, compare and analysis pay for it.

ALPHA = 0.05
"""The significance level of the tests, and 1 - the intervals' confidence."""
RESAMPLES = 2000
"""Bootstrap resamples: enough for percentile 95% intervals (Efron and Tibshirani ask for 1,000 or more),
and a fifth of scipy's default 9,999, whose cost (resamples x cases, three statistics, per model) made
``orchestrate compare`` of 2,000 cases take seconds."""
SEED = 0
"""The default seed of every bootstrap: the same data give the same interval, run after run."""
_BATCH_CELLS = 2_000_000
"""Resampled indices held at once (resamples x cases): bounds the bootstrap's memory on huge suites."""

Interval = tuple[float, float]
NAN_INTERVAL: Interval = (math.nan, math.nan)


def wilson_interval(passed: int, n: int, confidence: float = 1 - ALPHA) -> Interval:
    """The Wilson score interval of ``passed`` successes in ``n`` trials (no continuity correction).
    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0 and 1, where
    pass rates of small suites often are. ``(nan, nan)`` when ``n`` is 0.

    Its closed form with the normal quantile of the standard library: ``orchestrate report`` shows it
    on every row, and importing scipy.stats would cost it most of its 2 s budget on 100,000 attempts.
    The tests hold it to scipy's ``binomtest(...).proportion_ci(method="wilson")`` and statsmodels'."""
    if n == 0:
        return NAN_INTERVAL
    if not 0 <= passed <= n:
        raise ValueError(f"a Wilson interval needs 0 <= passed <= n (passed={passed}, n={n})")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = passed / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At p = 0 (1) the lower (upper) bound is 0 (1) exactly; the formula gets there only up to rounding.
    low = 0.0 if passed == 0 else centre - half
    high = 1.0 if passed == n else centre + half
    return low, high


def mcnemar_exact(pass_to_fail: int, fail_to_pass: int) -> float:
    """Two-sided p-value of McNemar's exact test: under "no difference" each discordant pair is as
    likely to go either way, so ``pass_to_fail`` is Binomial(discordant, 1/2). 1.0 without discordant
    pairs (no evidence either way)."""
    from scipy import stats as _scipy

    discordant = pass_to_fail + fail_to_pass
    if discordant == 0:
        return 1.0
    return float(_scipy.binomtest(pass_to_fail, discordant, 0.5).pvalue)


def pass_at_k_unbiased(n: int, c: int, k: int) -> float:
    """The probability that at least one of ``k`` attempts drawn without replacement from ``n``, of
    which ``c`` passed, passes: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021, "Evaluating Large Language
    Models Trained on Code"), computed as their numerically stable product. Needs ``1 <= k <= n``."""
    import numpy as np

    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bootstrap_ratios(
    numerators: npt.ArrayLike,
    denominators: npt.ArrayLike,
    *,
    confidence: float = 1 - ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[Interval]:
    """Percentile bootstrap intervals of ``sum(numerators[j]) / sum(denominators)``, one for each row
    ``j`` of ``numerators`` (shape: statistics x clusters), with the clusters (one column each, e.g. a
    case's summed pass differences, and its number of pairs as the denominator) resampled with
    replacement; every row from the same resamples, drawn once. With all denominators 1 a row's is the
    interval of a mean. ``(nan, nan)`` with fewer than two clusters (nothing to resample). Percentile
    rather than BCa: BCa's jackknife costs memory quadratic in the clusters, and is undefined when every
    value is the same."""
    import numpy as np
    from scipy import stats as _scipy

    num = np.atleast_2d(np.asarray(numerators, dtype=float))
    den = np.asarray(denominators, dtype=float)
    if num.ndim != 2 or den.ndim != 1 or num.shape[1] != len(den):
        raise ValueError("numerators (statistics x clusters) and denominators (clusters) do not match")
    clusters = len(den)
    if clusters < 2:
        return [NAN_INTERVAL] * len(num)

    table = np.column_stack([*num, den])  # clusters x (statistics + 1)

    def ratios(index: npt.NDArray[np.intp], axis: int = -1) -> npt.NDArray[np.float64]:
        # index: resamples x clusters. How often each cluster was drawn in each resample (one bincount
        # over the flattened rows), times the table: ~3x faster than gathering every drawn value.
        index = np.atleast_2d(index)
        rows = index.shape[0]
        offsets = index + clusters * np.arange(rows)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=rows * clusters).reshape(rows, clusters)
        sums = counts.astype(np.float64) @ table  # float @ float: BLAS (int @ float is not)
        out: npt.NDArray[np.float64] = (sums[:, :-1] / sums[:, -1:]).T  # statistics x resamples
        return out

    result = _scipy.bootstrap(
        (np.arange(clusters),),
        ratios,
        n_resamples=n_resamples,
        batch=max(1, _BATCH_CELLS // (clusters * (len(num) + 1))),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low = np.atleast_1d(result.confidence_interval.low)
    high = np.atleast_1d(result.confidence_interval.high)
    return [(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True)]


def bootstrap_ratio(
    numerators: npt.ArrayLike,
    denominators: npt.ArrayLike,
    *,
    confidence: float = 1 - ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """:func:`bootstrap_ratios` of one statistic: the interval of ``sum(numerators) / sum(denominators)``."""
    import numpy as np

    num = np.asarray(numerators, dtype=float)
    if num.ndim != 1:
        raise ValueError("numerators must be 1-d: one entry a cluster")
    (interval,) = bootstrap_ratios(
        num[None, :], denominators, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    return interval


def bootstrap_mean(
    values: npt.ArrayLike, *, confidence: float = 1 - ALPHA, n_resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (one per case)."""
    import numpy as np

    num = np.asarray(values, dtype=float)
    return bootstrap_ratio(num, np.ones_like(num), confidence=confidence, n_resamples=n_resamples, seed=seed)


# ------------------------------------------------------------------------------------ paired test


@dataclass(frozen=True)
class PairedTest:
    """B against A over pairs of graded attempts (same case and repeat, neither an infrastructure
    error). Deltas are B minus A; intervals are ``(low, high)`` at ``1 - alpha``."""

    pairs: int
    """Graded pairs: the ones the test, the rates and the deltas are over."""
    cases: int
    """Distinct cases among them: the bootstrap's unit."""
    pass_to_fail: int
    fail_to_pass: int
    p_value: float
    """McNemar's exact test on the discordant pairs (two-sided)."""
    rate_a: float
    rate_b: float
    rate_delta: float
    rate_delta_ci: Interval
    cost_delta: float
    """Mean cost difference per pair, USD."""
    cost_delta_ci: Interval
    duration_delta: float
    """Mean duration difference per pair, seconds."""
    duration_delta_ci: Interval
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        """Whether McNemar's test rejects "A and B pass equally often" at ``alpha``."""
        return self.p_value < self.alpha

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: intervals as ``[low, high]``, NaN (nothing to estimate) as None."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, tuple):
                out[name] = [_finite(v) for v in value]
            else:
                out[name] = _finite(value) if isinstance(value, float) else value
        out["significant"] = self.significant
        return out

    def sentence(self) -> str:
        """The result in words: the difference with its interval, the test, and whether it is
        significant at ``alpha``."""
        if self.pairs == 0:
            return "no graded pairs (every pair had an infrastructure error or none matched): nothing to test"
        level = f"{100 * self.alpha:g}%"
        confidence = f"{100 * (1 - self.alpha):g}%"
        low, high = self.rate_delta_ci
        ci = "" if math.isnan(low) else f" ({confidence} CI {100 * low:+.1f} to {100 * high:+.1f})"
        verdict = "significant" if self.significant else "not significant"
        return (
            f"pass rate B - A {100 * self.rate_delta:+.1f} pp{ci} over {self.pairs} pairs; McNemar exact"
            f" p = {self.p_value:.3g} ({self.fail_to_pass} fail->pass, {self.pass_to_fail} pass->fail):"
            f" {verdict} at {level}"
        )


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def paired_test(
    pass_a: Sequence[bool],
    pass_b: Sequence[bool],
    cost_a: Sequence[float],
    cost_b: Sequence[float],
    duration_a: Sequence[float],
    duration_b: Sequence[float],
    cases: Sequence[Hashable],
    *,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedTest:
    """The paired comparison of graded pairs given as parallel sequences (one entry a pair; ``cases``
    names each pair's case, the bootstrap's cluster). Each interval resamples cases with the same seed,
    and the three intervals come from the same resamples of the cases."""
    import numpy as np

    n = len(pass_a)
    if not all(len(s) == n for s in (pass_b, cost_a, cost_b, duration_a, duration_b, cases)):
        raise ValueError("paired_test: every sequence holds one entry a pair")
    index = {case: i for i, case in enumerate(dict.fromkeys(cases))}
    cluster = np.fromiter((index[c] for c in cases), dtype=np.intp, count=n)
    return clustered_paired_test(
        np.asarray(pass_a, dtype=bool),
        np.asarray(pass_b, dtype=bool),
        np.asarray(cost_a, dtype=float),
        np.asarray(cost_b, dtype=float),
        np.asarray(duration_a, dtype=float),
        np.asarray(duration_b, dtype=float),
        cluster,
        alpha=alpha,
        n_resamples=n_resamples,
        seed=seed,
    )


def clustered_paired_test(
    a: npt.NDArray[np.bool_],
    b: npt.NDArray[np.bool_],
    cost_a: npt.NDArray[np.float64],
    cost_b: npt.NDArray[np.float64],
    duration_a: npt.NDArray[np.float64],
    duration_b: npt.NDArray[np.float64],
    cluster: npt.NDArray[np.intp],
    *,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedTest:
    """:func:`paired_test` of pairs given as arrays, each pair's case as its cluster's number (0, 1, ...
    in the order the cases first appear): what a caller that streams its pairs into compact columns
    passes, without a Python object a pair."""
    import numpy as np

    n = len(a)
    if not all(len(s) == n for s in (b, cost_a, cost_b, duration_a, duration_b, cluster)):
        raise ValueError("paired_test: every array holds one entry a pair")
    pass_to_fail = int(np.sum(a & ~b))
    fail_to_pass = int(np.sum(~a & b))
    clusters = int(cluster.max()) + 1 if n else 0
    size = np.bincount(cluster, minlength=clusters).astype(float)
    diffs = [b.astype(float) - a.astype(float), cost_b - cost_a, duration_b - duration_a]
    if n:
        means = [float(d.mean()) for d in diffs]
        sums = np.stack([np.bincount(cluster, weights=d, minlength=clusters) for d in diffs])
        cis = bootstrap_ratios(sums, size, confidence=1 - alpha, n_resamples=n_resamples, seed=seed)
    else:
        means, cis = [math.nan] * 3, [NAN_INTERVAL] * 3
    (rate_delta, cost_delta, duration_delta), (rate_ci, cost_ci, duration_ci) = means, cis
    return PairedTest(
        pairs=n,
        cases=clusters,
        pass_to_fail=pass_to_fail,
        fail_to_pass=fail_to_pass,
        p_value=mcnemar_exact(pass_to_fail, fail_to_pass),
        rate_a=float(a.mean()) if n else math.nan,
        rate_b=float(b.mean()) if n else math.nan,
        rate_delta=rate_delta,
        rate_delta_ci=rate_ci,
        cost_delta=cost_delta,
        cost_delta_ci=cost_ci,
        duration_delta=duration_delta,
        duration_delta_ci=duration_ci,
        alpha=alpha,
    )
