"""Two runs (or two models of one run) compared on the same cases: the flips, McNemar's exact test and
paired bootstrap intervals (:func:`orchestrator.stats.paired_test`), the figures of ``orchestrate
compare``'s paired test computed from DataFrames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from orchestrator.analysis.rates import outcomes
from orchestrator.stats import ALPHA, RESAMPLES, SEED, PairedTest, paired_test

_RECORD_KEY = ["run_id", "case_id", "model_id", "repeat"]
_KEPT = ["status", "passed", "outcome", "cost_usd", "duration_s", "config_hash"]


@dataclass(frozen=True)
class RunComparison:
    """B against A. ``pairs``: one row per pair, the ``on`` columns then ``<column>_a``/``<column>_b``
    for status, passed, outcome (``pass``, ``fail`` or ``error``), cost_usd, duration_s and config_hash
    (and model_id when it is not paired on). ``flips``: how many pairs went ``pass->fail``,
    ``fail->pass``, ``pass->error``, ... . ``test``: over the graded pairs (neither an infrastructure
    error)."""

    on: tuple[str, ...]
    pairs: pd.DataFrame
    flips: dict[str, int]
    only_a: int
    """Keys with a record in A only (not compared)."""
    only_b: int
    test: PairedTest

    @property
    def significant(self) -> bool:
        return self.test.significant

    def summary(self) -> str:
        """The comparison in words, as ``orchestrate compare`` puts it."""
        t = self.test
        flips = ", ".join(f"{k} {v}" for k, v in self.flips.items()) or "none"
        lines = [
            f"paired on {', '.join(self.on)}: {len(self.pairs)} pairs ({self.only_a} only in A,"
            f" {self.only_b} only in B); flips: {flips}",
            t.sentence(),
        ]
        if t.pairs:
            lines.append(
                f"mean cost per pair {_with_ci(t.cost_delta, t.cost_delta_ci, '.4f')} USD, mean duration"
                f" per pair {_with_ci(t.duration_delta, t.duration_delta_ci, '.1f')} s"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _with_ci(value: float, ci: tuple[float, float], spec: str) -> str:
    """``+1.0 (95% CI +0.5 to +1.5)``; the value alone when there is no interval (one case)."""
    low, high = ci
    if math.isnan(low):
        return format(value, "+" + spec)
    return f"{value:+{spec}} (95% CI {low:+{spec}} to {high:+{spec}})"


def _side(df: pd.DataFrame, on: list[str], label: str) -> pd.DataFrame:
    """One final record per key: the last written of each (run, case, model, repeat) -- a forced
    resume may have left one per config hash -- and then one per ``on`` key, or an error."""
    rows = outcomes(df).drop_duplicates(_RECORD_KEY, keep="last")
    rows = rows.assign(outcome=rows["pass"].map({True: "pass", False: "fail"}).where(rows["graded"], "error"))
    twice = rows.duplicated(on, keep=False)
    if twice.any():
        raise ValueError(
            f"compare_runs: {label} holds {int(twice.sum())} records sharing a ({', '.join(on)}) key,"
            " e.g. several runs: give one run a side, or pair on more columns"
        )
    return rows[[*on, *(["model_id"] if "model_id" not in on else []), *_KEPT]]


def compare_runs(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    on: Sequence[str] | None = None,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> RunComparison:
    """Compare B against A (two :func:`orchestrator.results.load` frames), paired on ``on``. By default
    on case, model and repeat, or on case and repeat alone when the two hold no model in common: two
    runs of the same models pair model by model, two models of one run (``df[df.model_id == "x"]``) pair
    with each other. The test and the intervals resample cases (seeded), and give the same figures as
    ``orchestrate compare`` for the same two runs."""
    if on is None:
        shared = set(a["model_id"]) & set(b["model_id"])
        on = ("case_id", "model_id", "repeat") if shared else ("case_id", "repeat")
    keys = list(on)
    side_a, side_b = _side(a, keys, "A"), _side(b, keys, "B")
    merged = side_a.merge(side_b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    order = ["model_id", "case_id", "repeat"] if "model_id" in keys else ["case_id", "repeat"]
    order += [k for k in keys if k not in order]
    pairs = (
        merged[merged["_merge"] == "both"].drop(columns="_merge").sort_values(order, kind="stable")
    ).reset_index(drop=True)
    changed = pairs[pairs["outcome_a"] != pairs["outcome_b"]]
    flips = (changed["outcome_a"] + "->" + changed["outcome_b"]).value_counts()
    graded = pairs[(pairs["outcome_a"] != "error") & (pairs["outcome_b"] != "error")]
    test = paired_test(
        graded["outcome_a"].eq("pass").tolist(),
        graded["outcome_b"].eq("pass").tolist(),
        graded["cost_usd_a"].tolist(),
        graded["cost_usd_b"].tolist(),
        graded["duration_s_a"].tolist(),
        graded["duration_s_b"].tolist(),
        graded["case_id"].tolist(),
        alpha=alpha,
        n_resamples=n_resamples,
        seed=seed,
    )
    return RunComparison(
        on=tuple(keys),
        pairs=pairs,
        flips={str(k): int(v) for k, v in sorted(flips.items())},
        only_a=int((merged["_merge"] == "left_only").sum()),
        only_b=int((merged["_merge"] == "right_only").sum()),
        test=test,
    )
