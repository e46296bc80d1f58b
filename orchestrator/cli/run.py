"""``orchestrate run``: the command line of a run; the work is in :mod:`orchestrator.run.scheduler`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ipc_bridge.redaction import Redactor, redact_process_output
from orchestrator.cli.progress import Progress
from orchestrator.hosts.provider import host_provider
from orchestrator.processes.child_env import withhold
from orchestrator.results.baseline import BaselineWatch
from orchestrator.results.manifest import build_manifest
from orchestrator.results.records import (
    RESULTS,
    AttemptRecord,
    ResultsError,
    ResultsWriteError,
    iter_rows,
)
from orchestrator.results.report import resolve_run
from orchestrator.results.store import ResultsWriter
from orchestrator.run.executor import Executor, ExecutorFactory, ExecutorStartError, Launch
from orchestrator.run.jobs import KEPT_WORKSPACES
from orchestrator.run.local import LocalExecutor
from orchestrator.run.scheduler import Interrupted, RunOptions, Scheduler
from orchestrator.run.supervisor import BridgeFailed
from orchestrator.sequential import DiscordantSPRT
from orchestrator.suite.config import Suite, apply_overrides, load_suite
from orchestrator.suite.plan import build_plan, pending, suite_hash
from orchestrator.suite.yaml_loader import SuiteError

EXIT_BAD_INPUT = 2
EXIT_WRITE_ERROR = ResultsWriteError.exit_code
EXIT_BRIDGE_FAILED = 4
EXIT_CIRCUIT_BREAKER = 5
EXIT_INTERRUPTED = 130


def _default_run_id(suite_name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in suite_name)[:40]
    return f"{stamp}-{safe}"


@click.command()
@click.argument("suite_file", type=click.Path(path_type=Path))  # checked by load_suite, in one line
@click.option("--slots", type=int, help="Extension hosts used at once (overrides target.slots).")
@click.option(
    "--filter",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Only cases with this tag (repeatable: any of them).",
)
@click.option(
    "--case", "case_ids", multiple=True, metavar="ID", help="Only this case id or glob (repeatable)."
)
@click.option(
    "--model", "model_ids", multiple=True, metavar="ID", help="Only this model id or glob (repeatable)."
)
@click.option("--repeats", type=int, help="Repeats per case and model (overrides the suite).")
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Parent directory of run directories.",
)
@click.option("--run-id", help="Name of the run directory (default: UTC timestamp + suite name).")
@click.option(
    "--resume",
    "resume_id",
    metavar="RUN_ID",
    help="Continue this run: only attempts without a final record run.",
)
@click.option(
    "--force", is_flag=True, help="With --resume: accept a suite that changed since the run started."
)
@click.option(
    "--workers",
    type=int,
    help="Worker processes (default: min(slots, 2); never more than slots); each drives several slots.",
)
@click.option(
    "--keep-workspaces",
    is_flag=True,
    help="Keep each attempt's workspace in RESULTS/RUN_ID/workspaces/ (each record names its own; the "
    "directory is printed at the end).",
)
@click.option(
    "--baseline",
    "baseline_run",
    metavar="RUN",
    help="Compare with this earlier run (a run directory, or a run id under --results) as it goes: each "
    "(case, model, repeat) that passed there and fails now is announced at once (a line above the bar, "
    "a 'regression' event with --json) and listed in summary.json's 'regressions' with the running "
    "paired comparison (pass->fail, fail->pass, McNemar's exact p).",
)
@click.option(
    "--stop-when-decided",
    is_flag=True,
    help="With --baseline: stop starting attempts once a sequential test (Wald's SPRT on the discordant "
    "pairs, alpha 0.05, power 0.8 against 3 of 4 flips going one way) decides regressed, improved or no "
    "difference; running attempts finish, the rest are left to --resume. Stop reason 'decided', exit 0.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON line per finished attempt and a final summary line."
)
@click.option(
    "--max-bridge-restarts",
    type=click.IntRange(min=0),
    default=10,
    help="bridge deaths tolerated within a minute before the run stops [default 10]",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run on a Ray cluster (implies target.executor: ray): 'auto' joins the one started on this "
    "machine with ray start, 'local' starts a private one, else the cluster's address. Needs "
    "pip install '.[ray]'.",
)
def run(
    suite_file: Path,
    slots: int | None,
    tags: tuple[str, ...],
    case_ids: tuple[str, ...],
    model_ids: tuple[str, ...],
    repeats: int | None,
    results_dir: Path,
    run_id: str | None,
    resume_id: str | None,
    force: bool,
    workers: int | None,
    keep_workspaces: bool,
    quiet: bool,
    as_json: bool,
    max_bridge_restarts: int,
    ray_address: str | None,
    baseline_run: str | None,
    stop_when_decided: bool,
) -> None:
    """Run SUITE_FILE (cases x models x repeats) and write results/<run-id>/.

    \b
    Files written: manifest.json (resolved suite, secrets redacted), results.jsonl (one record per
    attempt, fsynced), events/ (per-attempt transcripts), summary.json. Load them in a notebook with
    orchestrator.results.store.load("results/<run-id>").
    The progress bar shows the projected total cost (against the budget) and time to completion from
    the attempts finished so far; --baseline RUN announces regressions against RUN as they happen.
    Exit codes: 0 done (stopped by a spent budget or by --stop-when-decided's decision included),
    2 bad suite or options (or the Ray cluster cannot be used), 3 results could not be written (disk full, unwritable
    --results; every record written is complete: fix it, then --resume RUN_ID), 4 the bridge kept dying
    (more than --max-bridge-restarts a minute), 5 circuit breaker: the first tries of the first
    2 x slots attempts all ended infra_error for the same reason (a host that cannot start, ...; the
    reason is printed), 130 interrupted. After 3, 4, 5 and 130, --resume RUN_ID continues the run.
    2 also when another process owns the run (a --resume or --run-id of a run in progress).
    """
    if stop_when_decided and baseline_run is None:
        click.echo("error: --stop-when-decided needs --baseline RUN (the run to decide against)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        suite = load_suite(suite_file)
        # The run's identity is the whole suite, before --case/--model/--filter narrow it, so that a
        # resume may run a subset of it.
        identity = suite_hash(suite)
        suite = apply_overrides(
            suite, slots=slots, tags=tags, case_ids=case_ids, model_ids=model_ids, repeats=repeats
        )
        if ray_address is not None:
            suite = _on_ray(suite)
    except SuiteError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_BAD_INPUT)
    redactor = suite.redactor()
    # From here on, whatever this process or a child prints is redacted, and no child inherits a secret.
    redact_process_output(redactor)
    withhold(suite.referenced_env, suite.secret_values)
    if workers is not None and workers < 1:
        click.echo(f"error: --workers: must be at least 1, got {workers}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for option, name in (("--run-id", run_id), ("--resume", resume_id)):
        if name is not None and (not name.strip() or name in (".", "..") or "/" in name or "\0" in name):
            click.echo(
                f"error: {option} {name!r}: give a plain directory name (no '/', not '.' or '..')", err=True
            )
            sys.exit(EXIT_BAD_INPUT)
    baseline = _baseline(baseline_run, results_dir, decide=stop_when_decided)
    plan = build_plan(suite)
    try:
        if resume_id:
            writer = ResultsWriter.resume(results_dir / resume_id, redactor=redactor)
            run_id = resume_id
            recorded = writer.read_manifest().get("config_hash")
            if recorded != identity and not force:
                writer.close()
                click.echo(
                    f"error: {suite_file} changed since run {resume_id} started (config hash {recorded} -> "
                    f"{identity}); resume with --force to run the changed suite into the same run anyway",
                    err=True,
                )
                sys.exit(EXIT_BAD_INPUT)
        else:
            run_id = run_id or _default_run_id(suite.name)
            manifest = build_manifest(
                suite,
                run_id=run_id,
                config_hash=identity,
                argv=sys.argv,
                started_at=datetime.now(timezone.utc),
                attempts_planned=len(plan),
            )
            writer = ResultsWriter.create(results_dir / run_id, manifest, redactor=redactor)
    except ResultsWriteError as exc:
        click.echo(f"error: {exc}; nothing was started: fix it or choose another --results", err=True)
        sys.exit(EXIT_WRITE_ERROR)
    except ResultsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    todo = pending(plan, writer.finished_keys())
    if baseline is not None and resume_id:
        # A resumed run's earlier records are in the comparison, not announced again.
        for row in iter_rows(writer.run_dir / RESULTS):
            baseline.observe(row)
    progress = Progress(
        len(todo),
        quiet=quiet,
        as_json=as_json,
        redactor=redactor,
        slots=suite.target.slots,
        budget_usd=suite.budget.max_cost_usd,
        spent_before=writer.cost_usd,
        baseline=baseline,
    )
    scheduler = Scheduler(
        suite,
        todo,
        writer,
        run_id=run_id,
        options=RunOptions(keep_workspaces=keep_workspaces),
        executor=_executor(
            suite, workers=workers, bridge_restarts=max_bridge_restarts, ray_address=ray_address
        ),
        on_record=_stopping_when_decided(progress, baseline, lambda: scheduler),
    )
    if baseline is not None and baseline.decision is not None:  # a resume of a run decided already
        scheduler.stop_starting("decided")
    stop = "interrupted"
    failed: ResultsError | None = None
    broken: BridgeFailed | None = None
    unstarted: ExecutorStartError | None = None
    try:
        stop = scheduler.run()
    except Interrupted:
        stop = "killed"
    except ResultsWriteError as exc:
        stop, failed = "write_error", exc
    except BridgeFailed as exc:
        stop, broken = "bridge_failed", exc
    except ExecutorStartError as exc:
        stop, unstarted = "not_started", exc
    finally:
        progress.close()
        extra: dict[str, Any] = {"stop_detail": scheduler.tripped} if scheduler.tripped else {}
        if baseline is not None:
            extra["regressions"] = baseline.summary()
        summary = writer.summary(
            stop_reason=stop, pending=scheduler.pending, skipped_budget=scheduler.skipped_budget, **extra
        )
        try:
            writer.write_summary(summary)
            writer.update_manifest(ended_at=datetime.now(timezone.utc).isoformat())
        except ResultsError as exc:  # the records are what counts; a resume rewrites both files
            failed = failed or exc
        if failed is None:  # load()'s cache; never raises. After a write error, the resume writes it
            writer.write_columnar()
        writer.close()  # last: until here, the run directory is this process's alone
    if failed is not None:
        click.echo(
            f"error: {failed}; every record written before is complete. Free space (or fix the "
            f"directory), then continue with: orchestrate run {suite_file} --results {results_dir} "
            f"--resume {run_id}",
            err=True,
        )
        sys.exit(EXIT_WRITE_ERROR)
    if unstarted is not None:
        click.echo(f"error: {unstarted}; nothing ran (resume with --resume {run_id} once fixed)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    kept = writer.run_dir / KEPT_WORKSPACES if keep_workspaces else None
    _report(writer.run_dir, summary, as_json=as_json, quiet=quiet, redactor=redactor, kept=kept)
    if broken is not None:
        click.echo(
            f"error: {broken}. The run stopped; every record written is valid: continue with "
            f"orchestrate run {suite_file} --results {results_dir} --resume {run_id}",
            err=True,
        )
        sys.exit(EXIT_BRIDGE_FAILED)
    if scheduler.tripped is not None:
        click.echo(
            f"error: {redactor.text(scheduler.tripped)}: the rest would too, so the run stopped. Fix the "
            f"cause, then continue with: orchestrate run {suite_file} --results {results_dir} --resume {run_id}",
            err=True,
        )
        sys.exit(EXIT_CIRCUIT_BREAKER)
    if stop in ("interrupted", "killed"):
        sys.exit(EXIT_INTERRUPTED)


def _baseline(run: str | None, results_dir: Path, *, decide: bool) -> BaselineWatch | None:
    """``--baseline RUN``'s final records, read once before the run starts (``decide``: with the
    sequential test of ``--stop-when-decided``); exits 2 when RUN is no run."""
    if run is None:
        return None
    try:
        return BaselineWatch.read(resolve_run(run, results_dir), DiscordantSPRT() if decide else None)
    except ResultsError as exc:
        click.echo(f"error: --baseline: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


def _stopping_when_decided(
    progress: Progress, baseline: BaselineWatch | None, scheduler: Callable[[], Scheduler]
) -> Callable[[AttemptRecord], None]:
    """The scheduler's ``on_record``: the progress (which feeds the baseline watch), then, once the
    watch's sequential test has decided, the stop: no attempt starts after it (``scheduler``: the
    scheduler this is given to, made after it)."""

    def on_record(record: AttemptRecord) -> None:
        progress(record)
        if baseline is not None and baseline.decision is not None:
            scheduler().stop_starting("decided")

    return on_record


def _executor(
    suite: Suite, *, workers: int | None, bridge_restarts: int, ray_address: str | None
) -> ExecutorFactory:
    """What runs the attempts: this machine's workers and bridge, or with ``target.executor: ray`` one
    actor (and bridge) per Ray node."""
    if getattr(suite.target, "executor", "local") != "ray":
        return lambda launch: LocalExecutor.start(launch, workers=workers, bridge_restarts=bridge_restarts)

    def start_ray(launch: Launch) -> Executor:
        # Ray is an optional extra: imported only when asked for. Every node runs its own bridge and
        # makes its own runtime dir.
        try:
            from orchestrator.ray.pool import RayPool
        except ImportError as exc:
            raise ExecutorStartError(
                f"target.executor: ray needs Ray ({exc}): pip install '.[ray]'"
            ) from None
        return RayPool(launch.config, slots=launch.slots, address=ray_address)

    return start_ray


def _on_ray(suite: Suite) -> Suite:
    """``--ray``: the suite with ``target.executor: ray`` (hosts launched on the nodes)."""
    refusal = host_provider(suite.target).not_on_ray
    if refusal is not None:
        raise SuiteError.single(suite.source, "--ray", refusal)
    return suite.model_copy(update={"target": suite.target.model_copy(update={"executor": "ray"})})


def _report(
    run_dir: Path,
    summary: dict[str, Any],
    *,
    as_json: bool,
    quiet: bool,
    redactor: Redactor,
    kept: Path | None,
) -> None:
    if as_json:
        where = {"workspaces_dir": str(kept)} if kept is not None else {}
        click.echo(json.dumps(redactor({"type": "summary", "run_dir": str(run_dir), **where, **summary})))
        return
    totals = summary.get("totals", {})
    click.echo(
        f"{run_dir}: {totals.get('attempts', 0)} attempts, {totals.get('passed', 0)} passed, "
        f"{totals.get('failed', 0)} failed, {totals.get('errors', 0)} errors, "
        f"cost ${totals.get('cost_usd', 0.0):.4f}; stop: {summary.get('stop_reason')}",
        err=quiet,
    )
    if kept is not None:
        click.echo(f"workspaces kept in {kept}", err=quiet)
