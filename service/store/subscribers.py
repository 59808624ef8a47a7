"""Subscribers: the table follows the configuration; one-click opt-outs win over it.

Tokens (private feed URLs, unsubscribe links) are made once, from
``secrets``, and never change while the subscriber exists. The rules of each
subscriber and topic, as last matched, are kept as fingerprints: a new or
changed one is backfilled (:mod:`service.match`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from .engine import insert_for
from .outbox import cancel_pending, restore_left
from .tables import (
    LEFT,
    RuleFingerprint,
    Subscriber,
)

# ---------------------------------------------------------------- subscribers


def sync_subscribers(
    *, session: Session, people: Sequence[tuple[str, str | None]], at: datetime
) -> dict[str, Subscriber]:
    """Make the table follow the configuration: add, rename, (de)activate. A subscriber who
    left the configuration has their pending deliveries cancelled (``LEFT``): nothing is
    sent to them, and status and /metrics return to zero; one who comes back has those
    rows pending again, and gets new papers.

    Returns the active subscribers by lower-cased address. Tokens are made
    once, from ``secrets``, and never change while the subscriber exists.
    """
    wanted = {email.lower(): name for email, name in people}
    existing = {s.email: s for s in session.exec(select(Subscriber))}
    for email, name in wanted.items():
        if email not in existing:
            stmt = (
                insert_for(session, Subscriber)
                .values(email=email, name=name, token=secrets.token_urlsafe(18), active=True, created_at=at)
                .on_conflict_do_nothing(index_elements=["email"])
            )
            session.execute(stmt)
    for email, sub in existing.items():
        active = email in wanted
        name = wanted.get(email, sub.name)
        if sub.active != active or sub.name != name:
            if sub.active and not active and sub.id is not None:  # left the configuration
                cancel_pending(session=session, subscriber_id=sub.id, reason=LEFT)
            elif active and not sub.active and sub.id is not None and sub.unsubscribed_at is None:
                restore_left(session=session, subscriber_id=sub.id)  # back: what waited for them
            sub.active, sub.name = active, name
            session.add(sub)
    session.flush()
    return active_subscribers(session=session)


def active_subscribers(*, session: Session) -> dict[str, Subscriber]:
    """The subscribers in the configuration, by lower-cased address."""
    stmt = select(Subscriber).where(Subscriber.active == True)  # noqa: E712
    return {s.email: s for s in session.exec(stmt)}


def subscriber_by_token(*, session: Session, token: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.token == token)).first()


def unsubscribe(*, session: Session, token: str, at: datetime) -> Subscriber | None:
    """One-click unsubscribe: record the opt-out (once) and cancel what is still pending.

    Returns the subscriber, or None for a token that belongs to no one.
    """
    sub = subscriber_by_token(session=session, token=token)
    if sub is None:
        return None
    if sub.unsubscribed_at is None:
        sub.unsubscribed_at = at
        session.add(sub)
        assert sub.id is not None
        cancel_pending(session=session, subscriber_id=sub.id, reason="unsubscribed")
        session.flush()
    return sub


def resubscribe(*, session: Session, email: str) -> bool:
    """The operator's undo of an opt-out: the subscriber receives new papers again.
    False when there was no opt-out to undo."""
    sub = subscriber_by_email(session=session, email=email)
    if sub is None or sub.unsubscribed_at is None:
        return False
    sub.unsubscribed_at = None
    session.add(sub)
    session.flush()
    return True


def opted_out(*, session: Session) -> list[Subscriber]:
    stmt = (
        select(Subscriber).where(col(Subscriber.unsubscribed_at).is_not(None)).order_by(col(Subscriber.email))
    )
    return list(session.exec(stmt))


def subscribers_by_id(*, session: Session, ids: Sequence[int]) -> dict[int, Subscriber]:
    return {s.id: s for s in session.exec(select(Subscriber).where(col(Subscriber.id).in_(ids))) if s.id}


def subscriber_by_email(*, session: Session, email: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email == email.lower())).first()


def fingerprints(*, session: Session) -> dict[str, str]:
    """The rules each owner (``subscriber:<email>``, ``topic:<name>``) was last matched with."""
    return {f.owner: f.fingerprint for f in session.exec(select(RuleFingerprint))}


def record_fingerprints(*, session: Session, prints: dict[str, str], at: datetime) -> None:
    if not prints:
        return
    stmt = insert_for(session, RuleFingerprint)
    stmt = stmt.on_conflict_do_update(
        index_elements=["owner"],
        set_={"fingerprint": stmt.excluded.fingerprint, "updated_at": stmt.excluded.updated_at},
    )
    session.execute(stmt, [{"owner": o, "fingerprint": h, "updated_at": at} for o, h in prints.items()])
