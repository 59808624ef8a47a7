"""Learned tastes: the word space, each reader's model, and what fitting one reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from .engine import chunks, core, insert_for
from .tables import Delivery, DeliveryState, Paper, Rating, Taste, TasteSpace


def taste_space(*, session: Session) -> TasteSpace | None:
    """The newest word space, or None before the first."""
    stmt = sa_select(TasteSpace).order_by(col(TasteSpace.id).desc()).limit(1)
    found: TasteSpace | None = session.execute(stmt).scalars().first()
    return found


def save_space(*, session: Session, space: TasteSpace) -> None:
    """Keep ``space`` as the word space, in place of every older one."""
    session.add(space)
    session.flush()
    core(session).execute(delete(TasteSpace).where(col(TasteSpace.id) != space.id))


def newest_paper_id(*, session: Session) -> int:
    return int(core(session).execute(sa_select(func.max(Paper.id))).scalar() or 0)


def newest_texts(*, session: Session, limit: int) -> list[tuple[int, str, str]]:
    """(id, title, abstract) of the newest ``limit`` papers not forgotten."""
    stmt = (
        sa_select(col(Paper.id), col(Paper.title), col(Paper.abstract))
        .where(col(Paper.forgotten_at).is_(None))
        .order_by(col(Paper.id).desc())
        .limit(limit)
    )
    rows: Any = core(session).execute(stmt).all()
    return [(int(i), t, a) for i, t, a in rows]


def rating_marks(*, session: Session) -> dict[int, str]:
    """For each reader who rated: a mark that changes with any new or changed rating
    (how many, and the last time), from one grouped query."""
    stmt = sa_select(
        col(Rating.subscriber_id), func.count(), func.max(Rating.rated_at), func.sum(Rating.value)
    ).group_by(col(Rating.subscriber_id))
    return {int(s): f"{n}:{last}:{total}" for s, n, last, total in core(session).execute(stmt)}


@dataclass(frozen=True, slots=True)
class TasteState:
    """What a reader's model was fitted on (the model itself is read apart)."""

    examples: str
    likes: str
    liked: list[int]
    fitted: bool
    suggested_through: int


def taste_states(*, session: Session) -> dict[int, TasteState]:
    stmt = sa_select(
        col(Taste.subscriber_id),
        col(Taste.examples),
        col(Taste.likes),
        col(Taste.liked),
        col(Taste.model).is_not(None),
        col(Taste.suggested_through),
    )
    rows: Any = core(session).execute(stmt).all()
    return {int(s): TasteState(e, k, list(d), bool(m), int(t)) for s, e, k, d, m, t in rows}


def models(*, session: Session, subscriber_ids: Iterable[int]) -> dict[int, bytes]:
    """The fitted models of these readers (those who have one), by subscriber id."""
    out: dict[int, bytes] = {}
    for chunk in chunks(list(subscriber_ids)):
        stmt = sa_select(col(Taste.subscriber_id), col(Taste.model)).where(
            col(Taste.subscriber_id).in_(chunk), col(Taste.model).is_not(None)
        )
        rows: Any = core(session).execute(stmt).all()
        out.update({int(s): bytes(m) for s, m in rows})
    return out


def liked_papers(*, session: Session, subscriber_id: int) -> list[int]:
    """The papers a reader likes: rated "more like this" or named in their ``like``."""
    stmt = sa_select(col(Rating.paper_id)).where(
        col(Rating.subscriber_id) == subscriber_id, col(Rating.value) > 0
    )
    rated = [int(p) for (p,) in core(session).execute(stmt)]
    state = (
        core(session)
        .execute(sa_select(col(Taste.liked)).where(col(Taste.subscriber_id) == subscriber_id))
        .scalar_one_or_none()
    )
    return rated + [p for p in state or [] if p not in rated]


def ratings_by_reader(*, session: Session, subscriber_ids: Sequence[int]) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for chunk in chunks(list(subscriber_ids)):
        stmt = sa_select(col(Rating.subscriber_id), col(Rating.paper_id), col(Rating.value)).where(
            col(Rating.subscriber_id).in_(chunk)
        )
        for s, p, v in core(session).execute(stmt):
            out.setdefault(int(s), {})[int(p)] = int(v)
    return out


def recent_papers(*, session: Session, subscriber_ids: Sequence[int], each: int) -> dict[int, list[int]]:
    """The ``each`` papers last matched for each reader (cancelled ones left out), newest first:
    one windowed query per thousand readers."""
    out: dict[int, list[int]] = {}
    for chunk in chunks(list(subscriber_ids)):
        place = (
            func.row_number()
            .over(partition_by=col(Delivery.subscriber_id), order_by=col(Delivery.id).desc())
            .label("place")
        )
        inner = (
            sa_select(col(Delivery.subscriber_id), col(Delivery.paper_id), place)
            .where(col(Delivery.subscriber_id).in_(chunk), col(Delivery.state) != DeliveryState.CANCELLED)
            .subquery()
        )
        stmt = sa_select(inner.c.subscriber_id, inner.c.paper_id).where(inner.c.place <= each)
        for s, p in core(session).execute(stmt):
            out.setdefault(int(s), []).append(int(p))
    return out


_UPDATED = ("examples", "likes", "liked", "fitted_at", "model")


def save_tastes(*, session: Session, rows: Sequence[dict[str, Any]], at: datetime) -> None:
    """Upsert readers' tastes: dicts of subscriber_id, examples, likes, liked and model."""
    if not rows:
        return
    stmt = insert_for(session, Taste)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subscriber_id"],
        set_={
            name: getattr(stmt.excluded, name)
            for name in ("examples", "likes", "liked", "fitted_at", "model")
        },
    )
    core(session).execute(stmt, [{**row, "fitted_at": at} for row in rows])


def delivered(
    *, session: Session, subscriber_ids: Sequence[int], paper_ids: Sequence[int]
) -> set[tuple[int, int]]:
    """Which of these readers already have which of these papers (in any state)."""
    out: set[tuple[int, int]] = set()
    for readers in chunks(list(subscriber_ids)):
        for papers in chunks(list(paper_ids)):
            stmt = sa_select(col(Delivery.subscriber_id), col(Delivery.paper_id)).where(
                col(Delivery.subscriber_id).in_(readers), col(Delivery.paper_id).in_(papers)
            )
            out.update((int(s), int(p)) for s, p in core(session).execute(stmt))
    return out


def mark_suggested(*, session: Session, subscriber_ids: Sequence[int], through: int) -> None:
    """These readers' suggestions have weighed every paper up to ``through``."""
    for chunk in chunks(list(subscriber_ids)):
        core(session).execute(
            update(Taste).where(col(Taste.subscriber_id).in_(chunk)).values(suggested_through=through)
        )
