"""Broken suites through the real command line: one message naming file, line, key and what to do;
exit code 2; nothing written. Each row is a whole suite file, the line the message must point at, the
key it must name (None where a YAML syntax error has no key), what it must say and the advice it gives.
The hostile rows (tests/faults/hostile_suites.py) add files beside the suite, or are a path that is no
suite file at all (line None: the message names the path)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli.main import main
from tests.faults.hostile_suites import HOSTILE, ONE_CASE, Spec, make_fixture_files, materialize, row

pytestmark = pytest.mark.timeout(60)

UNSET = "ORC_TEST_SURELY_UNSET_VAR"


ROWS = [
    # ------------------------------------------------------------------------------- YAML itself
    row("tab-indentation", "name: t\ncases:\n\t- {id: a, prompt: x}\n", 3, None, "'\\t'", "indent with spaces"),
    row("unclosed-bracket", "name: t\ncases: [{id: a, prompt: x}\n", 2, None, "never closed", "close it"),
    row("unclosed-quote", 'name: "t\ncases: []\n', 1, None, "end of stream", "close it"),
    row("unclosed-brace-then-key", "name: t\ncases:\n  - {id: a, prompt: x\nrepeats: 1\n", 4, None,
        "started on line 3", "fix the YAML"),
    row("duplicate-yaml-key", "name: t\nrepeats: 1\nrepeats: 2\n" + ONE_CASE, 3, "repeats",
        "duplicate key 'repeats' (first on line 2)", "keep only one"),
    row("unquoted-colon-in-value", "name: t\ncases:\n  - id: a\n    prompt: fix it: now\n", 4, None,
        "mapping values are not allowed", "must be quoted"),
    row("undefined-alias", "name: t\ncases: [*nope]\n", 2, None, "undefined alias 'nope'", "fix the YAML"),
    row("python-tag", "name: !!python/object:os.system x\n" + ONE_CASE, 1, None,
        "could not determine a constructor", "fix the YAML"),
    row("second-document", "name: t\n" + ONE_CASE + "---\nname: u\n", 3, None, "another document",
        "remove the '---' line"),
    row("empty-file", "", 1, None, "the file is empty", "start with 'name: ...'"),
    row("only-comments", "# nothing here\n", 1, None, "the file is empty", "start with 'name: ...'"),
    row("top-level-list", "- name: t\n- cases: []\n", 1, None, "the file is a list", "a mapping of keys"),
    row("non-utf8-bytes", b'name: t\ncases: [{id: a, prompt: "caf\xe9"}]\n', 2, None,
        "not UTF-8 text (byte 0xe9", "save it as UTF-8"),
    row("control-character", 'name: t\ncases: [{id: a, prompt: "x\x07"}]\n', 2, None,
        "control character '\\x07'", "remove it"),
    # ------------------------------------------------------------------------------ unknown keys
    row("unknown-top-level-key", "name: t\nrepeat: 2\n" + ONE_CASE, 2, "repeat", "unknown key 'repeat'",
        "keys allowed here: name, description, target, defaults, models, repeats"),
    row("unknown-target-key", "name: t\ntarget:\n  kind: simulator\n  sockts: 3\n" + ONE_CASE, 4,
        "target.sockts", "unknown key 'sockts'", "launch_timeout"),
    row("unknown-defaults-key", "name: t\ndefaults:\n  timout: 5m\n" + ONE_CASE, 3, "defaults.timout",
        "unknown key 'timout'", "remove it or fix its spelling"),
    row("unknown-case-key", "name: t\ncases:\n  - id: a\n    prompt: x\n    chek: 'true'\n", 5,
        "cases[0].chek", "unknown key 'chek'", "check_timeout"),
    row("simulate-unknown-outcome", "name: t\ncases:\n  - id: a\n    prompt: x\n    simulate: {outcome: exploded}\n",
        5, "cases[0].simulate", "outcome: Input should be 'completed'", "docs/simulator.md"),
    row("simulate-misspelt-key", "name: t\ncases:\n  - id: a\n    prompt: x\n    simulate:\n      durationn: 1s\n",
        5, "cases[0].simulate", "unknown key 'durationn'", "allowed here: chaos"),
    row("unknown-model-key", "name: t\nmodels:\n  - id: m\n    config: {}\n" + ONE_CASE, 4,
        "models[0].config", "unknown key 'config'", "configuration"),
    # ------------------------------------------------------------------------------- wrong types
    row("slots-zero", "name: t\ntarget:\n  kind: simulator\n  slots: 0\n" + ONE_CASE, 4, "target.slots",
        "greater than or equal to 1", "(got 0)"),
    row("slots-four-without-kind", "name: t\ntarget:\n  slots: four\n" + ONE_CASE, 3, "target.slots",
        "valid integer", "(got 'four')"),
    row("slots-yes", "name: t\ntarget: {kind: simulator, slots: yes}\n" + ONE_CASE, 2, "target.slots",
        "expected a whole number", "write a number"),
    row("prelaunch-negative", "name: t\ntarget: {kind: simulator, prelaunch: -1}\n" + ONE_CASE, 2,
        "target.prelaunch", "greater than or equal to 0", "(got -1)"),
    row("prelaunch-yes", "name: t\ntarget: {kind: vscode, prelaunch: yes}\n" + ONE_CASE, 2, "target.prelaunch",
        "expected a whole number", "write a number"),
    row("prelaunch-on-socket", "name: t\ntarget: {kind: socket, sockets: [a.sock], prelaunch: 1}\n" + ONE_CASE,
        2, "target.prelaunch", "unknown key 'prelaunch'", "allowed here"),
    row("retries-negative", "name: t\ndefaults:\n  retries: -1\n" + ONE_CASE, 3, "defaults.retries",
        "greater than or equal to 0", "(got -1)"),
    row("repeats-zero", "name: t\nrepeats: 0\n" + ONE_CASE, 2, "repeats", "greater than or equal to 1",
        "(got 0)"),
    row("budget-negative", "name: t\nbudget:\n  max_cost_usd: -5\n" + ONE_CASE, 3, "budget.max_cost_usd",
        "greater than 0", "(got -5)"),
    row("check-is-a-number", "name: t\ncases:\n  - id: a\n    prompt: x\n    check: 42\n", 5,
        "cases[0].check", "got 42", "non-empty shell string"),
    row("engine-unquoted-number", "name: t\ntarget: {kind: simulator, engine: 3.50}\n" + ONE_CASE, 2,
        "target.engine", "should be text (got 3.5)", "put it in quotes"),
    row("roo-setting-wrong-type", "name: t\ndefaults:\n  configuration:\n    mode: 3\n" + ONE_CASE, 4,
        "defaults.configuration.mode", "should be text", "put it in quotes"),
    row("target-is-a-list", "name: t\ntarget: [simulator]\n" + ONE_CASE, 2, "target", "should be a mapping",
        "(got a list)"),
    row("case-is-a-string", "name: t\ncases:\n  - just-a-string\n", 3, "cases[0]", "should be a mapping",
        "(got 'just-a-string')"),
    row("cases-is-a-mapping", "name: t\ncases:\n  a: {prompt: x}\n", 2, "cases", "should be a list",
        "'- item' lines"),
    row("tags-is-a-string", "name: t\ncases:\n  - id: a\n    prompt: x\n    tags: python\n", 5,
        "cases[0].tags", "should be a list", "(got 'python')"),
    row("env-key-is-a-number", "name: t\ndefaults:\n  env: {1: a}\n" + ONE_CASE, 3, "defaults.env.1",
        "keys here must be text", "quote the key"),
    row("xvfb-maybe", "name: t\ntarget: {kind: vscode, xvfb: maybe}\n" + ONE_CASE, 2, "target.xvfb",
        "auto, true or false", "(got 'maybe')"),
    # --------------------------------------------------------------------------------- durations
    row("timeout-parsecs", "name: t\ndefaults:\n  timeout: 5 parsecs\n" + ONE_CASE, 3, "defaults.timeout",
        "invalid duration '5 parsecs'", "500ms, 90s, 5m, 1h"),
    row("timeout-negative", "name: t\ndefaults:\n  timeout: -1s\n" + ONE_CASE, 3, "defaults.timeout",
        "more than zero", "500ms, 90s, 5m, 1h"),
    row("timeout-infinite", "name: t\ndefaults:\n  timeout: .inf\n" + ONE_CASE, 3, "defaults.timeout",
        "finite", "500ms, 90s, 5m, 1h"),
    row("case-timeout-yes", "name: t\ncases:\n  - id: a\n    prompt: x\n    timeout: yes\n", 5,
        "cases[0].timeout", "invalid duration True", "500ms, 90s, 5m, 1h"),
    # ---------------------------------------------------------------------- matrix and identities
    row("models-empty", "name: t\nmodels: []\n" + ONE_CASE, 2, "models", "the matrix is empty",
        "list at least one model"),
    row("cases-empty", "name: t\ncases: []\n", 2, "cases", "the matrix is empty", "add at least one case"),
    row("cases-missing", "name: t\n", 1, "cases", "missing required key 'cases'", "add it"),
    row("duplicate-case-ids", "name: t\ncases:\n  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n", 4,
        "cases[1].id", "duplicate case id 'a' (first on line 3)", "rename one"),
    row("duplicate-model-ids", "name: t\nmodels:\n  - id: m\n  - id: m\n" + ONE_CASE, 4, "models[1].id",
        "duplicate model id 'm'", "rename one"),
    row("case-id-dotdot", "name: t\ncases:\n  - id: ../etc\n    prompt: x\n", 3, "cases[0].id",
        "'../etc' cannot be used in a file name", "use letters, digits"),
    row("case-id-slash", "name: t\ncases:\n  - id: a/b\n    prompt: x\n", 3, "cases[0].id",
        "cannot be used in a file name", "use letters, digits"),
    row("case-id-nul", 'name: t\ncases:\n  - id: "a\\0b"\n    prompt: x\n', 3, "cases[0].id",
        "'a\\x00b' cannot be used in a file name", "use letters, digits"),
    row("model-id-traversal", "name: t\nmodels:\n  - id: ../../m\n" + ONE_CASE, 3, "models[0].id",
        "cannot be used in a file name", "use letters, digits"),
    row("suite-name-traversal", "name: ../../x\n" + ONE_CASE, 1, "name", "cannot be used in a file name",
        "use letters, digits"),
    # ---------------------------------------------------------------------------- files and paths
    row("workspace-missing", "name: t\ncases:\n  - id: a\n    prompt: x\n    workspace: nowhere\n", 5,
        "cases[0].workspace", "does not exist", "create it or fix the path"),
    row("workspace-is-a-file", "name: t\ncases:\n  - id: a\n    prompt: x\n    workspace: a-file.txt\n", 5,
        "cases[0].workspace", "is a file", "give a directory"),
    row("workspace-empty", "name: t\ncases:\n  - id: a\n    prompt: x\n    workspace: ''\n", 5,
        "cases[0].workspace", "the path is empty", "give a path, or remove the key"),
    row("prompt-file-missing", "name: t\ncases:\n  - id: a\n    prompt_file: gone.md\n", 4,
        "cases[0].prompt_file", "does not exist", "create it or fix the path"),
    row("prompt-file-is-a-directory", "name: t\ncases:\n  - id: a\n    prompt_file: a-dir\n", 4,
        "cases[0].prompt_file", "is a directory", "give a file"),
    row("prompt-file-not-utf8", "name: t\ncases:\n  - id: a\n    prompt_file: latin1.md\n", 4,
        "cases[0].prompt_file", "is not UTF-8 text", "save it as UTF-8"),
    row("prompt-and-prompt-file", "name: t\ncases:\n  - id: a\n    prompt: x\n    prompt_file: p.md\n", 3,
        "cases[0]", "not both", "give prompt or prompt_file"),
    row("neither-prompt-nor-file", "name: t\ncases:\n  - id: a\n    check: 'true'\n", 3, "cases[0]",
        "the prompt is empty", "add prompt: or prompt_file:"),
    # ------------------------------------------------------------------------ environment variables
    row("unset-secret", f"name: t\ndefaults:\n  configuration:\n    openRouterApiKey: ${{{UNSET}}}\n"
        + ONE_CASE, 4, "defaults.configuration.openRouterApiKey", f"{UNSET} is not set", "export it"),
    row("unset-var-as-workspace", f"name: t\ncases:\n  - id: a\n    prompt: x\n    workspace: ${{{UNSET}}}\n",
        5, "cases[0].workspace", f"{UNSET} is not set", "export it"),
    row("malformed-reference", "name: t\ncases:\n  - id: a\n    prompt: 'x ${1BAD}'\n", 4, "cases[0].prompt",
        "malformed '${1BAD}'", "write ${NAME}"),
    # ------------------------------------------------------------------------------------ targets
    row("unknown-target-kind", "name: t\ntarget:\n  kind: docker\n" + ONE_CASE, 3, "target.kind",
        "unknown kind 'docker'", "use one of simulator, socket, vscode, command"),
    row("socket-without-sockets", "name: t\ntarget:\n  kind: socket\n" + ONE_CASE, 2, "target.sockets",
        "missing required key 'sockets'", "add it"),
    row("socket-empty-sockets", "name: t\ntarget:\n  kind: socket\n  sockets: []\n" + ONE_CASE, 4,
        "target.sockets", "the list is empty", "give at least 1"),
    row("socket-slots-beyond-sockets", "name: t\ntarget:\n  kind: socket\n  sockets: [a.sock]\n  slots: 2\n"
        + ONE_CASE, 2, "target", "more than the 1 sockets", "lower slots or list more sockets"),
    row("command-unknown-placeholder", "name: t\ntarget:\n  kind: command\n  argv: [host, '{sock}']\n"
        + ONE_CASE, 4, "target.argv", "unknown placeholder {sock}", "use {socket}, {workspace} or {slot}"),
    row("command-empty-executable", "name: t\ntarget:\n  kind: command\n  argv: ['', x]\n" + ONE_CASE, 4,
        "target.argv", "argv[0]) is empty", "give the host's executable"),
    row("command-cwd-is-a-file", "name: t\ntarget:\n  kind: command\n  argv: [x]\n  cwd: a-file.txt\n"
        + ONE_CASE, 5, "target.cwd", "is a file", "give a directory"),
    *HOSTILE,
]  # fmt: skip


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    """The files the rows refer to, next to the suite file."""
    make_fixture_files(tmp_path)
    return tmp_path


def invoke(suite: Path, results: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    environment: dict[str, str | None] = {UNSET: None, **(env or {})}
    return CliRunner(env=environment).invoke(main, ["run", str(suite), "--results", str(results), *args])


def assert_refused(res: Result, results: Path) -> str:
    """Exit code 2, exactly one line on stderr and nothing else, no traceback, nothing written."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert not results.exists()
    return lines[0]


