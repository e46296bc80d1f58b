"""Hostile suites: what a user trying to break the loader writes. Rows of the broken-suite table
(tests/faults/test_broken_suites.py), also run under a memory limit (tests/faults/test_suite_bounds.py).

Each must give exit code 2 and one located message, write nothing, and finish quickly with bounded
memory. A row is a suite text, or a :class:`Setup` that also makes files (a FIFO, a huge sparse file,
a workspace of 20,001 files) or sets environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ONE_CASE = "cases: [{id: a, prompt: x}]\n"
SIM = "name: t\ntarget:\n  kind: simulator\n"
WS = "name: t\ncases:\n  - id: a\n    prompt: x\n    workspace: "
PF = "name: t\ncases:\n  - id: a\n    prompt_file: "


@dataclass(frozen=True)
class Setup:
    """A suite that needs more than its text: ``make`` creates files in the suite's directory and may
    return another path to run instead of ``suite.yaml``; ``env`` is added to the environment."""

    text: str = ""
    make: Callable[[Path], Path | None] | None = None
    env: dict[str, str] = field(default_factory=dict)


Spec = str | bytes | Setup


def row(name: str, spec: Spec, line: int | None, key: str | None, what: str, hint: str) -> object:
    """``line`` None: the message is about the path itself (``path: message``)."""
    return pytest.param(spec, line, key, what, hint, id=name)


def make_fixture_files(directory: Path) -> None:
    """The ordinary files rows refer to, next to the suite file."""
    (directory / "a-file.txt").write_text("not a directory\n")
    (directory / "a-dir").mkdir()
    (directory / "p.md").write_text("a prompt\n")
    (directory / "latin1.md").write_bytes("Caf\xe9 prompt\n".encode("latin-1"))


def materialize(spec: Spec, directory: Path) -> tuple[Path, dict[str, str]]:
    """Write the row's suite into ``directory``: the path to run and the environment to add."""
    suite = directory / "suite.yaml"
    if isinstance(spec, Setup):
        if spec.text:
            suite.write_text(spec.text)
        made = spec.make(directory) if spec.make is not None else None
        return made or suite, dict(spec.env)
    suite.write_bytes(spec if isinstance(spec, bytes) else spec.encode("utf-8"))
    return suite, {}


# ------------------------------------------------------------------------------------ makers


def _fifo(name: str) -> Callable[[Path], Path | None]:
    def make(directory: Path) -> Path | None:
        os.mkfifo(directory / name)
        return directory / name if name.endswith(".yaml") else None

    return make


def _sparse(name: str, size: int) -> Callable[[Path], Path | None]:
    def make(directory: Path) -> Path | None:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)  # no disk used: the size alone must refuse it
        return path if name.endswith(".yaml") else None

    return make


def _suite_dir(directory: Path) -> Path | None:
    (directory / "dir.yaml").mkdir()
    return directory / "dir.yaml"


def _socket_in(where: str) -> Callable[[Path], Path | None]:
    def make(directory: Path) -> Path | None:
        (directory / where).mkdir(exist_ok=True)
        path = directory / where / "s.sock"
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(str(path))  # the file stays after close, as a dead host's does
        finally:
            sock.close()
        return None

    return make


def _symlink_loop(directory: Path) -> Path | None:
    os.symlink("loop.yaml", directory / "loop.yaml")
    return directory / "loop.yaml"


def _link(where: str, target: str) -> Callable[[Path], Path | None]:
    def make(directory: Path) -> Path | None:
        (directory / "ws").mkdir(exist_ok=True)
        (directory / "ws" / "ok.txt").write_text("fine\n")
        os.symlink(target, directory / "ws" / where)
        return None

    return make


def _many_files(directory: Path) -> Path | None:
    (directory / "ws").mkdir()
    for i in range(20_001):
        (directory / "ws" / f"f{i}").touch()
    return None


def _with(*makers: Callable[[Path], Path | None]) -> Callable[[Path], Path | None]:
    def make(directory: Path) -> Path | None:
        paths = [m(directory) for m in makers]
        return next((p for p in paths if p is not None), None)

    return make


