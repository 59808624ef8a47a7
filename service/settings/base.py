"""What every part of the configuration's schema shares: durations, paths taken from the
config file's folder, the strict model, and an error that names a key deeper than its own."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, ValidationInfo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def duration(value: Any) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 1h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(duration)]


def resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    path = path.expanduser()
    return path if path.is_absolute() or base is None else Path(os.path.normpath(Path(base) / path))


# Every model: unknown keys refused, field names or aliases, frozen, defaults validated too.
# (Each module subclasses BaseModel with it, so that linters see a pydantic model.)
MODEL_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, validate_default=True)


class At(ValueError):
    """A validation error about a key deeper than the validator that found it."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)
