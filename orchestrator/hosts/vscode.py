"""The vscode target: ``code -n WORKSPACE`` per attempt, as Roo's own runner launches it, with a
user-data-dir of its own and under ``xvfb-run`` when there is no display."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.hosts.host import HostError, HostPlace
from orchestrator.hosts.launched import ProcessProvider
from orchestrator.hosts.process import LaunchCommand
from orchestrator.suite.targets import VscodeTarget


def vscode_argv(code: str, workspace: Path, user_data_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """``code -n WORKSPACE`` as Roo's own runner launches it (protocol 4), one user-data-dir per host."""
    exe = shutil.which(code) or code
    return [
        exe,
        "--wait",
        "--disable-workspace-trust",
        "--disable-gpu",
        "--no-sandbox",
        "--password-store=basic",
        f"--user-data-dir={user_data_dir}",
        *extra,
        "-n",
        str(workspace),
    ]


def xvfb_wrap(argv: list[str], mode: str) -> list[str]:
    """Wrap in ``xvfb-run -a`` when there is no display (``auto``), always (``on``) or never (``off``)."""
    want = mode == "on" or (mode == "auto" and not os.environ.get("DISPLAY"))
    if not want:
        return argv
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise HostError("no DISPLAY and xvfb-run is not installed (apt-get install xvfb), or set xvfb: off")
    return [xvfb, "-a", *argv]


@dataclass(frozen=True)
class VscodeProvider(ProcessProvider[VscodeTarget]):
    def command(self, place: HostPlace) -> LaunchCommand:
        target = self.target
        user_data = target.user_data_dir or place.work_dir / f"{place.slot}.vscode"
        extra = list(target.args)
        if target.extensions_dir:
            extra.append(f"--extensions-dir={target.extensions_dir}")
        xvfb = "auto" if target.xvfb == "auto" else ("on" if target.xvfb else "off")
        argv = xvfb_wrap(vscode_argv(target.code, place.workspace, user_data, extra), xvfb)
        return LaunchCommand(argv, dict(target.env))
