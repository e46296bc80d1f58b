"""The suite file: models, line-numbered errors, interpolation, redaction, overrides."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ipc_bridge.redaction import Redactor
from orchestrator.status import OutcomeLimits
from orchestrator.suite.config import apply_overrides, load_suite
from orchestrator.suite.targets import CommandTarget, SocketTarget, VscodeTarget
from orchestrator.suite.yaml_loader import SuiteError

# -------------------------------------------------------------------------------------- helpers


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    (tmp_path / "exercises" / "two-fer").mkdir(parents=True)
    (tmp_path / "exercises" / "two-fer" / "two_fer.py").write_text("def two_fer(name='you'):\n    pass\n")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "hello.md").write_text("Say hello.\n")
    return tmp_path


GOOD = """\
name: demo
target:
  kind: simulator
  slots: 4
defaults:
  timeout: 5m
  retries: 2
  configuration:
    apiProvider: openrouter
    openRouterApiKey: ${OPENROUTER_API_KEY}
    mode: code
models:
  - id: sonnet
    configuration: {openRouterModelId: anthropic/claude-sonnet-4, mode: architect}
  - id: gpt
repeats: 2
budget: {max_cost_usd: 20}
cases:
  - id: py-two-fer
    prompt: Implement two_fer in two_fer.py so that the tests pass.
    workspace: exercises/two-fer
    setup: [python -c "print(1)"]
    check: python -m pytest -q
    check_timeout: 2m
    timeout: 90s
    tags: [python, easy]
    configuration: {mode: debug}
    simulate: {files: {two_fer.py: "x = 1"}, duration: 1s}
  - id: hello
    prompt_file: prompts/hello.md
    check: [python, -c, "import sys; sys.exit(0)"]
    tags: [easy]
