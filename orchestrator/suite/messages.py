"""Error messages that point into the suite file: pydantic's errors over the marked data become
problems with a line, a key and advice; duplicate ids are found before validation."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, BeforeValidator, ValidationError

from orchestrator.suite.reader import MarkedDict, MarkedList
from orchestrator.suite.yaml_loader import Problem, dotted, line_col


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
        line, col = line_col(mark)
        problems.append(Problem(line, col, key, msg))
    return problems


_UNION_ECHOES = {"bool_parsing", "bool_type", "literal_error", "none_required", "string_type"}


def _got(value: Any) -> str:
    if value is None:
        return " (got nothing)"
    if isinstance(value, str) and len(value) > 60:
        return f" (got {value[:40]!r}... of {len(value):,} characters)"
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
    if last == "[key]" and kind != "value_error":
        return f"keys here must be text{_got(value)}: quote the key"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root_model, loc[:-1])
        hint = f"; keys allowed here: {', '.join(allowed)}" if allowed else ""
        shown = f"'{last}'" if len(str(last)) <= 60 else f"'{str(last)[:40]}...'"
        return f"unknown key {shown}: remove it or fix its spelling{hint}"
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
            node = _validating_model(field.metadata) or field.annotation
    node = _unwrap(node, None)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _validating_model(metadata: Sequence[Any]) -> type[BaseModel] | None:
    """The model whose classmethod validates a field (``target.options``): its keys are the field's."""
    owners = [getattr(m.func, "__self__", None) for m in metadata if isinstance(m, BeforeValidator)]
    return next((o for o in owners if isinstance(o, type) and issubclass(o, BaseModel)), None)


def _unwrap(tp: Any, part: Any) -> Any:
    """One step into a type: Optional/Annotated away, list item for an index, the union member whose
    ``kind`` literal is ``part`` for a tag."""
    while True:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            tp = _validating_model(args[1:]) or args[0]
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
    """Duplicate ids found before validation, so the message points at the second one's line. Ids
    that differ only in letter case are duplicates too: their result files would be one file on a
    case-insensitive filesystem (macOS, Windows)."""
    problems: list[Problem] = []
    for section in ("cases", "models"):
        items = raw.get(section)
        if not isinstance(items, list):
            continue
        first: dict[str, tuple[int, str]] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            mark = item.marks.get("id") if isinstance(item, MarkedDict) else None
            line = mark.line + 1 if mark is not None else None
            folded = item["id"].casefold()
            if folded in first:
                first_line, first_id = first[folded]
                same = (
                    ""
                    if first_id == item["id"]
                    else f" as {first_id!r}: ids that differ only in letter case collide"
                )
                problems.append(
                    Problem(
                        line,
                        mark.column + 1 if mark is not None else None,
                        f"{section}[{i}].id",
                        f"duplicate {section[:-1]} id {item['id']!r} (first on line {first_line}{same}): "
                        "ids must be unique; rename one",
                    )
                )
            elif line is not None:
                first[folded] = (line, item["id"])
    return problems
