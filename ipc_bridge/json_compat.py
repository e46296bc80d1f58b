"""JSON as a host may write it, passed on as it was: what orjson alone would refuse or change.

orjson is the bridge's JSON (fast), but it reads an integer beyond 64 bits as a float (18446744073709551616
became 1.8446744073709552e19), refuses 1e400 and a lone surrogate escape (``"\\ud83d"``: JavaScript
writes one when a streamed text is cut inside an emoji), reads at most 1024 levels of nesting and writes
at most 254. Each of those is valid JSON, and a host's event that held one was dropped (or, nested too
deep to write, cost the connection). Here:

* :func:`loads` takes orjson's result unless the text has a run of 19 digits (where orjson may have
  rounded) or orjson refused it; then the standard library's parser reads it, with hooks that keep
  every number exactly: as ``int``, or for the bridge (``raw=True``) as :class:`RawNumber`, its text,
  when orjson could not write it back (beyond 64 bits, or beyond a double). Nesting deeper than the
  interpreter's recursion allows goes to an iterative parser, up to :data:`MAX_DEPTH` levels (node's
  ``JSON.stringify`` fails at a few thousand).
* :func:`dumps` is ``orjson.dumps`` that writes :class:`RawNumber` as its text, and falls back to an
  iterative encoder for what orjson refuses (deep nesting, lone surrogates, escaped as JSON does).

``NaN``, ``Infinity`` and invalid UTF-8 stay refused: they are not JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

MAX_DEPTH = 10_000
"""Deeper JSON is refused (it takes the bridge's memory, ~100 bytes a level, and no host writes it)."""
MAX_INT_DIGITS = 4300
"""Python's own limit for ``int(str)``; longer integers are read as floats by :func:`loads` (not raw)."""

_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_RUN = b"0" * 19
"""A run of 19 digits, once every digit reads as 0: where orjson may have rounded an integer. Translating
and searching costs a tenth of the regular expression ``\\d{19}`` (which took longer than the parse)."""
_TOKEN = re.compile(
    r'[ \t\n\r]*(?:([\[\]{}:,])|("(?:[^"\\]|\\.)*+")|(-?(?:0|[1-9]\d*+)(?:\.\d++)?(?:[eE][+-]?\d++)?)'
    r"|(true|false|null))",
    re.S,
)
_WORDS = {"true": True, "false": False, "null": None}
_INT64 = (-(2**63), 2**64 - 1)


class RawNumber:
    """A JSON number kept as its text, because orjson cannot write its value back."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def loads(data: bytes | bytearray | memoryview | str, *, raw: bool = False) -> Any:
    """The value of JSON ``data``; raises ``ValueError`` (``orjson.JSONDecodeError`` for most) if it
    is not JSON. ``raw``: numbers orjson cannot write back come as :class:`RawNumber`."""
    binary = data.encode() if isinstance(data, str) else data
    if not _has_long_digit_run(binary):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            first: ValueError = exc
    else:
        first = ValueError("integers orjson would round")
    try:
        text = bytes(binary).decode()
    except UnicodeDecodeError:
        raise first from None
    parse_int, parse_float = (_raw_int, _raw_float) if raw else (_int, float)
    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=_not_json)
    except RecursionError:
        return _parse_deep(text, parse_int, parse_float)
    except ValueError as exc:
        raise (first if isinstance(first, orjson.JSONDecodeError) else exc) from None


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, and what orjson refuses written all the same (see the module doc)."""
    try:
        return orjson.dumps(value, default=_fragment)
    except orjson.JSONEncodeError:
        return _dumps_iteratively(value).encode()


# ------------------------------------------------------------------------------------------ read


def _has_long_digit_run(data: bytes | bytearray | memoryview) -> bool:
    binary = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    return binary.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) >= 0


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def _int(text: str) -> int | float:
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


def _raw_int(text: str) -> int | RawNumber:
    if len(text) <= 20:
        value = int(text)
        if _INT64[0] <= value <= _INT64[1]:
            return value
    return RawNumber(text)


def _raw_float(text: str) -> float | RawNumber:
    value = float(text)
    return value if math.isfinite(value) else RawNumber(text)


def _parse_deep(text: str, parse_int: Any, parse_float: Any) -> Any:
    """The grammar of JSON without recursion, for nesting deeper than the interpreter allows."""
    stack: list[Any] = []  # open containers
    keys: list[Any] = []  # per open container: the key whose value comes next (objects)
    root: list[Any] = []
    state = "value"
    pos = 0

    def attach(value: Any) -> str:
        if not stack:
            root.append(value)
            return "end"
        parent = stack[-1]
        if type(parent) is list:
            parent.append(value)
        else:
            parent[keys[-1]] = value
        return "next"

    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        pos = m.end()
        punct, string, number, word = m.groups()
        if state in ("key", "key_or_close"):
            if string is not None:
                keys[-1] = json.loads(string)
                state = "colon"
            elif punct == "}" and state == "key_or_close":
                stack.pop(), keys.pop()
                state = "next" if stack else "end"
            else:
                break
        elif state == "colon":
            if punct != ":":
                break
            state = "value"
        elif state == "next":
            is_list = type(stack[-1]) is list
            if punct == ",":
                state = "value" if is_list else "key"
            elif punct == ("]" if is_list else "}"):
                stack.pop(), keys.pop()
                state = "next" if stack else "end"
            else:
                break
        elif state in ("value", "value_or_close"):
            if punct == "]" and state == "value_or_close":
                stack.pop(), keys.pop()
                state = "next" if stack else "end"
            elif punct in ("[", "{"):
                if len(stack) >= MAX_DEPTH:
                    raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
                container: Any = [] if punct == "[" else {}
                attach(container)
                stack.append(container)
                keys.append(None)
                state = "value_or_close" if punct == "[" else "key_or_close"
            elif string is not None:
                state = attach(json.loads(string))
            elif number is not None:
                state = attach(parse_float(number) if any(c in number for c in ".eE") else parse_int(number))
            elif word is not None:
                state = attach(_WORDS[word])
            else:
                break
        else:  # "end": nothing may follow the value
            break
    if state != "end" or text[pos:].strip(" \t\n\r"):
        raise ValueError(f"invalid JSON at character {pos}")
    return root[0]


# ----------------------------------------------------------------------------------------- write


def _fragment(value: Any) -> Any:
    if isinstance(value, RawNumber):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # lone surrogates escaped, as JSON.stringify does
    if isinstance(value, RawNumber):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # exact, where orjson stops at 64 bits
    return orjson.dumps(value, default=_fragment).decode()


def _dumps_iteratively(value: Any) -> str:
    out: list[str] = []
    # Per open container: its remaining items, its closing bracket, whether it is an object, and
    # whether an item was written yet.
    stack: list[tuple[Iterator[Any], str, bool, list[bool]]] = []

    def write(item: Any) -> None:
        if isinstance(item, dict):
            if len(stack) >= MAX_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
            out.append("{")
            stack.append((iter(item.items()), "}", True, [False]))
        elif isinstance(item, (list, tuple)):
            if len(stack) >= MAX_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
            out.append("[")
            stack.append((iter(item), "]", False, [False]))
        else:
            out.append(_scalar(item))

    write(value)
    while stack:
        items, closer, is_object, started = stack[-1]
        item: Any = next(items, _END)
        if item is _END:
            stack.pop()
            out.append(closer)
            continue
        if started[0]:
            out.append(",")
        started[0] = True
        if is_object:
            key: Any
            key, item = item
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            out.append(json.dumps(key))
            out.append(":")
        write(item)
    return "".join(out)


_END: Any = object()
