"""A worker's workspaces (:class:`orchestrator.run.attempt_hosts.AttemptHosts`): every attempt gets an
empty private directory of its own name, and an ended attempt's empty one is renamed for the next
(a rename instead of an rmdir and a mkdir, a tenth of their CPU on ext4)."""

from __future__ import annotations

import asyncio
import os
import stat
import textwrap
from pathlib import Path

from orchestrator.run.attempt_hosts import AttemptHosts
from orchestrator.run.jobs import Job, WorkerConfig
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan


def hosts_and_job(tmp: Path) -> tuple[AttemptHosts, Job, Path]:
    (tmp / "host.sock").touch()
    suite = tmp / "suite.yaml"
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
    work = tmp / "work"
    work.mkdir()
    config = WorkerConfig(
        run_id="r", connection_file="", runtime_dir=str(work), work_dir=str(work), target=loaded.target
    )
    return AttemptHosts(config, 1), Job(build_plan(loaded).attempts[0], number=1), work


def fresh(path: Path) -> bool:
    return path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o700 and not any(path.iterdir())


def test_an_empty_workspace_is_renamed_for_the_next_attempt(tmp_path: Path) -> None:
    hosts, job, work = hosts_and_job(tmp_path)

    async def main() -> None:
        first = hosts.workspace(job)
        assert fresh(first) and first.parent == work and first.name.startswith(job.attempt.key.slug)
        inode = first.stat().st_ino
        await hosts.release(first)
        second = hosts.workspace(job)
        assert second != first and not first.exists() and fresh(second)
        assert second.stat().st_ino == inode  # the same directory, under a name of its own
        third = hosts.workspace(job)  # none spare: a new one
        assert fresh(third) and third.stat().st_ino != inode
        await hosts.release(second)
        await hosts.release(third)
        assert len(list(work.iterdir())) == 2
        await hosts.close()
        assert list(work.iterdir()) == []

    asyncio.run(main())


def test_a_used_workspace_is_removed_not_reused(tmp_path: Path) -> None:
    hosts, job, work = hosts_and_job(tmp_path)

    async def main() -> None:
        written, opened = hosts.workspace(job), hosts.workspace(job)
        (written / "sub").mkdir()
        (written / "sub" / "file").write_text("agent output")
        os.chmod(opened, 0o755)  # emptied, but not as it was made
        await hosts.release(written)
        await hosts.release(opened)
        assert list(work.iterdir()) == []
        again = hosts.workspace(job)
        assert fresh(again)
        await hosts.release(again)
        await hosts.close()
        assert list(work.iterdir()) == []

    asyncio.run(main())
