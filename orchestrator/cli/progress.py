"""What ``orchestrate run`` shows while it runs, fed each record as it is written: the tqdm bar (with the
projected cost and time to completion, :mod:`orchestrator.run.projection`), or JSON lines, or nothing;
and with ``--baseline`` each regression the moment it happens (:mod:`orchestrator.results.baseline`), and
``--stop-when-decided``'s decision (:mod:`orchestrator.sequential`)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ipc_bridge.redaction import Redactor
from orchestrator.results.baseline import BaselineWatch, Regression
from orchestrator.results.records import AttemptRecord
from orchestrator.run.projection import Projection, project
from orchestrator.sequential import Decision
from orchestrator.status import Status


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """The tqdm bar (or JSON lines, or nothing) fed by each record as it is written."""

    def __init__(
        self,
        total: int,
        *,
        quiet: bool,
        as_json: bool,
        redactor: Redactor,
        slots: int,
        budget_usd: float | None = None,
        spent_before: float = 0.0,
        baseline: BaselineWatch | None = None,
    ) -> None:
        self.as_json = as_json
        self.redact = redactor
        self.counts = {"passed": 0, "failed": 0, "errors": 0, "retried": 0, "cancelled": 0}
        self.cost = 0.0
        self.total = total
        self.slots = slots
        self.budget_usd = budget_usd
        self.spent_before = spent_before
        """What a resumed run spent before this process: in the budget's measure, not in the means."""
        self.baseline = baseline
        self._busy_s = 0.0
        self._finished = 0
        self._warned = False
        self._bar: Any = None
        if not quiet and not as_json:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="attempt", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, record: AttemptRecord) -> None:
        self.cost += record.metrics.cost_usd
        self._busy_s += record.duration_s
        self._finished += record.final
        if record.status is Status.CANCELLED:
            self.counts["cancelled"] += 1  # stopped by us: run again on resume, not a retry
        elif not record.final:
            self.counts["retried"] += 1
        elif record.error_class is not None or record.status.is_infra:
            self.counts["errors"] += 1
        elif record.passed:
            self.counts["passed"] += 1
        else:
            self.counts["failed"] += 1
        if self.as_json:
            # Redacted before it is JSON: stdout's own redaction sees the text, where escaping may hide
            # a secret.
            click.echo(json.dumps(self.redact({"type": "attempt", **record.model_dump(mode="json")})))
        if self.baseline is not None:
            undecided = self.baseline.decision is None
            regression = self.baseline.observe(record)
            if regression is not None:
                self._announce(regression)
            if undecided and (decision := self.baseline.decision) is not None:
                self._announce_decision(decision)
        projection = self._projection()
        if self._bar is not None:
            if record.final:
                self._bar.update(1)
            self._bar.set_postfix(**self.counts, cost=f"${self.cost:.2f}", **projection, refresh=True)

    def _projection(self) -> dict[str, str]:
        """The bar's projected cost (over the budget, if any) and time to completion; the first time the
        projection exceeds the budget, a warning line above the bar (on stderr without one)."""
        left = max(self.total - self._finished, 0)
        p = project(
            spent_usd=self.cost, busy_s=self._busy_s, finished=self._finished, left=left, slots=self.slots
        )
        if p is None:
            return {}
        p = Projection(cost_usd=self.spent_before + p.cost_usd, remaining_s=p.remaining_s)
        budget = f"/${self.budget_usd:.2f}" if self.budget_usd is not None else ""
        if p.over(self.budget_usd) and not self._warned:
            self._warned = True
            self._write(
                f"warning: projected cost ${p.cost_usd:.2f} exceeds the budget ${self.budget_usd:.2f}: "
                "the run will stop starting attempts once it is spent"
            )
        return {"projected": f"${p.cost_usd:.2f}{budget}", "eta": _duration(p.remaining_s)}

    def _announce(self, r: Regression) -> None:
        """A regression, at once: a JSON event, or a line above the bar (stderr without a bar)."""
        assert self.baseline is not None
        p_value = self.baseline.p_value()
        if self.as_json:
            event = {
                "type": "regression",
                **r.as_dict(),
                "pass_to_fail": r.pass_to_fail,
                "fail_to_pass": r.fail_to_pass,
                "pairs": r.pairs,
                "p_value": p_value,
            }
            click.echo(json.dumps(self.redact(event)))
            return
        self._write(
            f"regression: {r.case_id} / {r.model_id} / repeat {r.repeat} passed in the baseline, now "
            f"{r.status}; so far {r.pass_to_fail} pass->fail, {r.fail_to_pass} fail->pass over {r.pairs} "
            f"pairs, McNemar exact p = {p_value:.3g}"
        )

    def _announce_decision(self, d: Decision) -> None:
        """``--stop-when-decided``'s decision, once: a JSON event, or a line above the bar."""
        assert self.baseline is not None
        if self.as_json:
            event = {"type": "decision", **d.as_dict(), "p_value": self.baseline.p_value()}
            click.echo(json.dumps(self.redact(event)))
            return
        self._write(
            f"decided: {d.hypothesis.replace('_', ' ')} after {d.discordant} discordant pairs "
            f"({d.pass_to_fail} pass->fail, {d.fail_to_pass} fail->pass; sequential test at 5%): "
            "no more attempts start, running ones finish"
        )

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(self.redact.text(line), file=sys.stderr)
        else:
            click.echo(self.redact.text(line), err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
