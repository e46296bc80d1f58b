"""The value types of the suite file that several of its models share: ids, commands, paths, counts.

Each validator turns a mistake into a message that says what to write instead; pydantic adds the key,
and :mod:`orchestrator.suite.yaml_loader` the file and line.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationInfo,
)

from ipc_bridge.durations import not_bool
from ipc_bridge.roo.shapes import RooCodeSettings
from orchestrator.suite.file_checks import kind_of

TARGET_PLACEHOLDERS = ("socket", "workspace", "slot")

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_id(value: str) -> str:
    # ids become file names: events/<case>__<model>__<repeat>__<attempt>.jsonl
    if not SAFE_ID.fullmatch(value) or ".." in value or "__" in value:
        raise ValueError(
            f"{_shown(value)} cannot be used in a file name: use letters, digits, '.', '_' and '-', start with a "
            "letter or digit, at most 64 characters, and no '..' or '__'"
        )
    return value


MAX_ARG_BYTES = 128 * 1024 - 256
"""Longest argument or environment value: Linux refuses exec (E2BIG) for a string over 128 KiB."""


def no_nul(value: str) -> str:
    """Text that can be passed to exec: an argument, a command, an environment value or path."""
    # a C string ends at NUL: exec and the environment cannot carry one (Python refuses at launch)
    if "\0" in value:
        raise ValueError(
            f"{_shown(value)} contains a NUL character (\\0), which no command line or environment can "
            "carry: remove it"
        )
    if len(value) * 4 > MAX_ARG_BYTES and len(value.encode("utf-8", "surrogatepass")) > MAX_ARG_BYTES:
        raise ValueError(
            f"{_shown(value)} is longer than {MAX_ARG_BYTES:,} bytes, more than one command-line argument or "
            "environment variable may hold: put the text in a file and pass its path"
        )
    return value


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value):,} characters)"


def _env_name(value: str) -> str:
    if not value or "=" in value or "\0" in value:
        raise ValueError(
            f"{_shown(value)} cannot be an environment variable name: a name is not empty and has no '=' "
            "or NUL; rename it"
        )
    return value


def _check_command(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return no_nul(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and value[0]:
        for v in value:
            no_nul(v)
        return value
    shown = _shown(value) if isinstance(value, str) else repr(value)[:80]
    raise ValueError(
        f"a command is a non-empty shell string (check: python -m pytest -q) or a list of arguments "
        f"(check: [python, -m, pytest]); got {shown}"
    )


def whole_number(value: Any) -> Any:
    """A count's before-validator: YAML's yes/no are no numbers (:func:`not_bool`)."""
    return not_bool(value, "a whole number")


def path_text(value: Any) -> Any:
    # Path("") is ".": an empty value (often an empty ${VAR}) would silently mean the suite's directory
    if isinstance(value, str) and not value.strip():
        raise ValueError("the path is empty: give a path, or remove the key")
    return no_nul(value) if isinstance(value, str) else value


def existing_path(path: Path, what: str, want_dir: bool) -> Path:
    if path.is_dir() if want_dir else path.is_file():
        return path
    where = "(relative paths start at the suite file's directory)"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            raise ValueError(f"{what} {path} cannot be used: {exc.strerror or exc} {where}") from None
        raise ValueError(f"{what} {path} does not exist: create it or fix the path {where}") from None
    is_kind = "a file" if stat.S_ISREG(mode) else kind_of(mode)
    want = "a directory" if want_dir else "a file"
    raise ValueError(f"{what} {path} is {is_kind}: give {want} {where}")


def base_dir(info: ValidationInfo) -> Path:
    ctx = info.context if isinstance(info.context, dict) else {}
    return Path(ctx.get("base_dir") or Path.cwd())


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    path = value.expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base_dir(info) / path))


SafeId = Annotated[str, AfterValidator(_check_id)]
ArgText = Annotated[str, AfterValidator(no_nul)]
"""Text that becomes a command-line argument."""
EnvMap = dict[Annotated[str, AfterValidator(_env_name)], ArgText]
"""Environment variables added to a process."""
Count = Annotated[int, BeforeValidator(whole_number)]
PathText = Annotated[Path, BeforeValidator(path_text)]
Command = Annotated[str | list[str], BeforeValidator(_check_command)]
"""A shell string (run with ``sh -c``) or an argv list."""
Settings = Annotated[RooCodeSettings, PlainSerializer(lambda s: s.wire(), return_type=dict)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
