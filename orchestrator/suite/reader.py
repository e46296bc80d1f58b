"""Reading a suite file into data that remembers where every key came from, within fixed bounds.

The file is opened without blocking (a FIFO waits for a writer), must be a regular file of at most
:data:`MAX_SUITE_BYTES`, and is parsed by libyaml (pure-Python PyYAML is ~30 µs a value) into
:class:`MarkedDict` / :class:`MarkedList`. Parsing is bounded too: at most :data:`MAX_DEPTH` levels of
nesting (deeper would exhaust the recursion of everything that walks the data), and at most
:data:`MAX_VALUES` values and :data:`MAX_TEXT` characters once YAML aliases are expanded (an alias
bomb is a few lines that expand to billions of values); cyclic aliases are refused. Only plain JSON
data is built: text, numbers that fit in 64 bits, booleans, null, lists and mappings. Every problem
becomes one :class:`SuiteError` with the line and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from orchestrator.suite.file_checks import MIB, FileCheckError, read_regular
from orchestrator.suite.yaml_loader import Problem, SuiteError

MAX_SUITE_BYTES = 2 * MIB
"""Largest suite file (long prompts belong in prompt_file: files)."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings (a suite needs about 8)."""
MAX_VALUES = 50_000
"""Most values (scalars, lists, mappings) in a suite, each use of an alias counted in full."""
MAX_TEXT = 16 * MIB
"""Most characters of text in a suite, each use of an alias counted in full."""
MAX_NUMBER_CHARS = 64
INT64 = 2**63

_TAG = "tag:yaml.org,2002:"
_REFUSED_TAGS = {"binary": "bytes", "timestamp": "a date", "set": "a set", "omap": "pairs", "pairs": "pairs"}


class MarkedDict(dict[Any, Any]):
    """A YAML mapping that remembers where it starts and where each key is."""

    start: Any = None
    marks: dict[Any, Any]


class MarkedList(list[Any]):
    """A YAML sequence that remembers where it starts and where each item is."""

    start: Any = None
    marks: list[Any]


class _Refused(yaml.MarkedYAMLError):
    """A problem found while reading the YAML that is not a syntax error; ``problem`` is the message."""

    def __init__(self, mark: Any, problem: str, key: str = "") -> None:
        super().__init__(None, None, problem, mark)
        self.key = key


class _Bounded(Composer):
    """PyYAML's composer, counting values and depth as it goes, over a parser (mixed in below)."""

    takes_bytes = False
    """Whether the parser reads the file's bytes (and reports byte offsets) rather than its text."""
    check_event: Callable[..., bool]
    peek_event: Callable[[], Any]
    get_single_data: Callable[[], Any]
    dispose: Callable[[], None]

    def _start(self) -> None:
        Composer.__init__(self)
        self.values = 0
        self.depth = 0

    def get_single_node(self) -> Node | None:
        # the Python composer, not libyaml's (that one recurses in C without a limit)
        return Composer.get_single_node(self)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(yaml.AliasEvent):
            self.values += 1
            mark = self.peek_event().start_mark
            if self.values > MAX_VALUES:
                raise _Refused(mark, _too_many("the file holds"))
            if self.depth >= MAX_DEPTH:
                raise _Refused(mark, _too_deep())
        self.depth += 1
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node: Node) -> Any:
        _check_expansion(node)
        return SafeConstructor.construct_document(self, node)  # type: ignore[arg-type]


class _PyLoader(_Bounded, yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start()


_Loader: type[_Bounded] = _PyLoader
if yaml.__with_libyaml__:

    class _CLoader(_Bounded, yaml.CSafeLoader):
        """libyaml's parser: ~5x faster than PyYAML's."""

        takes_bytes = True

        def __init__(self, stream: bytes) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            self._start()

    _Loader = _CLoader


# unquoted dates stay text (a suite has no date values), `=` is text, not YAML 1.1's "value" tag
_RESOLVERS = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_TAG + "timestamp", _TAG + "value")]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


def _too_many(what: str) -> str:
    return (
        f"{what} more than {MAX_VALUES:,} values (lists, mappings and scalars, each use of a YAML alias "
        "counted in full): split the suite, or use fewer aliases of aliases"
    )


