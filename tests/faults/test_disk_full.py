"""A full disk or an unwritable results directory: a clear error, a distinct exit code, and no partial
state that a resume chokes on.

CI runs as root, so permission bits cannot make a directory unwritable. A full disk is simulated with
RLIMIT_FSIZE in a child process (SIGXFSZ ignored, so a write past the limit fails with EFBIG after writing
what fits: exactly the torn line a full disk leaves); the run's workers, bridge and hosts inherit it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.results.records import RESULTS, read_records
from orchestrator.results.store import load
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
EXERCISES = ROOT / "configs" / "exercises" / "python"

pytestmark = pytest.mark.timeout(180)

LIMITED = """\
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""
"""Prefix of a child's script: no file may grow past argv[1] bytes (inherited by its own children)."""

CLI = LIMITED + "from orchestrator.cli.main import main\nmain(prog_name='orchestrate')\n"

PAD = 6000
"""Characters each check prints: a record (with the check's output tail) is ~7-9 kB, more than the
manifest (~4 kB) or a transcript (<= 5 kB), so a limit of ~1.5 records fails the second append."""


def orchestrate(*args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    """``orchestrate ARGS`` in a child process (own session; whatever it leaves behind is killed)."""
    argv = (
        [sys.executable, "-c", CLI, str(limit)]
        if limit is not None
        else [sys.executable, "-m", "orchestrator"]
    )
    proc = subprocess.Popen(
        [*argv, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def write_suite(tmp: Path, cases: list[tuple[str, str, dict[str, str]]]) -> Path:
    """A suite of quick simulated cases: (id, exercise, the file the simulated agent writes)."""
    check = f"python3 -m unittest -q; s=$?; python3 -c \"print('.' * {PAD})\"; exit $s"
    text = textwrap.dedent(
        """\
        name: disk
        target: {kind: simulator, slots: 2, options: {time_scale: 0.05, status_delay: 0.1}}
        defaults: {timeout: 30s, retries: 1, retry_backoff: 100ms}
        cases:
        """
    )
    for case_id, exercise, solution in cases:
        text += f"  - id: {case_id}\n    prompt: Solve {exercise}.\n    workspace: {EXERCISES / exercise}\n"
        text += f"    check: {json.dumps(check)}\n"
        text += f"    simulate: {{duration: 100ms, files: {json.dumps(solution)}}}\n"  # JSON is YAML
    path = tmp / "suite.yaml"
    path.write_text(text)
    return path


CASES = [
    (
        "two-fer",
        "two-fer",
        {"two_fer.py": 'def two_fer(name="you"):\n    return f"One for {name}, one for me."\n'},
    ),
    ("leap", "leap", {"leap.py": "def leap_year(year):\n    return year % 4 == 0\n"}),
    ("reverse", "reverse-string", {"reverse_string.py": "def reverse(text):\n    return text[::-1]\n"}),
    ("isogram", "isogram", {"isogram.py": "def is_isogram(string):\n    return True\n"}),
]


def assert_whole_lines(path: Path) -> list[dict[str, object]]:
    """Every line of results.jsonl is a complete JSON record: nothing torn for a resume to cut."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_mid_run_exits_3_leaves_whole_records_and_the_run_resumes_to_completion(
    tmp_path: Path,
) -> None:
    suite = write_suite(tmp_path, CASES)
    results = tmp_path / "results"
    run_dir = results / "r"

    full = orchestrate("run", str(suite), "--results", str(results), "--run-id", "r", "-q", limit=12_000)
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    (message,) = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert f"cannot write {run_dir / RESULTS}" in message
    assert "File too large (EFBIG)" in message
    assert "--resume r" in message and "Free space" in message
    written = assert_whole_lines(run_dir / RESULTS)
    assert 1 <= len(written) < len(CASES)  # the disk filled mid-run
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == "r"
    assert not [p for p in run_dir.rglob("*.tmp")]  # no half-written temp file either

    again = orchestrate("run", str(suite), "--results", str(results), "--resume", "r", "-q")
    assert again.returncode == 0, again.stderr
    assert "torn" not in again.stderr  # nothing was left to repair

    records = read_records(run_dir / RESULTS)
    plan = build_plan(load_suite(suite))
    finals = Counter(r.key for r in records if r.final)
    assert finals == Counter({a.key: 1 for a in plan})
    numbers = Counter((r.case_id, r.model_id, r.repeat, r.attempt) for r in records)
    assert max(numbers.values()) == 1
    assert records[: len(written)] == read_records(run_dir / RESULTS)[: len(written)]
    frame = load(run_dir)
    assert sorted(frame["case_id"]) == sorted(c for c, _, _ in CASES)
    assert dict(zip(frame["case_id"], frame["passed"], strict=True)) == {
        "two-fer": True,
        "leap": False,
        "reverse": True,
        "isogram": False,
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["totals"]["attempts"] == len(CASES) and summary["stop_reason"] == "finished"


def test_summary_and_manifest_that_cannot_be_written_at_the_end_give_exit_3_not_a_traceback(
    tmp_path: Path,
) -> None:
    suite = write_suite(tmp_path, CASES[:1])
    results = tmp_path / "results"
    run_dir = results / "r"
    args = ["run", str(suite), "--results", str(results), "--resume", "r", "-q"]
    assert orchestrate("run", str(suite), "--results", str(results), "--run-id", "r", "-q").returncode == 0
    before = (run_dir / RESULTS).read_bytes()

    # summary.json cannot be replaced (a directory stands there)
    (run_dir / "summary.json").unlink()
    (run_dir / "summary.json").mkdir()
    res = orchestrate(*args)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    (message,) = res.stderr.splitlines()
    assert f"cannot write {run_dir / 'summary.json'}" in message and "--resume r" in message
    (run_dir / "summary.json").rmdir()

    # the manifest (~4 kB) cannot be rewritten with its end time: the disk is full
    res = orchestrate(*args, limit=2_000)
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    (message,) = res.stderr.splitlines()
    assert f"cannot write {run_dir / 'manifest.json'}" in message and "EFBIG" in message
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == "r"  # the old one, whole
    assert (run_dir / RESULTS).read_bytes() == before
    assert not [p for p in run_dir.rglob("*.tmp")]

    # with space again, a resume writes both and reports success
    res = orchestrate(*args)
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "summary.json").read_text())["totals"]["attempts"] == 1
    assert json.loads((run_dir / "manifest.json").read_text())["ended_at"]


@pytest.mark.parametrize("blocker", ["parent-is-a-file", "results-below-a-file"])
def test_a_results_directory_that_cannot_be_created_is_a_clear_error_before_anything_starts(
    tmp_path: Path, blocker: str
) -> None:
    suite = write_suite(tmp_path, CASES[:1])
    wall = tmp_path / "a-file"
    wall.write_text("in the way\n")
    results = wall / "results" if blocker == "parent-is-a-file" else wall / "deeper" / "results"
    res = CliRunner().invoke(main, ["run", str(suite), "--results", str(results), "--run-id", "r"])
    assert res.exit_code == 3, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    (message,) = res.stderr.splitlines()
    assert message.startswith("error: cannot write ") and "Not a directory (ENOTDIR)" in message
    assert "nothing was started" in message and "--results" in message
    assert res.stdout == ""
    assert wall.read_text() == "in the way\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "suite.yaml"]


def test_results_option_naming_a_file_is_refused_by_the_command_line(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, CASES[:1])
    (tmp_path / "a-file").write_text("x")
    res = CliRunner().invoke(main, ["run", str(suite), "--results", str(tmp_path / "a-file")])
    assert res.exit_code == 2
    assert "is a file" in res.stderr


# --------------------------------------------------------------------------- the writer on its own

WRITER = LIMITED + textwrap.dedent(
    """\
    import json, resource
    from datetime import datetime, timezone
    from pathlib import Path
    from orchestrator.outcome import Status
    from orchestrator.results.store import AttemptRecord, ResultsWriteError, ResultsWriter

    now = datetime.now(timezone.utc)
    def record(n):
        return AttemptRecord(run_id="w", case_id=f"c{n}", model_id="m", repeat=0, config_hash="h",
                             attempt=1, final=True, status=Status.COMPLETED, passed=True, reason="x" * 3000,
                             started_at=now, ended_at=now, duration_s=0.0)
    writer = ResultsWriter.create(Path(sys.argv[1]), {"run_id": "w"})
    n = 0
    try:
        while True:
            writer.append(record(n))
            n += 1
    except ResultsWriteError as exc:
        failed = {"n": n, "message": str(exc), "errno": exc.errno}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    writer.append(record(n))  # space again: the same record goes in whole, after the last complete one
    writer.close()
    print(json.dumps(failed))
    """
)


def test_a_failed_append_cuts_the_partial_line_and_the_writer_goes_on_when_space_returns(
    tmp_path: Path,
) -> None:
    import errno

    run_dir = tmp_path / "w"
    res = subprocess.run(
        [sys.executable, "-c", WRITER, "10000", str(run_dir)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    failed = json.loads(res.stdout)
    assert failed["n"] >= 1  # a few ~3.4 kB records fit in 10,000 bytes; the next one was cut
    assert failed["errno"] == errno.EFBIG
    assert failed["message"] == f"cannot write {run_dir / RESULTS}: File too large (EFBIG)"
    lines = assert_whole_lines(run_dir / RESULTS)
    expected = [f"c{n}" for n in range(failed["n"] + 1)]
    assert [line["case_id"] for line in lines] == expected
    assert [r.case_id for r in read_records(run_dir / RESULTS)] == expected
