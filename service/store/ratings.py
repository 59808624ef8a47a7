"""Readers' ratings of papers, and the server secret that signs the links that make them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from .engine import chunks, core, insert_for
from .tables import Rating, Secret


def secret(*, session: Session, name: str, make: bool = True) -> bytes | None:
    """The server secret ``name``, made (32 random bytes) the first time it is asked for
    (unless ``make`` is off: then None); every host sharing the store reads the same one."""
    conn = core(session)
    stmt = sa_select(col(Secret.value)).where(col(Secret.name) == name)
    found = conn.execute(stmt).scalar_one_or_none()
    if found is None and not make:
        return None
    if found is None:
        conn.execute(
            insert_for(session, Secret).on_conflict_do_nothing(index_elements=["name"]),
            [{"name": name, "value": secrets.token_hex(32)}],
        )
        found = conn.execute(stmt).scalar_one()  # ours, or another host's made at the same time
    return bytes.fromhex(found)


def rate(*, session: Session, subscriber_id: int, paper_id: int, value: int, at: datetime) -> bool:
    """Record a reader's answer for a paper (+1, -1), replacing an earlier one; whether it
    changed anything (the same answer again changes nothing)."""
    conn = core(session)
    before = conn.execute(
        sa_select(col(Rating.value)).where(
            col(Rating.subscriber_id) == subscriber_id, col(Rating.paper_id) == paper_id
        )
    ).scalar_one_or_none()
    if before == value:
        return False
    stmt = insert_for(session, Rating)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subscriber_id", "paper_id"],
        set_={"value": stmt.excluded.value, "rated_at": stmt.excluded.rated_at},
    )
    conn.execute(
        stmt, [{"subscriber_id": subscriber_id, "paper_id": paper_id, "value": value, "rated_at": at}]
    )
    return True


def ratings_of(*, session: Session, subscriber_id: int, paper_ids: Iterable[int]) -> dict[int, int]:
    """The reader's answers for these papers, by paper id."""
    out: dict[int, int] = {}
    for chunk in chunks(list(paper_ids)):
        rows = core(session).execute(
            sa_select(col(Rating.paper_id), col(Rating.value)).where(
                col(Rating.subscriber_id) == subscriber_id, col(Rating.paper_id).in_(chunk)
            )
        )
        out.update({int(p): int(v) for p, v in rows})
    return out
