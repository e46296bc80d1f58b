"""Suite errors that point into the file, and ``${VAR}`` interpolation.

The suite models (:mod:`orchestrator.suite.config`) validate plain data; :mod:`orchestrator.suite.reader`
keeps, beside the data, where every key and list item came from, so that any problem (a YAML syntax
error, an unknown key, a wrong type, an unset variable, a missing file) becomes one :class:`SuiteError`
naming the file, the line, the key and what to do, on one line.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipc_bridge.redaction import SECRET_KEY

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)

MAX_TEXT = 16 * 1024 * 1024
"""Most characters of text in a suite, with every YAML alias and ``${VAR}`` expanded."""
MAX_MESSAGE = 600
"""Longest problem message printed (a value quoted in it may be huge)."""


@dataclass(frozen=True)
class Problem:
    line: int | None
    """1-based, None when unknown."""
    column: int | None
    key: str
    message: str


class SuiteError(Exception):
    """Everything wrong with a suite file, each problem with its line and key. Exit code 2."""

    exit_code = 2

    def __init__(self, path: Path | str | None, problems: Sequence[Problem]) -> None:
        self.path = Path(path) if path is not None else None
        self.problems = list(problems)
        super().__init__(self.format())

    @classmethod
    def single(cls, path: Path | str | None, key: str, message: str, mark: Any = None) -> SuiteError:
        line, col = line_col(mark)
        return cls(path, [Problem(line, col, key, message)])

    def format(self) -> str:
        """One line: the first problem (in file order), and how many more there are."""
        if not self.problems:
            return f"{self.path or '<suite>'}: invalid suite"
        text = self._line(self.problems[0])
        rest = self.problems[1:]
        if rest:
            lines = sorted({p.line for p in rest if p.line is not None})
            shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
            where = f" (line{'s' if len(lines) > 1 else ''} {shown})" if lines else ""
            plural = "s" if len(rest) > 1 else ""
            text += f"; and {len(rest)} more problem{plural}{where}: fix this one, then run again"
        return text

    def _line(self, p: Problem) -> str:
        where = str(self.path) if self.path is not None else "<suite>"
        pos = f"{where}:{p.line}:{p.column}" if p.line is not None else where
        key = f" {one_line(p.key, 120)}:" if p.key else ""
        return f"{pos}:{key} {one_line(p.message, MAX_MESSAGE)}"


def one_line(text: str, limit: int) -> str:
    """``text`` with line breaks and other unprintable characters escaped, shortened in the middle
    (the advice at the end stays) to at most about ``limit`` characters."""
    if len(text) > limit:
        text = f"{text[: limit * 2 // 3]} [...] {text[-(limit // 3) :]}"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text


def line_col(mark: Any) -> tuple[int | None, int | None]:
    if mark is None:
        return None, None
    return int(mark.line) + 1, int(mark.column) + 1


# ------------------------------------------------------------------------------ interpolation


def interpolate(data: Any, env: Mapping[str, str], path: Path | None) -> tuple[Any, set[str], list[Problem]]:
    """Replace ``${VAR}`` (``${VAR:-default}``; ``$${`` for a literal ``${``) in every string value, in
    place. Returns the data, the secret values (every substituted variable's value, and every string
    under a secret-looking key) and the problems (unset variables, malformed references, text that is
    not UTF-8, more than :data:`MAX_TEXT` characters substituted)."""
    run = _Interpolation(env)
    with contextlib.suppress(_OverBudget):  # its problem is recorded
        run.walk(data, ())
    return data, run.secrets, run.problems


class _OverBudget(Exception):
    """Interpolation stopped: it substituted more than :data:`MAX_TEXT` characters."""


_SURROGATE = (
    "which is not a character (a lone UTF-16 surrogate): write the character itself "
    "(\\U0001F600 for one beyond \\uFFFF)"
)


class _Interpolation:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.secrets: set[str] = set()
        self.problems: list[Problem] = []
        self.budget = MAX_TEXT
        # a YAML alias shares one object between places: interpolating it twice would undo `$${`
        self.visited: set[int] = set()

    def problem(self, key: tuple[Any, ...], mark: Any, message: str) -> None:
        line, col = line_col(mark)
        self.problems.append(Problem(line, col, dotted(key), message))

    def walk(self, node: Any, key: tuple[Any, ...]) -> None:
        if id(node) in self.visited:
            return
        self.visited.add(id(node))
        if isinstance(node, dict):
            marks = getattr(node, "marks", {})
            for k in list(node):
                if isinstance(k, str) and (bad := unencodable(k)) is not None:
                    self.problem((*key, k), marks.get(k), f"the key holds {bad!r}, {_SURROGATE}")
                v = node[k]
                if isinstance(v, str):
                    node[k] = self.text(v, (*key, k), marks.get(k))
                    if isinstance(k, str) and SECRET_KEY.search(k):
                        self.secrets.add(node[k])
                else:
                    self.walk(v, (*key, k))
        elif isinstance(node, list):
            marks = getattr(node, "marks", [])
            for i, v in enumerate(node):
                if isinstance(v, str):
                    node[i] = self.text(v, (*key, i), marks[i] if i < len(marks) else None)
                else:
                    self.walk(v, (*key, i))

    def text(self, value: str, key: tuple[Any, ...], mark: Any) -> str:
        """One string value, interpolated and checked."""
        if "${" in value:
            value = _VAR.sub(lambda m: self._sub(m, key, mark), value)
            if self.budget < 0:
                self.problem(
                    key,
                    mark,
                    f"the suite expands to more than {MAX_TEXT // (1024 * 1024)} MiB of text with "
                    "${...}: use fewer or shorter variables",
                )
                raise _OverBudget
        bad = unencodable(value)
        if bad is not None:
            self.problem(key, mark, f"the text holds {bad!r}, {_SURROGATE}")
        return value

    def _sub(self, m: re.Match[str], key: tuple[Any, ...], mark: Any) -> str:
        if m.group(0) == "$${":
            return "${"
        if not m.group(2):
            self.problem(
                key,
                mark,
                f"unclosed '{m.group(0)[:40]}': close it with '}}' (write $${{ for a literal '${{')",
            )
            return m.group(0)
        body = _VAR_BODY.fullmatch(m.group(1))
        if body is None or "${" in (body.group(2) or ""):
            message = f"malformed '{m.group(0)[:60]}': write ${{NAME}} or ${{NAME:-default}} (not nested)"
            self.problem(key, mark, message)
            return m.group(0)
        name, default = body.group(1), body.group(2)
        if name in self.env:
            found = self.env[name]
            bad = unencodable(found)
            if bad is not None:
                self.problem(
                    key, mark, f"environment variable {name} is not UTF-8 text (it holds {bad!r}): fix it"
                )
                return ""
            self.budget -= len(found)
            self.secrets.add(found)
            return found
        if default is not None:
            return default
        self.problem(
            key, mark, f"environment variable {name} is not set: export it, or write ${{{name}:-default}}"
        )
        return ""


def unencodable(text: str) -> str | None:
    """The first character of ``text`` that UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def dotted(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int) or part == "":
            out += f"[{part!r}]"  # an index, or an empty key
        else:
            out += f".{part}" if out else str(part)
    return out