def _alias_bomb(where: str) -> str:
    """Billion laughs: nine lines that expand to 9**9 values (3.9 GB once hashed)."""
    lines = ['x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"x-{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "name: t\n" + "\n".join(lines) + f"\ndefaults:\n  configuration:\n    {where}: *i\n" + ONE_CASE


def _merge_bomb() -> str:
    lines = ["x-a: &a {k: 1, l: 2, m: 3, n: 4}"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"x-{name}: &{name} {{<<: [{', '.join([f'*{prev}'] * 9)}]}}")
    return "name: t\n" + "\n".join(lines) + "\n" + ONE_CASE


_MIB = 1024 * 1024
BIG_TEXT = "x" * (_MIB // 2)

HOSTILE = [
    # ------------------------------------------------------------------------------- YAML bounds
    row("alias-bomb", _alias_bomb("bomb"), 6, None, "expands to more than 50,000 values", "fewer aliases"),
    row("merge-key-bomb", _merge_bomb(), 6, None, "expands to more than 50,000 values", "fewer aliases"),
    row("alias-text-bomb", f"name: t\nx-a: &a '{BIG_TEXT}'\nx-b: &b [{', '.join(['*a'] * 40)}]\n" + ONE_CASE,
        3, None, "expands to more than 16 MiB of text", "fewer aliases of long text"),
    row("alias-cycle", "name: t\nx-a: &a [1, *a]\n" + ONE_CASE, 2, None, "refers to a list or mapping that holds it",
        "outside of itself"),
    row("alias-cycle-mapping", "name: t\nx-a: &a {b: [*a]}\n" + ONE_CASE, 2, None, "holds it", "outside of itself"),
    row("deep-flow-nesting", "name: t\nx: " + "[" * 100_000 + "]" * 100_000 + "\n" + ONE_CASE, 2, None,
        "nested more than 64 levels deep", "flatten it"),
    row("deep-block-nesting", "name: t\nx:\n" + "".join("  " * i + "-\n" for i in range(1, 300)) + ONE_CASE, 66,
        None, "nested more than 64 levels deep", "flatten it"),
    row("deep-alias-chain", "name: t\nx0: &a0 [1]\n" + "".join(f"x{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 500))
        + ONE_CASE, 65, None, "nested more than 64 levels deep", "flatten it"),
    row("too-many-values", "name: t\nx-a: [" + ",".join(["1"] * 60_000) + "]\n" + ONE_CASE, 2, None,
        "the file holds more than 50,000 values", "split the suite"),
    row("integer-of-5000-digits", "name: t\nrepeats: " + "9" * 5000 + "\n" + ONE_CASE, 2, None,
        "a number of 5,000 characters", "quote it"),
    row("integer-beyond-64-bits", "name: t\ndefaults:\n  configuration: {n: 99999999999999999999}\n" + ONE_CASE,
        3, None, "does not fit in 64 bits", "quote it"),
    row("sexagesimal-integer", "name: t\nrepeats: " + ":".join(["59"] * 15) + "\n" + ONE_CASE, 2, None,
        "does not fit in 64 bits", "quote it"),
    row("int-tag-not-a-number", "name: t\nrepeats: !!int abc\n" + ONE_CASE, 2, None, "'abc' is not a valid !!int",
        "remove the tag"),
    row("bool-tag-not-a-bool", "name: t\ntarget: {xvfb: !!bool maybe}\n" + ONE_CASE, 2, None, "not a valid !!bool",
        "remove the tag"),
    row("binary-tag", "name: t\ndefaults:\n  env: {A: !!binary AA==}\n" + ONE_CASE, 3, None, "!!binary",
        "remove the tag"),
    row("set-tag", "name: t\ncases: [{id: a, prompt: x, tags: !!set {a, b}}]\n", 2, None, "!!set", "remove the tag"),
    row("map-tag-on-a-scalar", "name: t\nrepeats: !!map abc\n" + ONE_CASE, 2, None, "needs a mapping here",
        "remove the tag"),
    # ------------------------------------------------------------------------------------- text
    row("lone-surrogate-escape", 'name: t\ncases: [{id: a, prompt: "x\\ud800"}]\n', 2, None,
        "not a character (a lone UTF-16 surrogate?)", "write the character itself"),
    row("lone-surrogate-from-env", Setup(text="name: t\ncases: [{id: a, prompt: '${ORC_TEST_SURROGATE}'}]\n",
        env={"ORC_TEST_SURROGATE": "caf\udce9"}), 2, "cases[0].prompt", "ORC_TEST_SURROGATE is not UTF-8 text",
        "fix it"),
    row("many-unknown-keys", "name: t\n" + "".join(f"k{i}: 1\n" for i in range(50)) + ONE_CASE, 2, "k0",
        "unknown key 'k0'", "and 49 more problems (lines 3, 4, 5, 6, 7, ...): fix this one"),
    row("line-break-in-a-key", 'name: t\n"a\\nb\\x1b[2J": 1\n' + ONE_CASE, 2, "a\\nb\\x1b[2J",
        "unknown key 'a\\nb\\x1b[2J'", "fix its spelling"),
    row("a-huge-value-in-the-message", "name: " + "a" * 100_000 + "\n" + ONE_CASE, 1, "name",
        "'aaaaaaaaaa", "... (100,000 characters) cannot be used in a file name"),
    # ----------------------------------------------------------------------- simulator options
    row("time-scale-zero", SIM + "  options: {time_scale: 0}\n" + ONE_CASE, 4, "target.options.time_scale",
        "greater than 0", "(got 0)"),
    row("time-scale-negative", SIM + "  options: {time_scale: -1}\n" + ONE_CASE, 4, "target.options.time_scale",
        "greater than 0", "(got -1)"),
    row("time-scale-fast", SIM + "  options: {time_scale: fast}\n" + ONE_CASE, 4, "target.options.time_scale",
        "valid number", "(got 'fast')"),
    row("time-scale-nan", SIM + "  options: {time_scale: .nan}\n" + ONE_CASE, 4, "target.options.time_scale",
        "finite number", "(got nan)"),
    row("time-scale-yes", SIM + "  options: {time_scale: yes}\n" + ONE_CASE, 4, "target.options.time_scale",
        "expected a number", "got True"),
    row("status-delay-negative", SIM + "  options:\n    status_delay: -2\n" + ONE_CASE, 5,
        "target.options.status_delay", "greater than or equal to 0", "(got -2)"),
    row("seed-not-a-number", SIM + "  options: {seed: abc}\n" + ONE_CASE, 4, "target.options.seed", "valid integer",
        "(got 'abc')"),
    row("options-misspelt", SIM + "  options: {time_scael: 0.1}\n" + ONE_CASE, 4, "target.options.time_scael",
        "unknown key 'time_scael'", "keys allowed here: seed, time_scale, status_delay, engine_lags, process_per_host"),
    row("options-a-list", SIM + "  options: [0.1]\n" + ONE_CASE, 4, "target.options", "should be a mapping",
        "(got a list)"),
    row("engine-unknown", SIM + "  engine: '99.99'\n" + ONE_CASE, 4, "target.engine", "unknown engine '99.99'",
        "use 3.52 or 3.50"),
    # --------------------------------------------------------------- environment and arguments
    row("env-value-with-nul", 'name: t\ndefaults:\n  env: {A: "x\\0y"}\n' + ONE_CASE, 3, "defaults.env.A",
        "contains a NUL character", "remove it"),
    row("case-env-value-with-nul", 'name: t\ncases:\n  - id: a\n    prompt: x\n    env: {A: "\\0"}\n', 5,
        "cases[0].env.A", "contains a NUL character", "remove it"),
    row("env-key-with-equals", "name: t\ndefaults:\n  env: {'A=B': x}\n" + ONE_CASE, 3, "defaults.env.A=B",
        "cannot be an environment variable name", "no '='"),
    row("env-key-empty", "name: t\ndefaults:\n  env: {'': x}\n" + ONE_CASE, 3, "defaults.env['']",
        "cannot be an environment variable name", "not empty"),
    row("command-env-with-nul", 'name: t\ntarget:\n  kind: command\n  argv: [x]\n  env: {A: "\\0"}\n' + ONE_CASE,
        5, "target.env.A", "contains a NUL character", "remove it"),
    row("command-argv-with-nul", 'name: t\ntarget:\n  kind: command\n  argv: [x, "a\\0"]\n' + ONE_CASE, 4,
        "target.argv[1]", "contains a NUL character", "remove it"),
    row("vscode-args-with-nul", 'name: t\ntarget:\n  kind: vscode\n  args: ["\\0"]\n' + ONE_CASE, 4,
        "target.args[0]", "contains a NUL character", "remove it"),
    row("check-with-nul", 'name: t\ncases:\n  - id: a\n    prompt: x\n    check: "true\\0"\n', 5, "cases[0].check",
        "contains a NUL character", "remove it"),
    row("setup-argv-with-nul", 'name: t\ncases:\n  - id: a\n    prompt: x\n    setup: [[echo, "\\0"]]\n', 5,
        "cases[0].setup[0]", "contains a NUL character", "remove it"),
    row("workspace-path-with-nul", WS + '"ws\\0"\n', 5, "cases[0].workspace", "contains a NUL character",
        "remove it"),
    row("env-value-over-128-kib", "name: t\ndefaults:\n  env:\n    A: " + "x" * 140_000 + "\n" + ONE_CASE, 4,
        "defaults.env.A", "140,000 characters) is longer than 130,816 bytes", "put the text in a file"),
    row("check-over-128-kib", "name: t\ncases:\n  - id: a\n    prompt: x\n    check: 'echo " + "y" * 140_000
        + "'\n", 5, "cases[0].check", "is longer than 130,816 bytes", "put the text in a file"),
    row("unclosed-reference", "name: t\ncases:\n  - id: a\n    prompt: 'at ${HOME'\n", 4, "cases[0].prompt",
        "unclosed '${HOME'", "close it with '}'"),
    row("nested-reference", "name: t\ncases:\n  - id: a\n    prompt: '${A:-${B}}'\n", 4, "cases[0].prompt",
        "malformed '${A:-${B}'", "not nested"),
    row("empty-reference", "name: t\ncases:\n  - id: a\n    prompt: 'x ${}'\n", 4, "cases[0].prompt",
        "malformed '${}'", "write ${NAME}"),
    # ------------------------------------------------------------------------------- identities
    row("case-ids-differ-in-case", "name: t\ncases:\n  - {id: Fix, prompt: x}\n  - {id: fix, prompt: y}\n", 4,
        "cases[1].id", "duplicate case id 'fix' (first on line 3 as 'Fix'", "rename one"),
    row("model-ids-differ-in-case", "name: t\nmodels:\n  - id: GPT\n  - id: gpt\n" + ONE_CASE, 4, "models[1].id",
        "differ only in letter case", "rename one"),
    row("matrix-too-big", "name: t\nrepeats: 10000\nmodels: [" + ", ".join(f"{{id: m{i}}}" for i in range(20))
        + "]\n" + ONE_CASE, 2, "repeats", "200,000 attempts, more than the 100,000", "split the suite"),
    # ------------------------------------------------------------------------------- workspaces
    row("workspace-root", WS + "/\n", 5, "cases[0].workspace", "is the whole filesystem", "at most 20,000 entries"),
    row("workspace-dev", WS + "/dev\n", 5, "cases[0].workspace", "/dev", "a directory of regular files"),
    row("workspace-proc", WS + "/proc\n", 5, "cases[0].workspace", "the kernel's proc filesystem",
        "a directory of regular files"),
    row("workspace-proc-self", WS + "/proc/self/\n", 5, "cases[0].workspace", "proc filesystem", "regular files"),
    row("workspace-holds-a-fifo", Setup(WS + "ws\n", _with(_link("ok", "ok.txt"), _fifo("ws/pipe"))), 5,
        "cases[0].workspace", "'pipe', a FIFO (named pipe)", "remove it"),
    row("workspace-holds-a-socket", Setup(WS + "ws\n", _socket_in("ws")), 5, "cases[0].workspace", "a socket",
        "remove it"),
    row("workspace-link-to-etc", Setup(WS + "ws\n", _link("passwd", "/etc/passwd")), 5, "cases[0].workspace",
        "the symlink 'passwd' -> '/etc/passwd', which leads out", "relative link inside it"),
    row("workspace-link-up-and-out", Setup(WS + "ws\n", _link("up", "../../..")), 5, "cases[0].workspace",
        "leads out of the workspace", "relative link inside it"),
    row("workspace-of-20001-files", Setup(WS + "ws\n", _many_files), 5, "cases[0].workspace",
        "more than 20,000 entries", "a directory of regular files"),
    row("workspace-of-2-gib", Setup(WS + "ws\n", _sparse("ws/big.bin", 2048 * _MIB)), 5, "cases[0].workspace",
        "more than 1.0 GiB", "a directory of regular files"),
    row("prompt-file-fifo", Setup(PF + "p.fifo\n", _fifo("p.fifo")), 4, "cases[0].prompt_file", "a FIFO",
        "give a file"),
    row("prompt-file-device", PF + "/dev/zero\n", 4, "cases[0].prompt_file", "a character device", "give a file"),
    row("prompt-file-in-proc", PF + "/proc/self/environ\n", 4, "cases[0].prompt_file", "proc filesystem",
        "give a regular file"),
    row("prompt-file-of-2-mib", Setup(PF + "big.md\n", _sparse("big.md", 2 * _MIB)), 4, "cases[0].prompt_file",
        "larger than 1.0 MiB", "shorten the prompt"),
    # ------------------------------------------------------------------------------- the path
    row("suite-is-a-fifo", Setup(make=_fifo("pipe.yaml")), None, None, "is a FIFO (named pipe)",
        "give a regular file"),
    row("suite-is-a-directory", Setup(make=_suite_dir), None, None, "is a directory", "give a regular file"),
    row("suite-is-a-device", Setup(make=lambda _: Path("/dev/zero")), None, None, "a character device",
        "give a regular file"),
    row("suite-is-a-socket", Setup(make=lambda d: (_socket_in(".")(d), d / "s.sock")[1]), None, None, "a socket",
        "give a regular file"),
    row("suite-is-a-symlink-loop", Setup(make=_symlink_loop), None, None, "symbolic links", "cannot read"),
    row("suite-of-50-mib", Setup(make=_sparse("big.yaml", 50 * _MIB)), None, None,
        "is 50.0 MiB, larger than 2.0 MiB", "move long prompts into prompt_file"),
]  # fmt: skip
