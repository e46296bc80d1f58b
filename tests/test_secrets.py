"""Secrets stay secret: no output of a run shows one, and no child process gets one it does not need.

The suite's key comes from ``${TEST_KEY}`` and reaches the host in StartNewTask's configuration; the
simulated agent then echoes it wherever an agent could (its text, a command's output, a file the check
prints, its completion, an API error), and a setup command quotes it in its failure. Another secret,
``OPENAI_API_KEY``, is only in the orchestrator's environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet
import pytest

from ipc_bridge.server.launcher import start_bridge_process, sync_request
from ipc_bridge.wire.messages import HeartbeatRequest
from orchestrator.processes.child_env import withheld
from orchestrator.suite.config import load_suite
from orchestrator.suite.yaml_loader import SuiteError
from tests.runs import EXERCISES, SECRET, cmdline, descendants, orchestrate, running
from tests.runs import simulator_suite as _suite

pytestmark = pytest.mark.timeout(180)

OTHER = "sk-other-7e5d3c91"
"""A well-known secret variable's value, in the orchestrator's environment only."""
ENV = {"ORCHESTRATE_LOG_LEVEL": "DEBUG", "OPENAI_API_KEY": OTHER, "SAME_AGAIN": SECRET}
"""Also the suite's key under a name that neither looks secret nor is referred to."""


def _dump_env(path: Path) -> str:
    """A command that writes its environment to ``path`` as JSON."""
    script = path.parent / "dump_env.py"
    script.write_text("import json, os, sys\njson.dump(dict(os.environ), open(sys.argv[1], 'w'))\n")
    return f"python3 {script} {path}"


def _echoing_cases(out: Path) -> str:
    return f"""
    - id: echo
      prompt: Implement two_fer.
      workspace: {EXERCISES}/python/two-fer
      env: {{CASE_VAR: from-case}}
      setup:
        - {_dump_env(out / "setup-env.json")}
      check: {_dump_env(out / "check-env.json")} && cat notes.txt && python3 -m unittest -q
      simulate:
        text: "the key is {SECRET}"
        files:
          notes.txt: "my notes: {SECRET}"
          two_fer.py: |
            def two_fer(name="you"):
                return f"One for {{name}}, one for me."
        tools:
          - {{tool: execute_command, command: "echo $KEY", output: "{SECRET}"}}
        completion: "Done; I used {SECRET}."
    - id: api-down
      prompt: Implement leap_year.
      simulate: {{outcome: api_error_noauto, error: {{status: 401, message: "401 bad key {SECRET}"}}}}
    - id: setup-fails
      prompt: Implement leap_year.
      setup: ["echo 'token {SECRET}' && exit 3"]
    """


def _with_defaults_env(suite: Path) -> Path:
    text = suite.read_text()
    suite.write_text(
        text.replace("  ask_timeout: 1s\n", "  ask_timeout: 1s\n  env: {SUITE_VAR: from-defaults}\n")
    )
    return suite


def _files_of(run_dir: Path) -> dict[Path, str]:
    texts = {}
    for path in run_dir.rglob("*"):
        if path.suffix == ".parquet":
            # compressed columns: look at the values, not the bytes
            texts[path] = str(pyarrow.parquet.read_table(path).to_pylist())
        elif path.is_file():
            texts[path] = path.read_text()
    return texts


def test_no_output_of_a_run_shows_a_secret_the_agent_echoes(tmp_path: Path) -> None:
    suite = _with_defaults_env(_suite(tmp_path, _echoing_cases(tmp_path)))
    results = tmp_path / f"results-of-{SECRET}"  # a secret in a path is shown redacted too
    res = orchestrate("run", str(suite), "--results", str(results), "--run-id", "r1", "--json", env_extra=ENV)
    assert res.returncode == 0, res.stderr
    # Every process logged at DEBUG (workers on this stderr, the bridge into bridge.log).
    assert "DEBUG worker-" in res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    final = {line["case_id"]: line for line in lines if line["type"] == "attempt" and line["final"]}
    # The echoes were there, and were redacted: the records say *** where the agent said the key.
    assert final["echo"]["metrics"]["completion"] == "Done; I used ***."
    assert "my notes: ***" in final["echo"]["check"]["output_tail"]
    assert final["echo"]["passed"] is True
    assert "401 bad key ***" in final["api-down"]["reason"]
    assert "token ***" in final["setup-fails"]["error"]
    assert lines[-1]["run_dir"] == str(tmp_path / "results-of-***" / "r1")
    assert SECRET not in res.stdout
    assert SECRET not in res.stderr
    files = _files_of(results / "r1")
    assert any("the key is ***" in text for text in files.values())  # the transcript
    for path, text in files.items():
        assert SECRET not in text, path


