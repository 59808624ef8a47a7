"""What every part of the configuration's schema shares: durations, paths taken from the
config file's folder, the strict model, and an error that names a key deeper than its own."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

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


# SQLAlchemy's grammar of a database URL (``sqlalchemy.engine.url._parse_url``), read here
# so that loading the configuration does not import SQLAlchemy: a fifth of a second that
# ``status``, ``check`` and the sending process would pay for one regular expression.
_URL = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)


def database_url(value: str, info: ValidationInfo) -> str:
    """``value`` if SQLAlchemy would read it as a database URL; a SQLite file's path taken
    from the config file's folder, as SQLAlchemy would write it back."""
    found = _URL.match(value)
    if found is None:
        raise ValueError(f"{value!r} is not a database URL such as sqlite:///var/paperboy.db")
    path = sqlite_file(value)
    if path is None:
        return value
    start, end = found.span("database")
    return value[:start] + quote(str(resolve(path, info)), safe=" +/") + value[end:]


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or one in memory."""
    found = _URL.match(url)
    if found is None or found["name"].partition("+")[0] != "sqlite":
        return None
    database = unquote(found["database"] or "")
    return None if database in ("", ":memory:") else Path(database)


# Every model: unknown keys refused, field names or aliases, frozen, defaults validated too.
# (Each module subclasses BaseModel with it, so that linters see a pydantic model.)
MODEL_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, validate_default=True)


class At(ValueError):
    """A validation error about a key deeper than the validator that found it."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)
