"""``orchestrate report`` and ``orchestrate compare``: the command lines; the tables are in
:mod:`orchestrator.results.report`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from orchestrator.results.compare import build_comparison, format_comparison
from orchestrator.results.records import ResultsError
from orchestrator.results.report import build_report, format_report, resolve_run

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


def _common(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the same figures as one JSON document.")(
        fn
    )
    fn = click.option(
        "--results",
        "results_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("results"),
        show_default=True,
        help="Parent directory of run directories, where a RUN given as a run id is looked up.",
    )(fn)
    return fn


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _emit(data: Any, text: Callable[[Any], str], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(text(data))


@click.command()
@click.argument("run")
@_common
def report(run: str, results_dir: Path, as_json: bool) -> None:
    """Pass rate, passed/failed/errors, cost, tokens and duration p50/p90 of RUN: overall, by model and
    by tag, over the final record of each attempt (retried attempts add to the cost with retries;
    attempts cancelled by Ctrl-C are counted apart: they are run again on resume). "excl. infra": the
    pass rate among graded attempts (infrastructure errors left out) with its 95% Wilson interval.

    \b
    RUN is a run directory (or its results.jsonl) or a run id under --results.
    Exit codes: 0 shown, 2 no such run or an unreadable results.jsonl.
    """
    try:
        data = build_report(resolve_run(run, results_dir))
    except (ResultsError, OSError) as exc:
        _fail(exc)
    _emit(data, format_report, as_json)


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@_common
def compare(run_a: str, run_b: str, results_dir: Path, as_json: bool) -> None:
    """Compare RUN_B against RUN_A: final records are paired by case, model and repeat (the config hash
    may differ: the "config" columns say where it does). Lists every pair whose outcome flipped (pass,
    fail, error), and per model the pass-rate, cost and median-duration deltas (B minus A). Then, in
    total and per model, over the pairs without an infrastructure error: McNemar's exact test, the
    pass-rate difference and the mean cost and duration differences with paired bootstrap 95%
    intervals (resampling cases, seeded), and whether the difference is significant at 5%.

    \b
    RUN_A and RUN_B are run directories or run ids under --results.
    Exit codes: 0 shown (whatever changed), 2 no such run or an unreadable results.jsonl.
    """
    try:
        data = build_comparison(resolve_run(run_a, results_dir), resolve_run(run_b, results_dir))
    except (ResultsError, OSError) as exc:
        _fail(exc)
    _emit(data, format_comparison, as_json)
