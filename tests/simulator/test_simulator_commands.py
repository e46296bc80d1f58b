"""execute_command in the simulator: run for real in the task's workspace by default (as the engine runs
it), with a timeout, its output capped and redacted, and no secret-looking environment variable; a script
that gives ``output`` (or ``run: false``) shows that output instead."""

from __future__ import annotations

from typing import Any

import pytest

from ipc_bridge.roo.extension import ExtensionConnection
from ipc_bridge.simulator.host import SimulatorHost
from ipc_bridge.simulator.script import parse_script
from ipc_bridge.simulator.tools import OUTPUT_LIMIT
from tests.simulator.sim_events import Event, collect, named, start_cmd

pytestmark = pytest.mark.timeout(20)


def command_outputs(events: list[Event]) -> list[str]:
    return [
        e["payload"][0]["message"]["text"]
        for e in events
        if e["eventName"] == "message"
        and e["payload"][0]["message"].get("say") == "command_output"
        and not e["payload"][0]["message"].get("partial")
    ]


async def run_tools(client: ExtensionConnection, tools: list[dict[str, Any]], **config: Any) -> list[str]:
    await client.send_command(start_cmd({"tools": tools}, **config))
    return command_outputs(await collect(client, named("taskIdle")))


@pytest.mark.parametrize(
    ("call", "runs"),
    [
        ({}, True),
        ({"run": True}, True),
        ({"output": "scripted"}, False),
        ({"run": False}, False),
        ({"run": True, "output": "ignored"}, True),
    ],
)
def test_a_command_runs_unless_its_output_is_scripted(call: dict[str, Any], runs: bool) -> None:
    script = parse_script({"tools": [{"tool": "execute_command", "command": "true", **call}]})
    assert script.tools[0].runs is runs


async def test_a_command_runs_in_the_workspace_by_default(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    assert host.workspace is not None
    (host.workspace / "hello.py").write_text('print("hello")\n')
    outputs = await run_tools(
        client,
        [
            {"tool": "execute_command", "command": "python3 hello.py; echo made > out.txt"},
            {"tool": "execute_command", "command": "rm out.txt", "output": "scripted"},
        ],
    )
    assert outputs == ["hello\n", "scripted"]  # the real output, then the scripted one (not run)
    assert (host.workspace / "out.txt").read_text() == "made\n"


async def test_a_command_past_its_timeout_is_killed_with_what_it_started(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    command = "sleep 60 & echo started; sleep 60"  # the background sleep holds the output pipe too
    # not 60 s: the whole process group is killed
    outputs = await run_tools(client, [{"tool": "execute_command", "command": command, "run_timeout": 0.5}])
    assert outputs == ["started\n"]


async def test_a_command_output_is_capped_like_the_engines(
    host: SimulatorHost, client: ExtensionConnection
) -> None:
    command = "python3 -c \"import sys; sys.stdout.write('a' * 300000 + 'b' * 100000)\""
    [output] = await run_tools(client, [{"tool": "execute_command", "command": command}])
    head, tail = OUTPUT_LIMIT // 5, OUTPUT_LIMIT - OUTPUT_LIMIT // 5
    omitted = 400_000 - OUTPUT_LIMIT
    assert output == "a" * head + f"\n[...{omitted} characters omitted...]\n" + "b" * tail


async def test_a_command_sees_no_secret_and_shows_none(
    host: SimulatorHost, client: ExtensionConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host.workspace is not None
    monkeypatch.setenv("SIM_TEST_API_KEY", "env-secret-1234")
    monkeypatch.setenv("SIM_TEST_PLAIN", "plain-value")
    # the secrets reach the workspace some other way: they are still redacted out of the output
    (host.workspace / "leak.txt").write_text("env-secret-1234 sk-config-5678\n")
    command = 'echo "[$SIM_TEST_API_KEY] [$SIM_TEST_PLAIN]"; cat leak.txt'
    outputs = await run_tools(
        client, [{"tool": "execute_command", "command": command}], openRouterApiKey="sk-config-5678"
    )
    assert outputs == ["[] [plain-value]\n*** ***\n"]
