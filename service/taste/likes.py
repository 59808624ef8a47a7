"""The papers ``subscribers[].like`` names, found by title in the store
(:func:`service.glance.paper_named`), for fitting and for ``paperboy check``'s warnings.

Read through :mod:`service.glance`, so that ``check`` says which likes name no paper
without importing the store package or anything that learns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import glance
from ..errors import NotFound
from ..settings import Settings


def resolve_likes(db: glance.Reader, likes: Sequence[str]) -> tuple[list[int], list[str]]:
    """The papers ``likes`` name, and the ones that name no single paper (with why)."""
    found: list[int] = []
    unknown: list[str] = []
    for text in likes:
        try:
            paper_id, _ = glance.paper_named(db, text)
        except NotFound as exc:
            unknown.append(str(exc).splitlines()[0])
            continue
        if paper_id not in found:
            found.append(paper_id)
    return found, unknown


def like_warnings(db: glance.Reader, settings: Settings, config: Path) -> list[str]:
    """``paperboy check``'s warning for each configured like that names no single paper in
    the store, with its line in ``config`` (the like is skipped until it does)."""
    from ..settings.loading import lines_of

    unknown = []
    for i, sub in enumerate(settings.subscribers):
        for j, text in enumerate(sub.like):
            _, why = resolve_likes(db, [text])
            if why:
                unknown.append(((i, j), why[0]))
    lines = lines_of(config, [("subscribers", i, "like", j) for (i, j), _ in unknown])
    return [
        f"warning: {config}:{line or 1}: subscribers[{i}].like[{j}]: {why} "
        "(skipped until the store holds exactly one such paper)"
        for ((i, j), why), line in zip(unknown, lines, strict=True)
    ]
