"""Secrets out of everything a process shows: the redactor, and its one choke point for a process's output.

A process that knows secrets (the orchestrator, its workers and Ray node actors, a bridge told them with
``--secrets-fd``) calls :func:`redact_process_output` once, first thing: from then on every line it
writes to its stdout or stderr, whoever writes it (``logging``, ``click.echo``, tqdm, a traceback of an
uncaught exception, a warning), passes through the redactor. The files of a run pass through it where
they are written (:mod:`orchestrator.results.store`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

SECRET_KEY = re.compile(r"key|token|secret|password", re.IGNORECASE)
"""A string value under a key matching this is a secret, wherever it came from; an environment variable
whose name matches it is never passed on to a child process that was not given it explicitly."""

REDACTED = "***"
MIN_SECRET_LEN = 4
"""Shorter secret values are still redacted where they stand whole, but not searched for inside text
(replacing every "on" or "1" in a transcript would destroy it)."""


class Redactor:
    """Replaces secrets in text and JSON-like data: whole string values under secret-looking keys
    (``*key*``, ``*token*``, ``*secret*``, ``*password*``), and every occurrence of a known secret value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        secrets = [s for s in secrets if isinstance(s, str)]
        self.values = frozenset(s for s in secrets if s)
        """The secret values (what a child process that redacts its own output is told)."""
        longest_first = sorted({s for s in self.values if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def text(self, value: str) -> str:
        if value in self.values:
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


class RedactingStream(io.TextIOBase):
    """A text stream that writes through ``redactor`` to ``stream``. It has no ``buffer``: nobody (click
    looks for one) can go around it to the bytes underneath."""

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.stream = stream
        self.redactor = redactor

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes with bytes to tell text streams from binary ones
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.stream.write(self.redactor.text(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.stream, "encoding", None) or "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)


def redact_process_output(redactor: Redactor) -> None:
    """Make this process's stdout and stderr redact ``redactor``'s secrets, and every logging handler
    writing to either of them write through them. Idempotent: a later call replaces the redactor."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if isinstance(current, RedactingStream):
            current.redactor = redactor
            continue
        wrapped = RedactingStream(current, redactor)
        setattr(sys, name, wrapped)
        for handler in _stream_handlers():
            if handler.stream is current:
                handler.setStream(wrapped)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        h
        for lg in loggers
        if isinstance(lg, logging.Logger)
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


# ------------------------------------------------------------------------ passing secrets to a child


def send_secrets(fd: int, secrets: Iterable[str]) -> None:
    """Write ``secrets`` to the pipe ``fd`` (then closed) for a child's :func:`receive_secrets`: a pipe,
    because a child's environment and command line are readable by every process of its user."""
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(json.dumps(sorted(secrets)).encode())


def receive_secrets(fd: int) -> Redactor:
    """The redactor of the secrets a parent wrote with :func:`send_secrets` (read to EOF, then closed)."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    values = json.loads(data) if data else []
    if not isinstance(values, list):
        raise ValueError("the secrets pipe holds no JSON list")
    return Redactor(str(v) for v in values)