def test_setup_and_check_run_with_a_minimal_environment_and_the_suites_env(tmp_path: Path) -> None:
    suite = _with_defaults_env(_suite(tmp_path, _echoing_cases(tmp_path).split("- id: api-down")[0]))
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--quiet", env_extra=ENV)
    assert res.returncode == 0, res.stderr
    for name in ("setup-env.json", "check-env.json"):
        env: dict[str, str] = json.loads((tmp_path / name).read_text())
        assert "TEST_KEY" not in env and "OPENAI_API_KEY" not in env, name
        assert SECRET not in env.values() and OTHER not in env.values(), name
        assert env["SUITE_VAR"] == "from-defaults" and env["CASE_VAR"] == "from-case", name
        assert env["PATH"], name
        # a minimal base, not the orchestrator's environment with a few names taken out
        assert "ORCHESTRATE_LOG_LEVEL" not in env, name


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def test_no_child_process_inherits_a_secret(tmp_path: Path) -> None:
    """The bridge, the workers (and multiprocess's resource tracker) and the hosts, read from
    /proc/PID/environ while the run goes; a host gets its target's ``env:``."""
    target = (
        "{kind: command, slots: 2, env: {HOST_VAR: from-target}, argv: ["
        f"{sys.executable}, -m, orchestrator, simulate, --time-scale, '0.05', --status-delay, '0.1']}}"
    )
    suite = _suite(
        tmp_path,
        """
        - {id: quick, prompt: p}
        - {id: slow, prompt: p, simulate: {outcome: hang}}
        """,
    )
    text = suite.read_text()
    start = text.index("target: ")
    suite.write_text(text[:start] + f"target: {target}\n" + text[text.index("\n", start) + 1 :])
    with running(suite, tmp_path / "r", env=ENV) as (proc, first):
        assert first["type"] == "attempt", first
        children: dict[int, dict[str, Any]] = {}
        for pid in descendants(proc.pid):
            children[pid] = {"cmd": cmdline(pid), "env": _environ(pid)}
        hosts = [c for c in children.values() if b"simulate" in c["cmd"]]
        bridges = [c for c in children.values() if b"ipc_bridge.server.cli" in c["cmd"]]
        workers = [c for c in children.values() if b"multiprocess" in c["cmd"]]
        assert hosts and bridges and workers, [c["cmd"] for c in children.values()]
        for child in children.values():
            env = child["env"]
            assert "TEST_KEY" not in env and "OPENAI_API_KEY" not in env, child["cmd"]
            assert SECRET not in env.values() and OTHER not in env.values(), child["cmd"]
        assert all(host["env"].get("HOST_VAR") == "from-target" for host in hosts)
        assert all("ROO_CODE_IPC_SOCKET_PATH" in host["env"] for host in hosts)


def test_the_bridge_redacts_the_secrets_it_is_given_from_its_log(sockdir: Path) -> None:
    """Told through a pipe (never its environment or command line), the bridge shows a secret that a
    client's bad request quotes as *** in its log."""
    log_path = sockdir / "bridge.log"
    with open(log_path, "ab") as log_file:
        bridge = start_bridge_process(sockdir / "b", stderr=log_file, secrets=[SECRET])
    try:
        assert SECRET.encode() not in Path(f"/proc/{bridge.pid}/cmdline").read_bytes()
        assert SECRET not in _environ(bridge.pid).values()
        reply = sync_request(bridge.connection, f"no-such-{SECRET}", HeartbeatRequest(), timeout=30)
        assert reply is not None
    finally:
        bridge.stop()
    text = log_path.read_text()
    assert "no-such-***" in text
    assert SECRET not in text


