"""``orchestrate``: the command line. Subcommands load lazily so ``orchestrate --help`` stays fast."""

from __future__ import annotations

import importlib
import logging
import os

import click

# name -> ("module:attribute" of a click.Command, one-line help). The module is imported only when the
# command runs or shows its own help; the group's help uses the line here.
SUBCOMMANDS = {
    "run": ("orchestrator.cli.run:run", "Run a suite of eval cases and write results/<run-id>/."),
    "simulate": (
        "ipc_bridge.simulator.cli:simulate",
        "Serve a simulated Roo Code extension host on a socket.",
    ),
    "bridge": ("ipc_bridge.server.cli:bridge", "Run the node-ipc <-> ZeroMQ bridge process."),
    "watch": (
        "ipc_bridge.client.watch:watch",
        "Print a bridge's events as they come (locally, or over TCP + CURVE).",
    ),
    "report": (
        "orchestrator.cli.report:report",
        "Pass rate, cost, tokens and durations of a run, by model and tag.",
    ),
    "compare": (
        "orchestrator.cli.report:compare",
        "Per-case flips and cost/duration deltas between two runs.",
    ),
    "view": ("orchestrator.view.cli:view", "Browse runs in a web browser, live while they run."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        module = importlib.import_module(module_name)
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    default=lambda: os.environ.get("ORCHESTRATE_LOG_LEVEL", "WARNING"),
    show_default="WARNING, or $ORCHESTRATE_LOG_LEVEL",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level for messages on stderr.",
)
@click.version_option(package_name="roo-eval-orchestrator")
def main(log_level: str) -> None:
    """Run evaluation suites against Roo Code (and forks) in VS Code or the built-in simulator.

    \b
    orchestrate run configs/suite.yaml       run a suite, write results/<run-id>/
    orchestrate simulate --socket PATH       serve a simulated extension host on a socket
    orchestrate bridge --connection-file F   run the IPC <-> ZeroMQ bridge on its own
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
