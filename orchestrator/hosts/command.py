"""The command target: any host, launched from the suite's command line with ``{socket}``,
``{workspace}`` and ``{slot}`` filled in (the Roo CLI is one: README)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.hosts.host import HostPlace
from orchestrator.hosts.launched import ProcessProvider
from orchestrator.hosts.process import LaunchCommand
from orchestrator.suite.targets import CommandTarget


def fill_placeholders(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """``{socket}``, ``{workspace}``, ``{slot}`` in a user's command line, with ``{{`` and ``}}`` for
    literal braces: the format-string grammar the suite's validator checked (it refused any other field,
    so no attribute or index lookup reaches here)."""
    formatter = string.Formatter()
    return [formatter.vformat(arg, (), values) for arg in argv]


@dataclass(frozen=True)
class CommandProvider(ProcessProvider[CommandTarget]):
    def command(self, place: HostPlace) -> LaunchCommand:
        values = {"socket": place.socket_path, "workspace": str(place.workspace), "slot": place.slot}
        env = {k: fill_placeholders([v], values)[0] for k, v in self.target.env.items()}
        return LaunchCommand(fill_placeholders(self.target.argv, values), env, cwd=self.target.cwd)
