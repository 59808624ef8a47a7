"""Validated configurations kept between processes, for the big ones.

A quiet ``paperboy run --once`` (cron, every few minutes) spends most of its time reading
the configuration when it lists thousands of subscribers: parsing 10,000 of them and
validating every address and rule costs 0.5 s, every time, for a file that did not
change. A valid configuration of ``CACHE_FROM`` bytes or more is therefore kept, pickled,
in the user's cache folder, under a key made of everything its meaning depends on:

- the file's bytes, its path and the folder relative paths are taken from;
- the value of each environment variable it names (``${VAR}``);
- paperboy's version and the size and time of each file of :mod:`service.settings`.

A configuration that reads another file while it is validated (a DKIM key) is not kept.
The folder (``$PAPERBOY_CACHE``, else ``$XDG_CACHE_HOME/paperboy``, else
``~/.cache/paperboy``) is made private (0700); one that another user could write to, or
that cannot be made, is not used, and nothing is cached. The newest ``KEEP`` entries stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from .. import __version__

CACHE_FROM = 64 * 1024  # bytes: a smaller file is read in a few milliseconds
KEEP = 8  # entries kept
_ENV_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def folder() -> Path | None:
    """The cache folder, made private; None when there is none to trust."""
    if os.environ.get("PAPERBOY_CACHE"):
        where = Path(os.environ["PAPERBOY_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        where = Path(os.environ["XDG_CACHE_HOME"]) / "paperboy"
    else:
        where = Path.home() / ".cache" / "paperboy"
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = where.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return where


def key(text: str, source: str, base: Path | None) -> str | None:
    """The entry's name for this configuration, or None when it is not to be kept."""
    if len(text) < CACHE_FROM or "dkim" in text:
        return None
    digest = hashlib.sha256()
    for part in (__version__, source, str(base), text):
        digest.update(part.encode() + b"\0")
    for name in sorted(set(_ENV_NAME.findall(text))):
        digest.update(f"{name}={os.environ.get(name)}".encode() + b"\0")
    for code in sorted(Path(__file__).parent.glob("*.py")):
        info = code.stat()
        digest.update(f"{code.name}:{info.st_size}:{info.st_mtime_ns}".encode() + b"\0")
    return f"settings-{digest.hexdigest()[:40]}.pickle"


def get(name: str) -> Any:
    """The settings kept under ``name``, or None."""
    where = folder()
    if where is None:
        return None
    try:
        data = (where / name).read_bytes()
        return pickle.loads(data)
    except Exception:  # missing, or written by another version of a library: read the file
        return None


def put(name: str, settings: Any) -> None:
    """Keep ``settings`` under ``name`` (atomically), and only the newest ``KEEP`` entries."""
    where = folder()
    if where is None:
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=where, prefix=".settings-")
        with os.fdopen(fd, "wb") as out:
            pickle.dump(settings, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, where / name)
        entries = sorted(where.glob("settings-*.pickle"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temporary)