@pytest.mark.parametrize(("spec", "line", "key", "what", "hint"), ROWS)
def test_broken_suite_gives_one_located_error_and_writes_nothing(
    suite_dir: Path, spec: Spec, line: int | None, key: str | None, what: str, hint: str
) -> None:
    suite, env = materialize(spec, suite_dir)
    results = suite_dir / "results"
    message = assert_refused(invoke(suite, results, env=env), results)
    if line is None:  # about the path itself
        assert message.startswith(f"{suite}: "), message
        assert what in message and hint in message, message
        return
    location = f"{suite}:{line}:"
    assert message.startswith(location), f"expected {location!r}: {message}"
    column, _, rest = message[len(location) :].partition(": ")
    assert column.isdigit(), message
    if key is not None:
        assert rest.startswith(f"{key}: "), f"expected key {key!r}: {message}"
    assert what in rest, message
    assert hint in rest, message


def test_the_table_is_large() -> None:
    assert len(ROWS) >= 130


GOOD = "name: t\ncases:\n  - {id: a, prompt: x, tags: [easy]}\n  - {id: b, prompt: y}\nmodels: [{id: m}]\n"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--case", "NOPE"], "--case: no case matches 'NOPE'; cases: a, b"),
        (["--model", "NOPE"], "--model: no model matches 'NOPE'; models: m"),
        (["--filter", "NOPE"], "--filter: no case has tag NOPE; tags in the suite: ['easy']"),
        (["--slots", "0"], "--slots: must be at least 1"),
        (["--repeats", "0"], "--repeats: must be at least 1"),
        (["--slots", "5000"], "--slots: must be at most 1024, got 5000"),
        (["--repeats", "100000"], "--repeats: 2 cases x 1 models x 100,000 repeats is 200,000 attempts"),
        (["--workers", "0"], "--workers: must be at least 1, got 0"),
        (["--run-id", "../outside"], "--run-id '../outside': give a plain directory name"),
        (["--run-id", "a/b"], "--run-id 'a/b': give a plain directory name"),
        (["--run-id", ""], "--run-id '': give a plain directory name"),
        (["--resume", ".."], "--resume '..': give a plain directory name"),
        (["--resume", "never-ran"], "never-ran is not a run directory"),
    ],
)
def test_bad_options_give_one_clear_error_and_write_nothing(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(GOOD)
    results = tmp_path / "results"
    message = assert_refused(invoke(suite, results, *args), results)
    assert fragment in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]  # not even ../outside


