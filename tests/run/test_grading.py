"""Check commands: exit status, output tail, timeouts that kill the whole process group."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from orchestrator.results.records import CheckResult
from orchestrator.run.grading import run_command

pytestmark = pytest.mark.timeout(30)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def dead(pid: int, timeout: float = 3.0) -> bool:
    """Whether the process is gone within ``timeout`` (SIGKILL is delivered asynchronously: a killed
    process may still be running its exit for a moment)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_line_file(path)
        if text is not None:
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was not written")


def read_line_file(path: Path) -> str | None:
    """The file's text once its line is complete."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text if text.endswith("\n") else None


async def test_passing_shell_check_in_its_workspace(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    result = await run_command(
        'cat marker.txt && echo " $EXTRA" && echo err >&2', tmp_path, timeout=10, env={"EXTRA": "from-env"}
    )
    assert isinstance(result, CheckResult)
    assert result.passed and result.exit_code == 0 and not result.timed_out
    assert "here from-env" in result.output_tail and "err" in result.output_tail
    assert 0 < result.duration < 10


async def test_failing_argv_check(tmp_path: Path) -> None:
    result = await run_command(
        [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path, timeout=10
    )
    assert not result.passed and result.exit_code == 3
    assert "boom" in result.output_tail


async def test_command_that_cannot_start(tmp_path: Path) -> None:
    result = await run_command(["/nonexistent/check-binary"], tmp_path, timeout=5)
    assert not result.passed and result.exit_code is None
    assert "cannot start" in result.output_tail
    shell = await run_command("/nonexistent/check-binary", tmp_path, timeout=5)
    assert not shell.passed and shell.exit_code == 127


async def test_output_tail_is_bounded(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 300000 + 'THE-END')"
    result = await run_command([sys.executable, "-c", script], tmp_path, timeout=10, tail_bytes=1000)
    assert result.passed
    assert result.output_tail.endswith("THE-END")
    assert len(result.output_tail) < 1100
    assert result.output_tail.startswith("[... 299007 bytes omitted]")


KILL_SCRIPT = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    # the grandchild: ignores SIGTERM too (inherited), and keeps the output pipe open
    with open(sys.argv[1] + ".child", "w") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(600)
    os._exit(0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.getpid()}\\n")
print("started", flush=True)
time.sleep(600)
"""


async def test_timeout_kills_the_whole_group_including_grandchildren_ignoring_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = tmp_path / "hang.py"
    script.write_text(KILL_SCRIPT)
    task = asyncio.ensure_future(
        run_command([sys.executable, str(script), str(pidfile)], tmp_path, timeout=1.5, kill_grace=0.5)
    )
    parent = int(await wait_for_file(pidfile))
    child = int(await wait_for_file(Path(f"{pidfile}.child")))
    assert alive(parent) and alive(child)
    start = time.monotonic()
    result = await asyncio.wait_for(task, 10)
    assert time.monotonic() - start < 5  # timeout + grace + a little, not the 600 s sleep
    assert result.timed_out and not result.passed
    assert result.exit_code == -9  # SIGTERM was ignored, SIGKILL ended it
    assert "started" in result.output_tail
    assert await dead(parent)
    assert await dead(child)


async def test_leftover_background_process_does_not_hold_the_check(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    start = time.monotonic()
    result = await run_command(f"(sleep 600 & echo $! > {pidfile}); echo done", tmp_path, timeout=10)
    assert time.monotonic() - start < 5
    assert result.passed and "done" in result.output_tail
    background = int(pidfile.read_text())
    assert await dead(background)


async def test_cancelling_the_caller_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = tmp_path / "hang.py"
    script.write_text(KILL_SCRIPT)
    task = asyncio.ensure_future(
        run_command([sys.executable, str(script), str(pidfile)], tmp_path, timeout=60)
    )
    parent = int(await wait_for_file(pidfile))
    child = int(await wait_for_file(Path(f"{pidfile}.child")))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await dead(parent) and await dead(child)


async def test_runs_in_its_own_session(tmp_path: Path) -> None:
    result = await run_command(
        [sys.executable, "-c", "import os; print(os.getsid(0), os.getpid())"], tmp_path, timeout=10
    )
    child_sid, child_pid = (int(field) for field in result.output_tail.split())
    # The check leads its own session (so killpg reaches every descendant), which is not ours.
    # Our own sid may be anything, even 0 inside a container, so only inequality is asserted.
    assert child_sid == child_pid
    assert child_sid != os.getsid(0)
