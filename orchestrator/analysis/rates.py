"""Pass rates with Wilson intervals and the unbiased pass@k over repeats, by any grouping of a
:func:`orchestrator.results.load` frame. Which records count: :mod:`orchestrator.analysis`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from orchestrator.stats import ALPHA, RESAMPLES, SEED, bootstrap_mean, pass_at_k_unbiased, wilson_interval
from orchestrator.status import Status

INFRA_STATUSES = frozenset(s.value for s in Status if s.is_infra)
"""The ``status`` values of infrastructure errors: not the agent's result, left out of the rates."""


def outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """The final records of ``df`` with three boolean columns added: ``infra_error`` (an
    infrastructure error, not graded), ``graded`` (its negation) and ``pass`` (graded and passed)."""
    rows = df[df["final"].eq(True)]
    infra = rows["status"].isin(INFRA_STATUSES)
    return rows.assign(infra_error=infra, graded=~infra, **{"pass": rows["passed"].eq(True) & ~infra})


def _groups(df: pd.DataFrame, by: list[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """``df`` split by the ``by`` columns, keys in sorted order (missing values as their own group);
    the whole frame under ``()`` when ``by`` is empty."""
    if not by:
        return [((), df)]
    return [(key, part) for key, part in df.groupby(by, sort=True, dropna=False)]


def pass_rate(df: pd.DataFrame, by: Sequence[str] = ("model_id",), *, alpha: float = ALPHA) -> pd.DataFrame:
    """One row a group of ``by``: ``n`` graded attempts, ``passed``, ``failed``, ``rate`` = passed / n, its
    Wilson interval at ``1 - alpha`` (``ci_low``, ``ci_high``; NaN when n is 0), and ``infra_errors``,
    the final records left out as infrastructure errors.

    The interval treats the attempts as independent draws; with several repeats of a case they are
    not quite (a case hard once is hard again), so read it as the interval of *these* cases' rate."""
    by = list(by)
    rows = []
    for key, part in _groups(outcomes(df), by):
        n, passed = int(part["graded"].sum()), int(part["pass"].sum())
        low, high = wilson_interval(passed, n, 1 - alpha)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": n,
                "passed": passed,
                "failed": n - passed,
                "rate": passed / n if n else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "infra_errors": int(part["infra_error"].sum()),
            }
        )
    return pd.DataFrame(
        rows, columns=[*by, "n", "passed", "failed", "rate", "ci_low", "ci_high", "infra_errors"]
    )


def pass_at_k(
    df: pd.DataFrame,
    k: int,
    by: Sequence[str] = ("model_id",),
    *,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """One row a group of ``by``: the unbiased pass@k (Chen et al., 2021) -- for each case with ``n``
    graded attempts of which ``c`` passed, 1 - C(n-c, k) / C(n, k), averaged over the group's cases
    (``case_id`` within the group) -- with a percentile bootstrap interval at ``1 - alpha`` that
    resamples cases (seeded: ``seed``). ``cases`` is how many cases it averages; a case with fewer than
    ``k`` graded attempts has no estimate and is counted in ``cases_too_few`` instead. pass@1 is the
    mean over cases of each case's pass rate."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, not {k}")
    by = list(by)
    rows = []
    for key, part in _groups(outcomes(df), by):
        per_case = part.groupby("case_id", sort=True).agg(n=("graded", "sum"), c=("pass", "sum"))
        eligible = per_case[per_case["n"] >= k]
        values = [
            pass_at_k_unbiased(int(n), int(c), k) for n, c in zip(eligible["n"], eligible["c"], strict=True)
        ]
        low, high = bootstrap_mean(values, confidence=1 - alpha, n_resamples=n_resamples, seed=seed)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "k": k,
                "cases": len(values),
                "pass_at_k": sum(values) / len(values) if values else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "cases_too_few": len(per_case) - len(values),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "k", "cases", "pass_at_k", "ci_low", "ci_high", "cases_too_few"])
