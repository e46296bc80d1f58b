"""Statistics over the DataFrames of :func:`orchestrator.results.load`, for notebooks::

    from orchestrator.analysis import compare_runs, pass_at_k, pass_rate
    from orchestrator.results import load

    df = load("results/20261124T190000Z-demo")
    pass_rate(df, by=["model_id"])        # n, passed, rate and its 95% Wilson interval, infra errors apart
    pass_at_k(df, k=2, by=["model_id"])   # unbiased pass@k over repeats, bootstrap interval over cases
    compare_runs(load(run_a), load(run_b)).summary()   # flips, McNemar's exact test, paired intervals

Which record counts: the final record of each attempt (``final``; a frame of
``load(all_attempts=True)`` is filtered to those), as ``orchestrate report`` and summary.json count
them: a retried attempt counts once, by the result of its last try. A final record whose ``status`` is
an infrastructure error (:attr:`orchestrator.status.Status.is_infra`: ``api_error``, ``infra_error``, that
is, retries ran out) says nothing about the agent: it is left out of every rate and test and counted
apart (``infra_errors``). Every other final record is graded: it passed when ``passed`` is true, and
failed otherwise (a failed check, a timeout, a stuck or aborted agent). A run resumed with ``--force``
after a change to its suite may hold a final record under each config hash for one (case, model,
repeat): the rates count each, as the report does; :func:`compare_runs` pairs the last one written,
as ``orchestrate compare`` does.

The figures come from :mod:`orchestrator.stats` (scipy underneath); intervals are at 95% and every
bootstrap is seeded, so the same frames give the same figures. The tag view: ``pass_rate(df.explode("tags"),
by=["tags"])``. Needs pandas (the ``notebook`` extra).
"""

from orchestrator.analysis.paired import compare_runs
from orchestrator.analysis.rates import pass_at_k, pass_rate

__all__ = ["compare_runs", "pass_at_k", "pass_rate"]
