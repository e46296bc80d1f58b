"""AttemptRunner's endings before and around the task: each record carries the verdict that
orchestrator.verdict gives that ending (tests/test_verdict.py holds the mapping itself)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from orchestrator.results.records import AttemptRecord
from orchestrator.run.attempt import AttemptRunner
from orchestrator.status import Status
from tests.run.fake_bridge import FakeBridge, HostScript
from tests.run.test_attempt import attempt, socket_job


def _run_for_real(tmp: Path, case: str, *, leased: bool = True) -> tuple[AttemptRecord, FakeBridge]:
    """One job of a socket target whose case is ``case`` (YAML), on a real event loop (a setup command
    is a real process); ``leased``: whether the job got its socket."""
    job, config = socket_job(tmp, case=case)
    if not leased:
        job = dataclasses.replace(job, socket=None)
    work = Path(config.work_dir)
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl"))

    async def main() -> AttemptRecord:
        runner = AttemptRunner(fake, config, 1)
        try:
            return AttemptRecord.model_validate((await runner.run(job)).record)
        finally:
            await runner.close()

    record = asyncio.run(main())
    assert list(work.iterdir()) == []  # the workspace is gone
    return record, fake


def test_a_failed_setup_command_is_a_harness_error_and_nothing_is_attached(tmp_path: Path) -> None:
    record, fake = _run_for_real(tmp_path, "{id: a, prompt: x, setup: ['echo broken >&2; exit 3']}")
    assert (record.status, record.reason, record.error_class) == (
        Status.INFRA_ERROR,
        "setup failed",
        "harness",
    )
    assert record.error is not None and "exited 3" in record.error and "broken" in record.error
    assert (record.final, record.task_id, fake.names()) == (False, None, [])


def test_a_host_that_cannot_be_had_did_not_come_up(tmp_path: Path) -> None:
    record, fake = _run_for_real(tmp_path, "{id: a, prompt: x}", leased=False)
    assert (record.status, record.reason, record.error_class) == (
        Status.INFRA_ERROR,
        "extension host did not come up",
        "infra",
    )
    assert record.error == "socket target without a leased socket"
    assert fake.names() == []


def test_cancelled_while_cancelling_says_how_the_task_had_ended(tmp_path: Path) -> None:
    """Ctrl-C while the runner waits for the host to answer the CancelTask of a timeout: the record is
    cancelled (not a try), and its reason keeps what the agent's task had ended as."""
    fake = FakeBridge(HostScript.recorded("complete-3.52.1.jsonl", frozen_after=0.5))
    record, _ = attempt(
        tmp_path, fake, ", timeout: 2s, cancel_timeout: 5s", during=lambda _, task: task.cancel(), at=3.0
    )
    assert (record.status, record.reason, record.error_class, record.final) == (
        Status.CANCELLED,
        "cancelled by the orchestrator after the task ended timeout",
        None,
        False,
    )