def test_a_suite_error_that_quotes_a_value_shows_a_secret_redacted(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\ndefaults: {timeout: '${TEST_KEY}'}\ncases: [{id: a, prompt: p}]\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(suite, env={"TEST_KEY": SECRET})
    assert "timeout" in str(caught.value) and "***" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_which_variables_children_do_not_inherit(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\ndefaults: {configuration: {openRouterBaseUrl: '${MY_ENDPOINT}'}}\n"
        "cases: [{id: a, prompt: p, workspace: '${HOME_DIR}/x'}]\n"
    )
    (tmp_path / "home" / "x").mkdir(parents=True)
    env = {"MY_ENDPOINT": "https://example.invalid/v1", "HOME_DIR": str(tmp_path / "home")}
    referenced = load_suite(suite, env=env).referenced_env
    assert referenced == {"MY_ENDPOINT", "HOME_DIR"}
    # what the suite refers to, whatever looks secret (referred to or not), a secret under another name
    for name in ("MY_ENDPOINT", "HOME_DIR", "OPENAI_API_KEY", "GITHUB_TOKEN", "PGPASSWORD", "aws_secret"):
        assert withheld(name, "some value", referenced), name
    assert withheld("ALIAS", SECRET, secrets={SECRET})
    # a ${HOME} or ${PATH} in a path makes neither a secret for anyone; short values are not searched
    for name in ("PATH", "HOME", "LC_ALL"):
        assert not withheld(name, SECRET, referenced | {"PATH", "HOME", "LC_ALL"}, {SECRET}), name
    for name in ("DISPLAY", "XAUTHORITY", "SSH_AUTH_SOCK"):
        assert not withheld(name, ":0", referenced, {SECRET}), name
    assert not withheld("DEBUG", "1", secrets={"1"})


def test_a_secret_in_a_hosts_argv_is_redacted_from_the_workers_log(tmp_path: Path) -> None:
    """A command target's argv with the key in a path: the worker logs it at DEBUG as it launches the
    host; the line is there, redacted."""
    script_dir = tmp_path / f"scripts-{SECRET}"
    script_dir.mkdir()
    (script_dir / "script.yaml").write_text("completion: Done.\n")
    target = (
        f"{{kind: command, slots: 1, argv: [{sys.executable}, -m, orchestrator, simulate, --time-scale, "
        f"'0.05', --status-delay, '0.1', --script, '{script_dir / 'script.yaml'}']}}"
    )
    suite = _suite(tmp_path, "- {id: a, prompt: p}\n")
    text = suite.read_text()
    start = text.index("target: ")
    suite.write_text(text[:start] + f"target: {target}\n" + text[text.index("\n", start) + 1 :])
    res = orchestrate(
        "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--json", env_extra=ENV
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[0])["status"] == "completed"
    launched = [line for line in res.stderr.splitlines() if "host pid" in line]
    assert launched and all("scripts-***" in line for line in launched), res.stderr
    assert SECRET not in res.stderr + res.stdout
    for path, content in _files_of(tmp_path / "r" / "r").items():
        assert SECRET not in content, path


REDACTED_PROCESS = """
import logging, sys, warnings
import click
from tqdm import tqdm
from ipc_bridge.redaction import Redactor, RedactingStream, redact_process_output
logging.basicConfig(level="DEBUG")  # before: its handler holds the stderr of the time
redact_process_output(Redactor(["SECRET"]))
redact_process_output(Redactor(["SECRET"]))
assert not isinstance(sys.stdout.stream, RedactingStream)  # twice: still one layer
logging.getLogger("x").debug("log %s", "SECRET")
click.echo("echo SECRET")
click.echo("echo-err SECRET", err=True)
print("print SECRET", flush=True)
sys.stderr.write("write SECRET\\n")
bar = tqdm(total=1, file=sys.stderr)
bar.set_postfix(k="SECRET", refresh=True)
bar.close()
warnings.warn("warn SECRET")
raise RuntimeError("boom SECRET")
"""


def test_every_writer_of_a_process_goes_through_its_redaction() -> None:
    """logging (configured before), click, print, tqdm, warnings and an uncaught exception's traceback."""
    res = subprocess.run(
        [sys.executable, "-c", REDACTED_PROCESS.replace("SECRET", SECRET)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    out, err = res.stdout, res.stderr
    assert "echo ***" in out and "print ***" in out
    for shown in ("log ***", "echo-err ***", "write ***", "k=***", "warn ***", "RuntimeError: boom ***"):
        assert shown in err, (shown, err)
    assert SECRET not in out + err
