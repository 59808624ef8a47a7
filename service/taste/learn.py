"""Refitting readers' models when what they told us changed, not at every run.

What a model was fitted on is kept beside it as a mark (:func:`examples_mark`): the
reader's ratings (how many, the last time, their sum: one grouped query for everyone)
and their likes as resolved. :func:`learn` compares the marks and fits only the readers
whose mark moved, a chunk at a time: their ratings, their recent papers and the texts of
all of them in a few queries, each paper's vector made once.

``subscribers[].like`` names papers by title (or any unique part) or key; they are
resolved against the store when the list changes, and again while one is unknown and
new papers arrived. An unknown or ambiguous one is skipped (``paperboy check`` warns).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import Session

from .. import glance, store
from ..settings import Settings
from .likes import resolve_likes

if TYPE_CHECKING:
    from .space import Space

RECENT = 100  # a reader's latest papers that count as weak examples
BACKGROUND = 50  # the store's newest papers that count as weak examples for everyone
CHUNK = 500  # readers fitted per read of the store


@dataclass(slots=True)
class Learned:
    fitted: int = 0  # models fitted (or dropped: too few examples)
    unknown: dict[str, list[str]] = field(default_factory=dict)  # address: likes not found


def likes_mark(likes: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(likes).encode()).hexdigest()[:16]


def examples_mark(ratings: str, liked: Iterable[int]) -> str:
    return f"{ratings}|{','.join(map(str, sorted(liked)))}"


def load_space(session: Session, *, at: datetime) -> Space:
    """The store's word space for fitting: built, or rebuilt when the store grew by ``GROWTH``
    since, and kept in the store."""
    from .space import GROWTH, Space

    kept = store.taste_space(session=session)
    newest = store.newest_paper_id(session=session)
    if kept is not None and newest - kept.last_paper_id <= GROWTH * max(kept.papers, 1):
        return Space.from_bytes(kept.papers, kept.counts)
    space, papers = _built(session)
    row = store.TasteSpace(built_at=at, papers=papers, last_paper_id=newest, counts=space.to_bytes())
    store.save_space(session=session, space=row)
    return space


def kept_space(session: Session) -> Space:
    """The word space the models were fitted in, whatever its age, for scoring (a reading
    session: the fitting step rebuilds it); built here only when there is none yet."""
    from .space import Space

    kept = store.taste_space(session=session)
    if kept is not None:
        return Space.from_bytes(kept.papers, kept.counts)
    return _built(session)[0]


def _built(session: Session) -> tuple[Space, int]:
    """A word space over the store's newest ``SAMPLE`` papers, and how many it counts."""
    from .space import SAMPLE, Space

    texts = store.newest_texts(session=session, limit=SAMPLE)
    return Space.build([(t, a) for _, t, a in texts]), len(texts)


def learn(engine: Engine, settings: Settings, *, at: datetime) -> Learned:
    """Refit the models of the readers whose ratings or likes changed since their fit."""
    out = Learned()
    likes = {s.email.lower(): list(s.like) for s in settings.subscribers if s.like}
    with store.reading(engine) as session:
        marks = store.rating_marks(session=session)
        states = store.taste_states(session=session)
        if not (marks or likes or states):
            return out
        ids = store.receiving(session=session) if likes else {}
        newest = store.newest_paper_id(session=session)
        liked: dict[int, tuple[str, list[int]]] = {}  # subscriber id: (likes mark, paper ids)
        for email, texts in likes.items():
            sid = ids.get(email)
            if sid is None:
                continue
            mark, state = likes_mark(texts), states.get(sid)
            if state is not None and state.likes in (mark, f"{mark}@{newest}"):
                liked[sid] = (state.likes, state.liked)
                continue
            found, unknown = resolve_likes(glance.on_session(session), texts)
            if unknown:
                out.unknown[email] = unknown
            liked[sid] = (f"{mark}@{newest}" if unknown else mark, found)
    due = []
    for sid in set(marks) | set(liked) | set(states):
        mark = examples_mark(marks.get(sid, ""), liked.get(sid, ("", []))[1])
        state = states.get(sid)
        if state is None or state.examples != mark or state.likes != liked.get(sid, ("", []))[0]:
            due.append((sid, mark))
    if not due:
        return out
    with store.transaction(engine) as session:
        space = load_space(session, at=at)
    for start in range(0, len(due), CHUNK):
        chunk = due[start : start + CHUNK]
        with store.transaction(engine) as session:
            rows = _fit_chunk(session, space, chunk, liked)
            store.save_tastes(session=session, rows=rows, at=at)
        out.fitted += len(rows)
    return out


def _fit_chunk(
    session: Session, space: Space, due: list[tuple[int, str]], liked: dict[int, tuple[str, list[int]]]
) -> list[dict[str, Any]]:
    from .model import fit

    sids = [sid for sid, _ in due]
    ratings = store.ratings_by_reader(session=session, subscriber_ids=sids)
    recent = store.recent_papers(session=session, subscriber_ids=sids, each=RECENT)
    background = [p for p, *_ in store.newest_texts(session=session, limit=BACKGROUND)]
    examples: dict[int, dict[int, int]] = {}
    wanted: set[int] = set(background)
    for sid in sids:
        rated = {p: 1 for p in liked.get(sid, ("", []))[1]}
        rated.update(ratings.get(sid, {}))
        examples[sid] = rated
        wanted.update(rated, recent.get(sid, []))
    texts = store.paper_texts(session=session, paper_ids=wanted)
    order = list(texts)
    matrix = space.vectors([(texts[p][0], texts[p][1]) for p in order])
    place = {p: i for i, p in enumerate(order)}
    rows = []
    for sid, mark in due:
        model = fit(matrix, place, examples[sid], recent.get(sid, []) + background)
        rows.append(
            {
                "subscriber_id": sid,
                "examples": mark,
                "likes": liked.get(sid, ("", []))[0],
                "liked": liked.get(sid, ("", []))[1],
                "model": None if model is None else model.to_bytes(),
            }
        )
    return rows