def test_missing_suite_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    message = assert_refused(invoke(tmp_path / "nope.yaml", results), results)
    assert message.startswith(f"{tmp_path / 'nope.yaml'}:") and "file not found" in message


ROOT = Path(__file__).resolve().parents[2]
ROW_SECONDS = 30
"""Generous: a refusal takes well under 2 s; this only tells a slow one from one that hangs."""
MEMORY_LIMIT = 1024 * 1024 * 1024
"""Address space of the process that reads every suite of the table (~60 MiB is used; the alias bomb
took 3.9 GB before it was refused)."""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.timeout(600)
def test_every_broken_suite_is_refused_within_bounded_time_and_memory(tmp_path: Path) -> None:
    """The whole table, in one process under RLIMIT_AS, each row under an alarm: a row that runs
    away in memory dies with MemoryError, one that hangs with TimeoutError (neither exits 2)."""
    rows = []
    for i, param in enumerate(ROWS):
        spec = param.values[0]
        directory = tmp_path / f"row{i}"
        directory.mkdir()
        make_fixture_files(directory)
        suite, env = materialize(spec, directory)
        rows.append((str(suite), str(directory / "results"), {UNSET: None, **env}))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.faults.refusal_driver", str(tmp_path / "rows.json"), str(ROW_SECONDS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=ROW_SECONDS * len(rows),
        preexec_fn=_limit_memory,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(rows)
    for param, (_, results, _), answer in zip(ROWS, rows, answers, strict=True):
        name = param.id
        assert answer["error"] is None, (name, answer)
        assert answer["exit"] == 2, (name, answer)
        assert len(answer["stderr"].splitlines()) == 1, (name, answer)
        assert len(answer["stderr"]) < 2000, (name, len(answer["stderr"]))
        assert not Path(results).exists(), name