"""
ENV = {"OPENROUTER_API_KEY": "sk-or-v1-abcdef123456"}


def write(directory: Path, text: str, name: str = "suite.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(directory: Path, text: str, env: dict[str, str] | None = None) -> SuiteError:
    path = write(directory, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path, env=ENV if env is None else env)
    err = info.value
    assert err.exit_code == 2
    assert str(path) in str(err)
    return err


def only(err: SuiteError) -> tuple[int | None, str, str]:
    assert len(err.problems) == 1, str(err)
    p = err.problems[0]
    return p.line, p.key, p.message


# ------------------------------------------------------------------------------- a good suite


def test_good_suite_resolves_paths_relative_to_the_file(
    suite_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(suite_dir, GOOD)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    suite = load_suite(path, env=ENV)
    assert suite.source == path.resolve()
    two_fer, hello = suite.cases
    assert two_fer.workspace == (suite_dir / "exercises" / "two-fer").resolve()
    assert hello.prompt == "Say hello.\n"
    assert hello.prompt_file == (suite_dir / "prompts" / "hello.md").resolve()
    assert hello.workspace is None
    assert two_fer.check == "python -m pytest -q"
    assert hello.check == ["python", "-c", "import sys; sys.exit(0)"]
    assert two_fer.simulate == {"files": {"two_fer.py": "x = 1"}, "duration": "1s"}
    assert suite.repeats == 2 and suite.budget.max_cost_usd == 20
    assert suite.target.slots == 4


def test_configuration_merges_defaults_model_case(suite_dir: Path) -> None:
    suite = load_suite(write(suite_dir, GOOD), env=ENV)
    two_fer, hello = suite.cases
    sonnet, gpt = suite.models
    merged = suite.configuration_for(two_fer, sonnet)
    assert merged == {
        "apiProvider": "openrouter",
        "openRouterApiKey": ENV["OPENROUTER_API_KEY"],  # the real secret goes to the host
        "mode": "debug",  # case over model over defaults
        "openRouterModelId": "anthropic/claude-sonnet-4",
    }
    assert suite.configuration_for(hello, sonnet)["mode"] == "architect"
    assert suite.configuration_for(hello, gpt)["mode"] == "code"


def test_limits_and_timeouts_per_case(suite_dir: Path) -> None:
    suite = load_suite(write(suite_dir, GOOD), env=ENV)
    two_fer, hello = suite.cases
    assert suite.limits_for(two_fer).timeout == 90.0
    assert suite.limits_for(hello).timeout == 300.0
    assert suite.check_timeout_for(two_fer) == 120.0
    assert suite.check_timeout_for(hello) == suite.defaults.check_timeout
    assert suite.limits_for(hello).ask_timeout == suite.defaults.ask_timeout


def test_minimal_suite_gets_defaults(suite_dir: Path) -> None:
    suite = load_suite(write(suite_dir, "name: tiny\ncases:\n  - {id: a, prompt: hi}\n"), env={})
    assert suite.target.kind == "simulator"
    assert [m.id for m in suite.models] == ["default"]
    assert suite.defaults.timeout == 300.0 and suite.defaults.retries == 2


def test_every_outcome_timer_is_a_suite_default_with_the_rules_own_default(suite_dir: Path) -> None:
    """The outcome rules' timers are written once (OutcomeLimits): a suite that says nothing gets exactly
    them, and every one of them can be set in ``defaults``."""
    tiny = load_suite(write(suite_dir, "name: tiny\ncases:\n  - {id: a, prompt: hi}\n"), env={})
    assert tiny.limits_for(tiny.cases[0]) == OutcomeLimits()
    given = {name: 7 for name in OutcomeLimits.model_fields}
    text = "name: t\ndefaults: " + json.dumps(given) + "\ncases:\n  - {id: a, prompt: hi, timeout: 9s}\n"
    suite = load_suite(write(suite_dir, text), env={})
    assert suite.limits_for(suite.cases[0]) == OutcomeLimits(**{**given, "timeout": 9})
    assert only(error_of(suite_dir, text.replace('"timeout": 7', '"timeout": null')))[1] == "defaults.timeout"
    _, key, message = only(
        error_of(suite_dir, text.replace('"api_retry_limit": 7', '"api_retry_limit": true'))
    )
    assert key == "defaults.api_retry_limit" and "whole number" in message


def test_other_targets(suite_dir: Path) -> None:
    (suite_dir / "sockdir").mkdir()
    socket_suite = load_suite(
        write(
            suite_dir,
            "name: s\ntarget: {kind: socket, sockets: [a.sock, /tmp/b.sock]}\ncases: [{id: a, prompt: x}]\n",
        ),
        env={},
    )
    assert isinstance(socket_suite.target, SocketTarget)
    assert socket_suite.target.slots == 2
    assert socket_suite.target.sockets[0] == suite_dir.resolve() / "a.sock"
    cmd = load_suite(
        write(
            suite_dir,
            """\
            name: c
            target:
              kind: command
              argv: [node, host.js, --socket, "{socket}", --ws, "{workspace}", "n{slot}", "{{literal}}"]
              env: {SLOT: "{slot}"}
              cwd: sockdir
            cases: [{id: a, prompt: x}]
            """,
        ),
        env={},
    )
    assert isinstance(cmd.target, CommandTarget)
    assert cmd.target.cwd == suite_dir.resolve() / "sockdir"
    code = load_suite(
        write(
            suite_dir,
            "name: v\ntarget: {kind: vscode, args: [--disable-gpu], xvfb: true}\ncases: [{id: a, prompt: x}]\n",
        ),
        env={},
    )
    assert isinstance(code.target, VscodeTarget)
    assert code.target.code == "code" and code.target.xvfb is True


# --------------------------------------------------------------------------------------- errors


def test_unknown_key_names_line_key_and_allowed_keys(suite_dir: Path) -> None:
    err = error_of(suite_dir, GOOD.replace("    check_timeout: 2m\n", "    check_timeout: 2m\n    chek: x\n"))
    line, key, message = only(err)
    assert line == 25
    assert key == "cases[0].chek"
    assert "unknown key 'chek'" in message and "check_timeout" in message and "workspace" in message
    assert f"{suite_dir / 'suite.yaml'}:25:" in str(err)


def test_unknown_key_in_a_target_lists_that_kinds_keys(suite_dir: Path) -> None:
    err = error_of(suite_dir, GOOD.replace("  slots: 4\n", "  slots: 4\n  argv: [x]\n"))
    line, key, message = only(err)
    assert (line, key) == (5, "target.argv")
    assert "engine" in message and "close_grace" in message


def test_unknown_top_level_key(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD + "repeat: 3\n"))
    assert (line, key) == (33, "repeat")
    assert "repeats" in message


def test_wrong_type(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("repeats: 2", "repeats: many")))
    assert (line, key) == (16, "repeats")
    assert "integer" in message and "'many'" in message


def test_missing_workspace_dir(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("exercises/two-fer", "exercises/nope")))
    assert (line, key) == (21, "cases[0].workspace")
    assert "does not exist" in message and str(suite_dir / "exercises" / "nope") in message


def test_missing_prompt_file(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("prompts/hello.md", "prompts/gone.md")))
    assert (line, key) == (30, "cases[1].prompt_file")
    assert "gone.md" in message


def test_duplicate_case_id_points_at_the_second(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("id: hello", "id: py-two-fer")))
    assert (line, key) == (29, "cases[1].id")
    assert "first on line 19" in message


def test_duplicate_model_id(suite_dir: Path) -> None:
    line, key, _ = only(error_of(suite_dir, GOOD.replace("id: gpt", "id: sonnet")))
    assert (line, key) == (15, "models[1].id")


def test_duplicate_yaml_key(suite_dir: Path) -> None:
    line, _, message = only(error_of(suite_dir, GOOD.replace("repeats: 2\n", "repeats: 2\nrepeats: 3\n")))
    assert line == 17
    assert "duplicate key 'repeats'" in message and "line 16" in message


def test_yaml_syntax_error(suite_dir: Path) -> None:
    line, _, message = only(error_of(suite_dir, GOOD.replace("tags: [easy]", "tags: [easy")))
    assert line is not None and line >= 32
    assert "YAML syntax error" in message


@pytest.mark.parametrize("bad", ["5 minutes", "-1m", "soon"])
def test_bad_duration(suite_dir: Path, bad: str) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("timeout: 5m", f"timeout: {bad}")))
    assert (line, key) == (6, "defaults.timeout")
    assert "invalid duration" in message and "90s" in message


@pytest.mark.parametrize(("section", "line"), [("cases: []", 18), ("models: []", 12)])
def test_empty_matrix(suite_dir: Path, section: str, line: int) -> None:
    name = section.split(":")[0]
    text = GOOD.split(f"{name}:")[0] + section + "\n"
    if name == "models":
        text += "repeats: 1\ncases: [{id: a, prompt: x}]\n"
    got_line, key, message = only(error_of(suite_dir, text))
    assert key == name and got_line == line
    assert "matrix is empty" in message


def test_unset_env_var(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD, env={}))
    assert (line, key) == (10, "defaults.configuration.openRouterApiKey")
    assert "OPENROUTER_API_KEY is not set" in message and "export" in message


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "a__b", ".hidden", "a b", "x" * 65, "a..b", "ü"])
def test_case_id_unsafe_in_file_names(suite_dir: Path, bad_id: str) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("id: hello", f"id: {json.dumps(bad_id)}")))
    assert (line, key) == (29, "cases[1].id")
    assert "file name" in message


def test_prompt_and_prompt_file_are_exclusive(suite_dir: Path) -> None:
    text = GOOD.replace("prompt_file: prompts/hello.md", "prompt_file: prompts/hello.md\n    prompt: also")
    line, key, message = only(error_of(suite_dir, text))
    assert (line, key) == (29, "cases[1]")
    assert "not both" in message
    line, key, message = only(error_of(suite_dir, GOOD.replace("    prompt_file: prompts/hello.md\n", "")))
    assert key == "cases[1]" and "prompt is empty" in message


def test_unknown_target_kind(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, GOOD.replace("kind: simulator", "kind: docker")))
    assert (line, key) == (3, "target.kind")
    assert "'docker'" in message and "simulator" in message and "vscode" in message


def test_unknown_command_placeholder(suite_dir: Path) -> None:
    text = 'name: c\ntarget:\n  kind: command\n  argv: [host, "{sock}"]\ncases: [{id: a, prompt: x}]\n'
    line, key, message = only(error_of(suite_dir, text))
    assert (line, key) == (4, "target.argv")
    assert "{sock}" in message and "{socket}" in message


def test_socket_slots_beyond_sockets(suite_dir: Path) -> None:
    text = "name: s\ntarget: {kind: socket, sockets: [a.sock], slots: 2}\ncases: [{id: a, prompt: x}]\n"
    _, key, message = only(error_of(suite_dir, text))
    assert key == "target"
    assert "more than the 1 sockets" in message


def test_wrong_typed_roo_setting_is_caught_before_anything_is_sent(suite_dir: Path) -> None:
    err = error_of(suite_dir, GOOD.replace("mode: code", "mode: 3\n    checkpointTimeout: 5"))
    keys = {(p.line, p.key) for p in err.problems}
    assert keys == {(11, "defaults.configuration.mode"), (12, "defaults.configuration.checkpointTimeout")}


def test_several_problems_in_one_error_sorted_by_line(suite_dir: Path) -> None:
    text = GOOD.replace("repeats: 2", "repeats: 0").replace("timeout: 5m", "timeout: 5 parsecs")
    err = error_of(suite_dir, text)
    assert [p.line for p in err.problems] == [6, 16]
    # one message: the first problem, and how many more there are
    assert len(str(err).splitlines()) == 1
    assert str(err).endswith("; and 1 more problem (line 16): fix this one, then run again")


@pytest.mark.parametrize(("text", "expect"), [("", "empty"), ("- a\n- b\n", "list"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(suite_dir: Path, text: str, expect: str) -> None:
    _, _, message = only(error_of(suite_dir, text))
    assert expect in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="file not found"):
        load_suite(tmp_path / "nope.yaml")


def test_missing_required_key(suite_dir: Path) -> None:
    line, key, message = only(error_of(suite_dir, "cases: [{id: a, prompt: x}]\n"))
    assert (line, key) == (1, "name")
    assert "missing required key 'name'" in message


# ------------------------------------------------------------------------- interpolation, secrets


def test_interpolation_forms(suite_dir: Path) -> None:
    text = """\
    name: i
    defaults:
      env: {A: "${A}", B: "pre-${B:-fallback}-post", C: "$${NOT_A_VAR}", D: "${A}${A}"}
    cases: [{id: a, prompt: "p ${A}"}]
    """
    suite = load_suite(write(suite_dir, text), env={"A": "alpha-value"})
    assert suite.defaults.env == {
        "A": "alpha-value",
        "B": "pre-fallback-post",
        "C": "${NOT_A_VAR}",
        "D": "alpha-valuealpha-value",
    }
    assert suite.cases[0].prompt == "p alpha-value"


def test_malformed_reference(suite_dir: Path) -> None:
    _, key, message = only(error_of(suite_dir, "name: m\ncases: [{id: a, prompt: 'x ${1BAD}'}]\n"))
    assert key == "cases[0].prompt" and "malformed" in message


def test_redacted_suite_hides_every_secret(suite_dir: Path) -> None:
    text = GOOD.replace("    mode: code\n", "    mode: code\n    openAiApiKey: sk-literal-in-file\n")
    text = text.replace(
        "tags: [easy]", "tags: [easy]\n    env: {TOKEN_URL: 'https://x/?k=${OPENROUTER_API_KEY}'}"
    )
    suite = load_suite(write(suite_dir, text), env=ENV)
    red = suite.redacted()
    dumped = json.dumps(red)
    assert ENV["OPENROUTER_API_KEY"] not in dumped
    assert "sk-literal-in-file" not in dumped
    config = red["defaults"]["configuration"]
    assert config["openRouterApiKey"] == "***" and config["openAiApiKey"] == "***"
    assert config["apiProvider"] == "openrouter"  # not a secret
    assert red["cases"][1]["env"]["TOKEN_URL"] == "***"  # a secret-looking key
    assert red["target"]["slots"] == 4 and red["defaults"]["timeout"] == 300.0


def test_redactor_replaces_values_inside_text_and_nested_data() -> None:
    r = Redactor(["sk-secret-123", "x"])
    assert r.text("error: bad key sk-secret-123 rejected") == "error: bad key *** rejected"
    assert r.text("x") == "***"  # short values only whole
    assert r.text("xyz") == "xyz"
    data = {"a": ["sk-secret-123", {"apiKey": "whatever", "n": 3, "maxTokens": 5}], "text": "ok"}
    assert r(data) == {"a": ["***", {"apiKey": "***", "n": 3, "maxTokens": 5}], "text": "ok"}


# ------------------------------------------------------------------------------------ overrides


def test_overrides(suite_dir: Path) -> None:
    suite = load_suite(write(suite_dir, GOOD), env=ENV)
    o = apply_overrides(suite, slots=9, tags=["python"], model_ids=["gp*"], repeats=5)
    assert o.target.slots == 9 and o.repeats == 5
    assert [c.id for c in o.cases] == ["py-two-fer"]
    assert [m.id for m in o.models] == ["gpt"]
    assert o.secret_values == suite.secret_values and o.source == suite.source
    assert ENV["OPENROUTER_API_KEY"] not in json.dumps(o.redacted())
    assert suite.target.slots == 4 and len(suite.cases) == 2  # the original is untouched
    assert [c.id for c in apply_overrides(suite, case_ids=["hello", "py-*"]).cases] == ["py-two-fer", "hello"]


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"case_ids": ["nope"]}, "--case"),
        ({"model_ids": ["claude"]}, "--model"),
        ({"tags": ["rust"]}, "--filter"),
        ({"slots": 0}, "--slots"),
        ({"repeats": 0}, "--repeats"),
    ],
)
def test_override_errors(suite_dir: Path, kwargs: dict[str, object], option: str) -> None:
    suite = load_suite(write(suite_dir, GOOD), env=ENV)
    with pytest.raises(SuiteError) as info:
        apply_overrides(suite, **kwargs)  # type: ignore[arg-type]
    assert info.value.problems[0].key == option


def test_anchors_merge_keys_and_x_blocks(suite_dir: Path) -> None:
    text = """\
    name: anchors
    x-common: &common
      check: "echo $${HOME}"
      tags: [shared]
      prompt: hi ${WHO:-you}
    cases:
      - <<: *common
        id: one
      - <<: *common
        id: two
        tags: [own]
    """
    suite = load_suite(write(suite_dir, text), env={})
    assert [(c.id, c.check, c.tags, c.prompt) for c in suite.cases] == [
        ("one", "echo ${HOME}", ["shared"], "hi you"),
        ("two", "echo ${HOME}", ["own"], "hi you"),
    ]