def _too_deep() -> str:
    return (
        f"lists and mappings are nested more than {MAX_DEPTH} levels deep here (each use of a YAML alias "
        "counted in full): a suite needs only a few levels; flatten it"
    )


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases expand past the bounds, or refer to the node holding them.
    One iterative depth-first pass over the node graph, each node measured once."""
    measured: dict[int, tuple[int, int, int]] = {}  # id -> (values, characters, depth)
    open_nodes: set[int] = set()  # the lists and mappings on the path being measured
    stack: list[Node] = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        if key in measured:
            stack.pop()
        elif isinstance(node, ScalarNode):
            measured[key] = (1, len(node.value), 1)
            stack.pop()
        elif key not in open_nodes:  # first visit: measure the children first
            open_nodes.add(key)
            for child in _children(node):
                if id(child) in open_nodes:
                    raise _Refused(
                        child.start_mark,
                        "a YAML alias here refers to a list or mapping that holds it: the value would be "
                        "infinite; use the anchor outside of itself",
                    )
                if id(child) not in measured:
                    stack.append(child)
        else:
            stack.pop()
            open_nodes.discard(key)
            values, chars, depth = 1, 0, 0
            for child in _children(node):
                v, c, d = measured[id(child)]
                values, chars, depth = values + v, chars + c, max(depth, d)
            measured[key] = (values, chars, depth + 1)
            _check_measure(node, values, chars, depth + 1)


def _check_measure(node: Node, values: int, chars: int, depth: int) -> None:
    if values > MAX_VALUES:
        raise _Refused(node.start_mark, _too_many("this value expands to"))
    if chars > MAX_TEXT:
        raise _Refused(
            node.start_mark,
            f"this value expands to more than {MAX_TEXT // MIB} MiB of text (each use of a YAML alias "
            "counted in full): use fewer aliases of long text",
        )
    if depth > MAX_DEPTH:
        raise _Refused(node.start_mark, _too_deep())


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


# ---------------------------------------------------------------------------------- building


def _construct_mapping(loader: Any, node: Node) -> Iterator[MarkedDict]:
    if not isinstance(node, MappingNode):
        raise _Refused(node.start_mark, f"the tag {node.tag} needs a mapping here: remove the tag")
    data = MarkedDict()
    data.start = node.start_mark
    data.marks = {}
    yield data
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        # duplicates among the keys written here (merged `<<` keys may legally be overridden)
        if key_node.tag == _TAG + "merge" or not isinstance(key_node, ScalarNode):
            continue
        if key_node.value in seen:
            first = seen[key_node.value].line + 1
            message = f"duplicate key '{key_node.value}' (first on line {first}): keep only one of them"
            raise _Refused(key_node.start_mark, message, key=str(key_node.value))
        seen[key_node.value] = key_node.start_mark
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise _Refused(key_node.start_mark, "a mapping key must be a plain value: quote it") from None
        data[key] = loader.construct_object(value_node, deep=False)
        data.marks[key] = key_node.start_mark


def _construct_sequence(loader: Any, node: Node) -> Iterator[MarkedList]:
    if not isinstance(node, SequenceNode):
        raise _Refused(node.start_mark, f"the tag {node.tag} needs a list here: remove the tag")
    data = MarkedList()
    data.start = node.start_mark
    data.marks = [child.start_mark for child in node.value]
    yield data
    data.extend(loader.construct_object(child, deep=False) for child in node.value)


def _scalar(kind: str, build: Callable[[SafeConstructor, Any], Any]) -> Callable[[Any, Node], Any]:
    """A constructor of ``!!kind`` scalars that refuses what Python cannot turn into one (PyYAML would
    raise ValueError, KeyError or IndexError) and numbers that do not fit in 64 bits."""

    def construct(loader: Any, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise _Refused(node.start_mark, f"the tag !!{kind} needs a single value here: remove the tag")
        if kind in ("int", "float") and len(node.value) > MAX_NUMBER_CHARS:
            raise _Refused(
                node.start_mark, f"a number of {len(node.value):,} characters: quote it to make it text"
            )
        try:
            value = build(loader, node)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            raise _Refused(
                node.start_mark, f"{node.value[:40]!r} is not a valid !!{kind}: fix it, or remove the tag"
            ) from None
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            raise _Refused(node.start_mark, "the number does not fit in 64 bits: quote it to make it text")
        return value

    return construct


def _refuse_tag(kind: str) -> Callable[[Any, Node], Any]:
    def construct(loader: Any, node: Node) -> Any:
        raise _Refused(
            node.start_mark,
            f"the YAML tag !!{kind} ({_REFUSED_TAGS[kind]}) is not supported: a suite holds text, numbers, "
            "booleans, null, lists and mappings; remove the tag",
        )

    return construct


def _configure(loader: Any) -> None:
    loader.yaml_implicit_resolvers = _RESOLVERS
    loader.add_constructor(_TAG + "map", _construct_mapping)
    loader.add_constructor(_TAG + "seq", _construct_sequence)
    loader.add_constructor(_TAG + "int", _scalar("int", SafeConstructor.construct_yaml_int))
    loader.add_constructor(_TAG + "float", _scalar("float", SafeConstructor.construct_yaml_float))
    loader.add_constructor(_TAG + "bool", _scalar("bool", SafeConstructor.construct_yaml_bool))
    for kind in _REFUSED_TAGS:
        loader.add_constructor(_TAG + kind, _refuse_tag(kind))


_configure(_PyLoader)
_configure(_Loader)


# ----------------------------------------------------------------------------------- reading


def load_marked_yaml(path: Path) -> MarkedDict:
    """Read and parse a suite file whose top level must be a mapping; every problem (the path is not a
    readable regular file, too big, not UTF-8, invalid or unbounded YAML) is a :class:`SuiteError`."""
    try:
        data = read_regular(path, MAX_SUITE_BYTES, "the path", "move long prompts into prompt_file: files")
    except FileCheckError as exc:
        message = str(exc)
        if "does not exist" in message:
            message = "file not found: check the path"
        raise SuiteError.single(path, "", message) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col_at(data, exc.start)
        message = f"the file is not UTF-8 text (byte {data[exc.start]:#04x} here): save it as UTF-8"
        raise SuiteError(path, [Problem(line, col, "", message)]) from None
    loader = _Loader(data if _Loader.takes_bytes else text)  # type: ignore[call-arg]
    try:
        loaded = loader.get_single_data()
    except _Refused as exc:
        raise SuiteError.single(path, exc.key, exc.problem or "invalid YAML", exc.problem_mark) from None
    except yaml.MarkedYAMLError as exc:
        raise SuiteError.single(path, "", *_syntax_error(exc, text)) from None
    except yaml.reader.ReaderError as exc:
        offset = exc.position if _Loader.takes_bytes else len(text[: exc.position].encode("utf-8"))
        line, col = _line_col_at(data, offset)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        message = (
            f"the file contains the control character {char!r}, which YAML does not allow: remove it "
            "(inside a double-quoted string, write it as an escape such as \\t or \\x07)"
        )
        raise SuiteError(path, [Problem(line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise SuiteError(path, [Problem(1, 1, "", f"invalid YAML: {exc}; fix the file")]) from None
    finally:
        loader.dispose()
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


def _syntax_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, Any]:
    """The message and position of a YAML syntax error, with advice for the common ones."""
    problem, context, opened = exc.problem or "invalid YAML", exc.context, exc.context_mark
    mark = exc.problem_mark
    what = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    if opened is not None and (
        "end of stream" in problem or "<stream end>" in problem or _at_end(text, mark)
    ):
        # point at what was opened, not at the end of the file
        return f"{what}: the bracket or quote that starts here is never closed; close it", opened
    if "'\\t'" in problem or _char_at(text, mark) == "\t":
        return f"{what}: found '\\t': indent with spaces; YAML does not allow tabs for indentation", mark
    if "maximum nesting depth" in problem:
        return _too_deep(), mark
    if "Unicode character escape" in problem or "unicode character escape" in problem:
        return (
            f"{what}: a \\u escape here is not a character (a lone UTF-16 surrogate?): write the character "
            "itself, or \\U0001F600 for one beyond \\uFFFF",
            mark,
        )
    if "another document" in problem:
        return f"{what}: a suite is one YAML document; remove the '---' line and what follows", mark
    if "mapping values are not allowed" in problem:
        return f"{what}: a value that contains ': ' must be quoted", mark
    if opened is not None and mark is not None and opened.line != mark.line:
        what += f"; it started on line {opened.line + 1}"
    return f"{what}; fix the YAML at this position", mark or opened


def _char_at(text: str, mark: Any) -> str | None:
    if mark is None:
        return None
    lines = text.split("\n")
    if not 0 <= mark.line < len(lines):
        return None
    line = lines[mark.line]
    return line[mark.column] if 0 <= mark.column < len(line) else None


def _at_end(text: str, mark: Any) -> bool:
    """Whether nothing but blanks follows ``mark`` (libyaml does not say "end of stream")."""
    if mark is None:
        return False
    lines = text.split("\n")
    if mark.line >= len(lines):
        return True
    rest = "\n".join([lines[mark.line][mark.column :], *lines[mark.line + 1 :]])
    return not rest.strip()


def _line_col_at(data: bytes, offset: int) -> tuple[int, int]:
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", "replace")) + 1
