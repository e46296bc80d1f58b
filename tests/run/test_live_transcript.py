"""A running attempt's live transcript: AttemptRunner on a fake bridge replaying a recorded host, on a
virtual clock, writing through the real FileChannel into a run directory made by the real writer."""

from __future__ import annotations

import asyncio
import pickle
import textwrap
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.redaction import Redactor
from orchestrator.results import live_transcripts
from orchestrator.results.records import AttemptRecord
from orchestrator.results.store import ResultsWriter
from orchestrator.run.attempt import AttemptRunner
from orchestrator.run.jobs import Job, JobResult, WorkerConfig
from orchestrator.run.live_transcript import FLUSH_S, FileChannel, LiveLog
from orchestrator.run.slot_events import is_partial
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan
from tests.run.fake_bridge import FakeBridge, HostScript
from tests.run.virtual_clock import run_virtual


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_rows_reach_the_live_file_while_the_attempt_runs_redacted_and_never_partial(tmp_path: Path) -> None:
    script = HostScript.recorded("long-stream-3.52.1.jsonl")
    idle = next(t for t, raw in script.after_start if raw["eventName"] == "taskIdle")
    # A word of the prompt stands in for a secret: the live file must not show it.
    word = "LONGSTREAM"
    (tmp_path / "host.sock").touch()
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            name: t
            target: {kind: socket, sockets: [host.sock]}
            cases: [{id: a, prompt: Say done.}]
            """
        )
    )
    loaded = load_suite(suite)
    job = Job(build_plan(loaded).attempts[0], number=1, socket=str(tmp_path / "host.sock"))
    writer = ResultsWriter.create(tmp_path / "results" / "r", {"run_id": "r"})
    work = tmp_path / "work"
    work.mkdir()
    redactor = Redactor([word])
    config = WorkerConfig("r", "", str(work), str(work), loaded.target, results_dir=str(writer.run_dir))
    live = writer.run_dir / "live" / job.attempt.key.events_name(1)
    seen: dict[str, Any] = {}

    def look(at: str) -> None:
        seen[at] = _lines(live) if live.exists() else None

    async def main() -> JobResult:
        runner = AttemptRunner(
            FakeBridge(script), config, 1, live=LiveLog(FileChannel(writer.run_dir), redactor)
        )
        loop = asyncio.get_running_loop()
        loop.call_later(idle / 2, look, "middle")
        try:
            return await runner.run(job, "ticket")
        finally:
            look("end")
            await runner.close()

    result = run_virtual(main())
    transcript = result.transcript
    assert type(pickle.loads(pickle.dumps(transcript))) is list  # it travels as a plain list
    assert pickle.loads(pickle.dumps(transcript)) == transcript
    head, *rows = seen["middle"]
    assert head["live_attempt"] == 1 and (head["case_id"], head["attempt"], head["slot"]) == ("a", 1, "w1-1")
    # Halfway through, the rows up to a flush ago are there, as the transcript will hold them: redacted,
    # and no partial message among them.
    assert 0 < len(rows) < len(transcript)
    flushed = [r for r in transcript if r["t"] + FLUSH_S <= idle / 2]
    assert rows == orjson.loads(orjson.dumps(redactor(flushed)))
    assert word not in live.read_text() and not any(is_partial(r["event"]) for r in rows)
    assert any(word in orjson.dumps(r).decode() for r in transcript)  # the raw rows did hold it
    # It was settled before the result: the file holds what was flushed, nothing came after the end.
    assert seen["end"] == _lines(live)

    # The record supersedes it: written, the live file is gone.
    writer.append(AttemptRecord.model_validate(result.record))
    assert not live.exists()
    writer.close()
    assert not (writer.run_dir / live_transcripts.LIVE).exists()
