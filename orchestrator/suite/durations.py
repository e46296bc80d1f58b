"""Durations as users write them in a suite file: ``5m``, ``90s``, ``500ms``, ``1h``, ``1m30s``, or seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*)+")

DURATION_HINT = "write a number of seconds or a number with a unit: 500ms, 90s, 5m, 1h (or combined: 1m30s)"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"5m"``; raises ValueError with a hint otherwise."""
    if isinstance(value, bool):
        # YAML turns "yes"/"no"/"on" into booleans; they are no durations
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            if text.startswith("-") and _WHOLE.fullmatch(text[1:].strip()):
                seconds = -1.0
            elif not text or not _WHOLE.fullmatch(text):
                raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}") from None
            else:
                seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    else:
        raise ValueError(f"invalid duration {value!r}: {DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: it must be a finite number; {DURATION_HINT}")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: it must be more than zero; {DURATION_HINT}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form (``"5m"``, ``"1m30s"``, ``"0.5s"``), inverse of :func:`parse_duration`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: accepts the forms of :func:`parse_duration`, holds seconds."""
