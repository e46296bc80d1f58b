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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ipc_bridge.redaction import SECRET_KEY

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
    key = ""


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
            error = _DuplicateKey(
                None,
                None,
                f"duplicate key '{key_node.value}' (first on line {first}): keep only one of them",
                key_node.start_mark,
            )
            error.key = str(key_node.value)
            raise error
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
        data = path.read_bytes()
    except FileNotFoundError:
        raise SuiteError.single(path, "", "file not found: check the path") from None
    except OSError as exc:
        raise SuiteError.single(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col_at(data, exc.start)
        message = f"the file is not UTF-8 text (byte {data[exc.start]:#04x} here): save it as UTF-8"
        raise SuiteError(path, [Problem(line, col, "", message)]) from None
    try:
        loaded = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SuiteError.single(path, exc.key, exc.problem or "duplicate key", exc.problem_mark) from None
    except yaml.MarkedYAMLError as exc:
        raise SuiteError.single(path, "", *_syntax_error(exc)) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col_at(data, len(text[: exc.position].encode("utf-8")))
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        message = (
            f"the file contains the control character {char!r}, which YAML does not allow: remove it "
            "(inside a double-quoted string, write it as an escape such as \\t or \\x07)"
        )
        raise SuiteError(path, [Problem(line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise SuiteError(path, [Problem(1, 1, "", f"invalid YAML: {exc}; fix the file")]) from None
    if not isinstance(loaded, MarkedDict):
        kind = (
            "empty"
            if loaded is None
            else "a list"
            if isinstance(loaded, list)
            else f"a single {type(loaded).__name__} value"
        )
        message = f"the file is {kind}; a suite is a mapping of keys: start with 'name: ...' and 'cases:'"
        raise SuiteError(path, [Problem(1, 1, "", message)])
    return loaded


def _syntax_error(exc: yaml.MarkedYAMLError) -> tuple[str, Any]:
    """The message and position of a YAML syntax error, with advice for the common ones."""
    problem, context, opened = exc.problem or "invalid YAML", exc.context, exc.context_mark
    what = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if opened is not None and ("end of stream" in problem or "<stream end>" in problem):
        # point at what was opened, not at the end of the file
        return f"{what}: the bracket or quote that starts here is never closed; close it", opened
    if "'\\t'" in problem:
        return f"{what}: indent with spaces; YAML does not allow tabs for indentation", exc.problem_mark
    if "another document" in problem:
        return (
            f"{what}: a suite is one YAML document; remove the '---' line and what follows",
            exc.problem_mark,
        )
    if "mapping values are not allowed" in problem:
        return f"{what}: a value that contains ': ' must be quoted", exc.problem_mark
    mark = exc.problem_mark
    if opened is not None and mark is not None and opened.line != mark.line:
        what += f"; it started on line {opened.line + 1}"
    return f"{what}; fix the YAML at this position", mark or opened


def _line_col_at(data: bytes, offset: int) -> tuple[int, int]:
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", "replace")) + 1


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
            found.append(str(part))  # a mapping key, even a number, is no list index
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
        # One mistake, one message: a union reports each member's complaint about the same value.
        if key in {s[0] for s in seen} and kind in _UNION_ECHOES:
            continue
        sig = (key, msg)
        if sig in seen:
            continue
        seen.add(sig)
        line, col = _line_col(mark)
        problems.append(Problem(line, col, key, msg))
    return problems


_UNION_ECHOES = {"bool_parsing", "bool_type", "literal_error", "none_required", "string_type"}


def _got(value: Any) -> str:
    if value is None:
        return " (got nothing)"
    if isinstance(value, (str, int, float, bool)):
        return f" (got {value!r})"
    if isinstance(value, dict):
        return " (got a mapping)"
    if isinstance(value, list):
        return " (got a list)"
    return ""


def _advice(err: Any, loc: tuple[Any, ...], root_model: type[BaseModel]) -> str:
    kind = err["type"]
    last = loc[-1] if loc else ""
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if last == "[key]":
        return f"keys here must be text{_got(value)}: quote the key"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root_model, loc[:-1])
        hint = f"; keys allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key '{last}': remove it or fix its spelling{hint}"
    if kind == "missing":
        return f"missing required key '{last}': add it"
    discriminator = str(ctx.get("discriminator", "kind")).strip("'")
    if kind == "union_tag_invalid":
        tags = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown {discriminator} {ctx.get('tag')!r}: use one of {tags}"
    if kind == "union_tag_not_found":
        if not isinstance(value, dict):
            return f"should be a mapping of keys ({discriminator}: ..., and the others){_got(value)}"
        return f"missing required key '{discriminator}': add it"
    if kind == "too_short":
        return f"the list is empty: give at least {ctx.get('min_length', 1)} item(s)"
    if kind == "string_too_short":
        return "the value is empty: give one, or remove the key to use the default"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping of keys (key: value lines, or {{key: value}}){_got(value)}"
    if kind == "list_type":
        return f"should be a list ('- item' lines, or [a, b]){_got(value)}"
    if kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"should be text{_got(value)}: put it in quotes, e.g. '{value}'"
    if kind == "string_type" and isinstance(value, bool):
        return f"should be text{_got(value)}: YAML reads yes/no/on/off/true/false as booleans; quote it"
    if kind == "invalid_key":
        return f"keys here must be text{_got(value)}: quote the key"
    if kind in ("path_type", "path_parsing"):
        return f"should be a path (text){_got(value)}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg[0].lower() + msg[1:] + _got(value) if msg else kind


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
