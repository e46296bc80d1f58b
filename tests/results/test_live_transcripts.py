"""Live transcripts never outlive what they stand for: an attempt's goes when its record is written, a
run's when its writer closes, and a killed run's with the next run or resume beside it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson

from ipc_bridge.redaction import Redactor
from orchestrator.results import live_transcripts
from orchestrator.results.run_lock import RunLock
from orchestrator.results.store import ResultsWriter
from orchestrator.run.slot_events import transcript_row
from tests.results.test_results import key, record
from tests.run.fake_bridge import HostScript


def _live(run_dir: Path, name: str) -> Path:
    path = run_dir / live_transcripts.LIVE / name
    path.write_bytes(b'{"live_attempt": 1}\n')
    return path


def test_a_record_removes_its_attempt_s_live_file_and_only_that(tmp_path: Path) -> None:
    writer = ResultsWriter.create(tmp_path / "r", {"run_id": "r"})
    k = key()
    first, second, other = (_live(writer.run_dir, n) for n in (k.events_name(1), k.events_name(2), "x.jsonl"))
    writer.append(record(k, attempt=1, final=False))
    assert not first.exists() and second.exists() and other.exists()
    writer.close()
    assert not (writer.run_dir / live_transcripts.LIVE).exists()


def _killed_run(run_dir: Path) -> None:
    """A run whose process is SIGKILLed while an attempt runs: it leaves the live file."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from orchestrator.results.store import ResultsWriter
        w = ResultsWriter.create(__import__("pathlib").Path({str(run_dir)!r}), {{"run_id": "k"}})
        (w.run_dir / "live" / "c__m__0__1.jsonl").write_bytes(b'{{"live_attempt": 1}}\\n')
        print("running", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "running\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert RunLock.held(run_dir) is None and (run_dir / "live" / "c__m__0__1.jsonl").exists()


def test_what_a_killed_run_left_goes_with_its_resume(tmp_path: Path) -> None:
    _killed_run(tmp_path / "k")
    writer = ResultsWriter.resume(tmp_path / "k")
    try:
        assert list((tmp_path / "k" / live_transcripts.LIVE).iterdir()) == []
    finally:
        writer.close()


def test_what_a_killed_run_left_goes_with_the_next_run_beside_it_but_a_live_run_s_stays(
    tmp_path: Path,
) -> None:
    _killed_run(tmp_path / "k")
    alive = ResultsWriter.create(tmp_path / "a", {"run_id": "a"})
    running = _live(alive.run_dir, "c__m__0__1.jsonl")
    nxt = ResultsWriter.create(tmp_path / "n", {"run_id": "n"})
    try:
        assert not (tmp_path / "k" / live_transcripts.LIVE).exists()
        assert running.exists()  # its owner lives: its attempts are running
    finally:
        nxt.close()
        alive.close()


def test_only_plain_transcript_names_are_live_file_names() -> None:
    assert live_transcripts.valid_name("c__m__0__1.jsonl")
    for bad in ("../x.jsonl", "a/b.jsonl", ".hidden.jsonl", "x.txt", "a\\b.jsonl", "x\x00.jsonl"):
        assert not live_transcripts.valid_name(bad)


def _rows() -> list[dict[str, Any]]:
    """Rows of recorded hosts' transcripts, and rows made to try the redactor's every rule."""
    rows: list[dict[str, Any]] = []
    for name in ("long-stream-3.52.1.jsonl", "subtask-3.52.1.jsonl", "tool-failure-3.52.1.jsonl"):
        rows += [
            transcript_row(t, n, raw) for n, (t, raw) in enumerate(HostScript.recorded(name).after_start)
        ]
    nested = json.dumps({"apiKey": "sk-live-123456", "tokensIn": 5, "note": 'say "token": "x"'})
    rows += [
        {"t": 1, "event": {"configuration": {"openRouterApiKey": "sk-or-abc", "mode": "code"}}},
        {"t": 2, "event": {"payload": [{"totalTokensIn": 5, "accessToken": "", "Password": "hunter22"}]}},
        {"t": 3, "event": {"text": nested, "list": ("a", "sk-or-abc", 3)}},
        {"t": 4, "event": {"text": "token " * 50 + "the sk-or-abc key"}},
        {"t": 5, "event": {'we"ird\\key': "v", "ok": "abc"}},
        {"t": 6, "event": {"text": 'short secret ab and a quote"d one'}},
    ]
    return rows


def test_encoding_is_the_redactor_s_whatever_the_secrets() -> None:
    rows = _rows()
    for secrets in ([], ["sk-or-abc"], ["hunter22", "code"], ["ab"], ['quote"d'], ["totalTokensIn"]):
        redactor = Redactor(secrets)
        slow = b"".join(orjson.dumps(redactor(dict(row))) + b"\n" for row in rows)
        assert live_transcripts.encode(rows, redactor) == slow, secrets
