"""The one duration grammar: a suite's timers and a simulator script's timings are written alike.

A duration is a number of seconds (``90``, ``2.5``, ``"45"``, ``"1e3"``) or one or more numbers with a
unit (``"500ms"``, ``"90s"``, ``"2sec"``, ``"5m"``, ``"1.5min"``, ``"1h"``, ``"1m30s"``), letter case
and blanks around the parts ignored. It lives here, not in :mod:`orchestrator`, because the simulator
(which must not import the orchestrator) reads its scripts with it too.

Which values make sense is the field's business: a suite's timers must be more than zero
(:data:`PositiveDuration`), a script's pauses may be zero (:data:`Duration`). Negative, infinite and NaN
durations are refused everywhere.

The plain numbers of both (a suite's counts, a script's seed and time scale) share its one rule about
booleans: :func:`not_bool`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

DURATION_HINT = "write a number of seconds or a number with a unit: 500ms, 90s, 5m, 1h (or combined: 1m30s)"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_UNIT = "|".join(sorted(_UNIT_SECONDS, key=len, reverse=True))  # longest first: "min" before "m"
_PLAIN = re.compile(rf"[+-]?{_NUMBER}(?:e[+-]?\d+)?")
_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})")
_PARTS = re.compile(rf"(?:{_NUMBER}\s*(?:{_UNIT})\s*)+")


def _invalid(value: Any, why: str = "") -> ValueError:
    return ValueError(f"invalid duration {value!r}: {why}{DURATION_HINT}")


def _seconds(value: Any) -> float:
    """Finite seconds, of either sign, from a number or a string of the grammar."""
    if isinstance(value, bool):
        # YAML turns "yes"/"no"/"on" into booleans; they are no durations
        raise _invalid(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        negative = text.startswith("-")
        body = text[1:].lstrip() if negative else text
        if _PLAIN.fullmatch(text):
            seconds = float(text)
        elif body and _PARTS.fullmatch(body):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(body))
            seconds = -seconds if negative else seconds
        else:
            raise _invalid(value)
    else:
        raise _invalid(value)
    if not math.isfinite(seconds):
        raise _invalid(value, "it must be a finite number; ")
    return seconds


def not_bool(value: Any, expected: str = "a number") -> Any:
    """A pydantic before-validator of a number field: refuses a boolean, which YAML reads from yes/no/on/off
    and pydantic would take as 1 or 0. ``expected`` names the number in the error (``"a whole number"``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}: write a number such as 1 or 4")
    return value


def parse_duration(value: Any) -> float:
    """Seconds (zero or more) from a number or a string of the grammar above; ValueError with a hint
    otherwise."""
    seconds = _seconds(value)
    if seconds < 0:
        raise _invalid(value, "it must not be negative; ")
    return seconds


def parse_positive_duration(value: Any) -> float:
    """:func:`parse_duration`, more than zero (a timer of zero would fire before anything happened)."""
    seconds = _seconds(value)
    if seconds <= 0:
        raise _invalid(value, "it must be more than zero; ")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A pydantic field type: seconds, zero or more, from any form of the grammar."""
PositiveDuration = Annotated[float, BeforeValidator(parse_positive_duration)]
"""A pydantic field type: seconds, more than zero, from any form of the grammar."""
