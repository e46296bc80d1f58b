"""YAML with line numbers, ``${VAR}`` interpolation, redaction, and error messages that point into the file.

The suite models (:mod:`orchestrator.config`) validate plain data; this module keeps, beside the data,
where every key and list item came from, so that any problem (a YAML syntax error, an unknown key, a
wrong type, an unset variable, a missing file) becomes one :class:`SuiteError` naming the file, the
line, the key and what to do.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

SECRET_KEY = re.compile(r"key|token|secret|password", re.IGNORECASE)
"""A string value under a key matching this is a secret, wherever it came from."""

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


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
        line, col = _line_col(mark)
        return cls(path, [Problem(line, col, key, message)])

    def format(self) -> str:
        where = str(self.path) if self.path is not None else "<suite>"
        lines = []
        for p in self.problems:
            pos = f"{where}:{p.line}:{p.column}" if p.line is not None else where
            key = f" {p.key}:" if p.key else ""
            lines.append(f"{pos}:{key} {p.message}")
        return "\n".join(lines)


def _line_col(mark: Any) -> tuple[int | None, int | None]:
    if mark is None:
        return None, None
    return int(mark.line) + 1, int(mark.column) + 1


# ------------------------------------------------------------------------------- marked YAML


class MarkedDict(dict[Any, Any]):
    """A YAML mapping that remembers where it starts and where each key is."""

    start: Any = None
    marks: dict[Any, Any]


class MarkedList(list[Any]):
    """A YAML sequence that remembers where it starts and where each item is."""

    start: Any = None
    marks: list[Any]


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterator[MarkedDict]:
    data = MarkedDict()
    data.start = node.start_mark
    data.marks = {}
    yield data
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        # duplicates among the keys written here (merged `<<` keys may legally be overridden)
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        if key_node.value in seen:
            first = seen[key_node.value].line + 1
            raise _DuplicateKey(
                None,
                None,
                f"duplicate key '{key_node.value}' (first on line {first}): keep only one",
                key_node.start_mark,
            )
        seen[key_node.value] = key_node.start_mark
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        data[key] = loader.construct_object(value_node, deep=False)
        data.marks[key] = key_node.start_mark


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Iterator[MarkedList]:
    data = MarkedList()
    data.start = node.start_mark
    data.marks = [child.start_mark for child in node.value]
    yield data
    data.extend(loader.construct_object(child, deep=False) for child in node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_marked_yaml(path: Path) -> MarkedDict:
    """Parse a YAML file whose top level must be a mapping; errors become a :class:`SuiteError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError.single(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError.single(path, "", f"cannot read the file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        what = problem if isinstance(exc, _DuplicateKey) else f"YAML syntax error: {problem}"
        if exc.context and not isinstance(exc, _DuplicateKey):
            what += f" ({exc.context})"
        raise SuiteError.single(path, "", f"{what}; fix the YAML at this position", mark) from None
    except yaml.YAMLError as exc:
        raise SuiteError.single(path, "", f"YAML error: {exc}") from None
    if not isinstance(data, MarkedDict):
        kind = "empty" if data is None else "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise SuiteError.single(path, "", f"the file is {kind}; a suite is a mapping with name:, cases:, ...")
    return data


# ------------------------------------------------------------------------------ interpolation


def interpolate(data: Any, env: Mapping[str, str], path: Path | None) -> tuple[Any, set[str], list[Problem]]:
    """Replace ``${VAR}`` (``${VAR:-default}``; ``$${`` for a literal ``${``) in every string value, in
    place. Returns the data, the secret values (every substituted variable's value, and every string
    under a secret-looking key) and the problems (unset variables, malformed references)."""
    secrets: set[str] = set()
    problems: list[Problem] = []

    def one(value: str, key: tuple[Any, ...], mark: Any) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            body = _VAR_BODY.fullmatch(m.group(1))
            line, col = _line_col(mark)
            if body is None:
                problems.append(
                    Problem(
                        line,
                        col,
                        dotted(key),
                        f"malformed '{m.group(0)}': write ${{NAME}} or ${{NAME:-default}}",
                    )
                )
                return m.group(0)
            name, default = body.group(1), body.group(2)
            if name in env:
                secrets.add(env[name])
                return env[name]
            if default is not None:
                return default
            problems.append(
                Problem(
                    line,
                    col,
                    dotted(key),
                    f"environment variable {name} is not set: export it, or write ${{{name}:-default}}",
                )
            )
            return ""

        return _VAR.sub(sub, value)

    visited: set[int] = set()

    def walk(node: Any, key: tuple[Any, ...]) -> None:
        # a YAML alias shares one object between places: interpolating it twice would undo `$${`
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, dict):
            marks = getattr(node, "marks", {})
            for k in list(node):
                v = node[k]
                if isinstance(v, str):
                    node[k] = one(v, (*key, k), marks.get(k))
                    if isinstance(k, str) and SECRET_KEY.search(k):
                        secrets.add(node[k])
                else:
                    walk(v, (*key, k))
        elif isinstance(node, list):
            marks = getattr(node, "marks", [])
            for i, v in enumerate(node):
                if isinstance(v, str):
                    node[i] = one(v, (*key, i), marks[i] if i < len(marks) else None)
                else:
                    walk(v, (*key, i))

    walk(data, ())
    return data, secrets, problems


# ---------------------------------------------------------------------------------- redaction


REDACTED = "***"
MIN_SECRET_LEN = 4
"""Shorter secret values are still redacted where they stand whole, but not searched for inside text
(replacing every "on" or "1" in a transcript would destroy it)."""


class Redactor:
    """Replaces secrets in text and JSON-like data: whole string values under secret-looking keys
    (``*key*``, ``*token*``, ``*secret*``, ``*password*``), and every occurrence of a known secret value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._whole = frozenset(s for s in secrets if s)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def text(self, value: str) -> str:
        if value in self._whole:
            return REDACTED
        return self._pattern.sub(REDACTED, value) if self._pattern is not None else value

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {
                k: (
                    REDACTED
                    if isinstance(v, str) and v and isinstance(k, str) and SECRET_KEY.search(k)
                    else self(v)
                )
                for k, v in obj.items()
            }
        if isinstance(obj, (list, tuple)):
            return [self(v) for v in obj]
        return obj


# ------------------------------------------------------------------------------ error messages


def dotted(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def locate(raw: Any, loc: Sequence[Any]) -> tuple[Any, list[Any], bool]:
    """Follow a pydantic error location through the marked data: the mark of the deepest key found,
    the path of keys found, and whether the whole location was found. Parts that are not in the data
    (the tag of a discriminated union, ``str``/``list[str]`` of a union) are skipped."""
    node = raw
    mark = getattr(raw, "start", None)
    found: list[Any] = []
    complete = True
    for part in loc:
        if isinstance(node, dict) and part in node:
            mark = node.marks.get(part, mark) if isinstance(node, MarkedDict) else mark
            node = node[part]
            found.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            mark = node.marks[part] if isinstance(node, MarkedList) else mark
            node = node[part]
            found.append(part)
        else:
            complete = False
    return mark, found, complete


def validation_problems(exc: ValidationError, raw: Any, root_model: type[BaseModel]) -> list[Problem]:
    """Turn a pydantic ValidationError over ``raw`` into problems with lines and advice."""
    problems: list[Problem] = []
    seen: set[tuple[Any, ...]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "union_tag_invalid":  # point at the tag itself, not at the mapping holding it
            loc = (*loc, str((err.get("ctx") or {}).get("discriminator", "")).strip("'"))
        mark, found, complete = locate(raw, loc)
        key_parts = list(found)
        last = loc[-1] if loc else None
        if not complete and kind == "missing" and isinstance(last, str):
            key_parts.append(last)
        key = dotted(key_parts)
        msg = _advice(err, loc, root_model)
        sig = (key, msg)
        if sig in seen:
            continue
        seen.add(sig)
        line, col = _line_col(mark)
        problems.append(Problem(line, col, key, msg))
    return problems


def _advice(err: Any, loc: tuple[Any, ...], root_model: type[BaseModel]) -> str:
    kind = err["type"]
    last = loc[-1] if loc else ""
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root_model, loc[:-1])
        hint = f"; keys allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{last}': remove it or fix its spelling{hint}"
    if kind == "missing":
        return f"missing required key '{last}': add it"
    if kind == "union_tag_invalid":
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {ctx.get('discriminator', 'kind')} {ctx.get('tag')!r}: use one of {tags}"
    if kind == "union_tag_not_found":
        return f"missing required key {ctx.get('discriminator', 'kind')}: add it"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    value = err.get("input")
    got = f" (got {value!r})" if isinstance(value, (str, int, float, bool)) or value is None else ""
    return msg[0].lower() + msg[1:] + got if msg else kind


def _allowed_keys(model: Any, loc: Sequence[Any]) -> list[str]:
    """The keys of the model found at a location (best effort: empty when not a model)."""
    node: Any = model
    for part in loc:
        node = _unwrap(node, part)
        if node is None:
            return []
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(part, str):
            field = node.model_fields.get(part)
            if field is None:
                continue  # a union tag: `node` is already the tagged model
            node = field.annotation
    node = _unwrap(node, None)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap(tp: Any, part: Any) -> Any:
    """One step into a type: Optional/Annotated away, list item for an index, the union member whose
    ``kind`` literal is ``part`` for a tag."""
    while True:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            tp = args[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            for m in models:
                kind = m.model_fields.get("kind")
                if kind is not None and part in typing.get_args(kind.annotation):
                    return m
            if len(members) == 1:
                tp = members[0]
                continue
            return models[0] if len(models) == 1 else tp
        if origin is list and isinstance(part, int):
            return args[0] if args else None
        if origin is dict and isinstance(part, str):
            return args[1] if len(args) > 1 else None
        return tp


def duplicate_ids(raw: MarkedDict) -> list[Problem]:
    """Duplicate ids found before validation, so the message points at the second one's line."""
    problems: list[Problem] = []
    for section in ("cases", "models"):
        items = raw.get(section)
        if not isinstance(items, list):
            continue
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            mark = item.marks.get("id") if isinstance(item, MarkedDict) else None
            line = mark.line + 1 if mark is not None else None
            if item["id"] in first:
                problems.append(
                    Problem(
                        line,
                        mark.column + 1 if mark is not None else None,
                        f"{section}[{i}].id",
                        f"duplicate {section[:-1]} id {item['id']!r} (first on line {first[item['id']]}): "
                        "ids must be unique; rename one",
                    )
                )
            elif line is not None:
                first[item["id"]] = line
    return problems
