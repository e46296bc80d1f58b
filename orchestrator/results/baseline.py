"""``orchestrate run --baseline RUN``: the running paired comparison of a run against an earlier one, fed
one record at a time, so that a case that passed in the baseline and now fails is known the moment its
record is written. Pairs and counts are :func:`~orchestrator.results.compare.compare_sorted`'s: final
records paired on (case, model, repeat), whatever the config hash; a pair where either side ended in an
infrastructure error is not graded (it says nothing about the agent). With ``--stop-when-decided`` the
watch also runs :mod:`orchestrator.sequential`'s test on the discordant pairs as they come."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.results.compare import final_rows
from orchestrator.results.records import RESULTS, iter_rows
from orchestrator.sequential import Decision, DiscordantSPRT
from orchestrator.stats import mcnemar_exact
from orchestrator.status import Status

Key = tuple[str, str, int]


class Outcome(Protocol):
    """What a pair needs of a record: an :class:`~orchestrator.results.records.AttemptRecord` or a
    :class:`~orchestrator.results.records.Row`."""

    @property
    def case_id(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def repeat(self) -> int: ...
    @property
    def final(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def passed(self) -> bool | None: ...


def _graded(record: Outcome) -> bool | None:
    """Whether it passed; None for an infrastructure error (not graded)."""
    return None if Status(record.status).is_infra else bool(record.passed)


@dataclass(frozen=True)
class Regression:
    """A pair that passed in the baseline and failed now, with the comparison as it stood then."""

    case_id: str
    model_id: str
    repeat: int
    status: str
    pass_to_fail: int
    fail_to_pass: int
    pairs: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "model_id": self.model_id,
            "repeat": self.repeat,
            "status": self.status,
        }


class BaselineWatch:
    """The graded pairs of this run against a baseline so far, updated by :meth:`observe`; with ``sprt``,
    its :attr:`decision` too."""

    def __init__(
        self,
        baseline_dir: Path,
        baseline: dict[Key, bool | None],
        sprt: DiscordantSPRT | None = None,
    ) -> None:
        self.baseline_dir = baseline_dir
        self._sprt = sprt
        self._baseline = baseline
        self._now: dict[Key, bool] = {}  # graded pairs only: this run's verdict
        self._regressions: dict[Key, Regression] = {}
        self.pass_to_fail = 0
        self.fail_to_pass = 0

    @classmethod
    def read(cls, baseline_dir: Path, sprt: DiscordantSPRT | None = None) -> BaselineWatch:
        """The watch against the final records of the run in ``baseline_dir``."""
        finals = final_rows(iter_rows(baseline_dir / RESULTS))
        # scipy's import (about a second) happens here, before any attempt starts, rather than in the
        # scheduler's record callback at the first regression, where it would hold up the run's loop.
        mcnemar_exact(0, 0)
        return cls(baseline_dir, {key: _graded(row) for key, row in finals.items()}, sprt)

    @property
    def decision(self) -> Decision | None:
        """The sequential test's decision once reached (None without a test, or while undecided)."""
        return self._sprt.decision if self._sprt is not None else None

    @property
    def pairs(self) -> int:
        return len(self._now)

    def observe(self, record: Outcome) -> Regression | None:
        """Pair ``record`` with the baseline; the :class:`Regression` when it turns a baseline pass into a
        fail. A later final record of the same key (a forced resume) replaces the earlier one."""
        if not record.final:
            return None
        key = (record.case_id, record.model_id, record.repeat)
        before = self._baseline.get(key)
        self._forget(key, before)
        now = _graded(record)
        if before is None or now is None:  # unpaired, or an infrastructure error on either side
            return None
        self._now[key] = now
        regression = None
        if before and not now:
            self.pass_to_fail += 1
            regression = Regression(*key, str(Status(record.status).value), *self.counts())
            self._regressions[key] = regression
        elif now and not before:
            self.fail_to_pass += 1
        if self._sprt is not None and before != now:  # the test sees discordant pairs only
            self._sprt.check(self.pass_to_fail, self.fail_to_pass)
        return regression

    def _forget(self, key: Key, before: bool | None) -> None:
        now = self._now.pop(key, None)
        self._regressions.pop(key, None)
        if now is None or before is None:
            return
        if before and not now:
            self.pass_to_fail -= 1
        elif now and not before:
            self.fail_to_pass -= 1

    def counts(self) -> tuple[int, int, int]:
        """(pass->fail, fail->pass, graded pairs) so far."""
        return self.pass_to_fail, self.fail_to_pass, self.pairs

    def p_value(self) -> float:
        """McNemar's exact two-sided p on the discordant pairs so far."""
        return mcnemar_exact(self.pass_to_fail, self.fail_to_pass)

    def summary(self) -> dict[str, Any]:
        """summary.json's ``regressions``: the baseline, the running comparison, every regressed pair in
        (model, case, repeat) order, and with the sequential test its ``decision`` (None if undecided)."""
        decision = self.decision.as_dict() if self.decision is not None else None
        decided = {} if self._sprt is None else {"decision": decision}
        return {
            "baseline": str(self.baseline_dir),
            "pairs": self.pairs,
            "pass_to_fail": self.pass_to_fail,
            "fail_to_pass": self.fail_to_pass,
            "p_value": self.p_value(),
            "cases": [
                r.as_dict()
                for _, r in sorted(self._regressions.items(), key=lambda i: (i[0][1], i[0][0], i[0][2]))
            ],
            **decided,
        }
