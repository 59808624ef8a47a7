"""Subscribers: the table follows the configuration; one-click opt-outs win over it.

Tokens (private feed URLs, unsubscribe links) are made once, from
``secrets``, and never change while the subscriber exists. The rules of each
subscriber and topic, as last matched, are kept as fingerprints: a new or
changed one is backfilled (:mod:`service.match`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from ..delivery_states import LEFT
from ..settings.cron import next_fire_utc
from .engine import chunks, core, insert_for
from .outbox import cancel_pending, restore_left
from .tables import (
    RuleFingerprint,
    Subscriber,
)

# Two rows of rule_fingerprints sum up the whole configuration, so that a run with the last
# one's reads one row, not one per subscriber:
ALL_RULES = "*"  # a hash of everyone's rules, as last matched (service.match)
ROSTER = "*roster"  # a hash of the subscribers' addresses and names, as last synced

# ---------------------------------------------------------------- subscribers


@dataclass(frozen=True, slots=True)
class Synced:
    """What :func:`sync_subscribers` changed: addresses added, left, back, renamed."""

    added: int = 0
    left: int = 0
    back: int = 0
    renamed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.left or self.back or self.renamed)


def sync_subscribers(
    *,
    session: Session,
    people: Sequence[tuple[str, str | None]],
    at: datetime,
    cadence: Mapping[str, tuple[str, str]] | None = None,
) -> Synced:
    """Make the table follow the configuration: add, rename, (de)activate. A subscriber who
    left the configuration has their pending deliveries cancelled (``LEFT``): nothing is
    sent to them, and status and /metrics return to zero; one who comes back has those
    rows pending again, and gets new papers.

    Set-based: one read of the table's five columns, then one statement per kind of change
    (in chunks), whatever the number of subscribers; and none of that when ``people`` are
    those of the last sync (one row, :data:`ROSTER`, keeps their hash). Tokens are made once,
    from ``secrets``, and never change while the subscriber exists.

    ``cadence``: the subscribers with a schedule of their own, by lower-cased address:
    (cron line, IANA zone). Their next email may go when it next fires (``next_email_at``);
    a schedule that changes starts counting again from ``at``.
    """
    wanted = {email.lower(): name for email, name in people}
    own = {
        email.lower(): (line, zone)
        for email, (line, zone) in (cadence or {}).items()
        if email.lower() in wanted
    }
    listed = json.dumps([sorted(wanted.items()), sorted(own.items())])
    roster = hashlib.sha256(listed.encode()).hexdigest()[:32]
    if fingerprints(session=session, owner=ROSTER) == {ROSTER: roster}:
        return Synced()
    record_fingerprints(session=session, prints={ROSTER: roster}, at=at)
    _sync_cadence(session, own, at)
    conn = core(session)
    existing: dict[str, tuple[int, str | None, bool, datetime | None]] = {
        email: (int(sid or 0), name, active, out)
        for sid, email, name, active, out in conn.execute(
            sa_select(
                col(Subscriber.id),
                col(Subscriber.email),
                col(Subscriber.name),
                col(Subscriber.active),
                col(Subscriber.unsubscribed_at),
            )
        )
    }
    new = [
        {
            "email": email,
            "name": name,
            "token": secrets.token_urlsafe(18),
            "active": True,
            "created_at": at,
            **_cadence_columns(own.get(email), at),
        }
        for email, name in wanted.items()
        if email not in existing
    ]
    if new:
        conn.execute(insert_for(session, Subscriber).on_conflict_do_nothing(index_elements=["email"]), new)
    left = [sid for email, (sid, _, active, _) in existing.items() if active and email not in wanted]
    returning = [
        (sid, out) for email, (sid, _, active, out) in existing.items() if not active and email in wanted
    ]
    renamed = [
        {"sid": sid, "name": wanted[email]}
        for email, (sid, name, _, _) in existing.items()
        if email in wanted and name != wanted[email]
    ]
    if left:
        _set_active(session, left, False)
        cancel_pending(session=session, subscriber_ids=left, reason=LEFT)
    if returning:
        _set_active(session, [sid for sid, _ in returning], True)
        # what waited for them comes back, unless they had unsubscribed (that still holds)
        restore_left(session=session, subscriber_ids=[sid for sid, out in returning if out is None])
    if renamed:
        conn.execute(
            update(Subscriber).where(col(Subscriber.id) == bindparam("sid")).values(name=bindparam("name")),
            renamed,
        )
    return Synced(len(new), len(left), len(returning), len(renamed))


def _cadence_columns(cadence: tuple[str, str] | None, at: datetime) -> dict[str, Any]:
    """A subscriber's schedule, zone and next email time, as columns (None: schedule.deliver)."""
    if cadence is None:
        return {"schedule": None, "timezone": None, "next_email_at": None}
    line, zone = cadence
    return {"schedule": line, "timezone": zone, "next_email_at": next_fire_utc(line, zone, at)}


def _sync_cadence(session: Session, own: Mapping[str, tuple[str, str]], at: datetime) -> None:
    """Give the existing subscribers whose schedule or zone changed their new one (set-based:
    one read of three columns, one UPDATE per changed subscriber's kind of cadence)."""
    conn = core(session)
    columns = (col(Subscriber.id), col(Subscriber.email), col(Subscriber.schedule), col(Subscriber.timezone))
    changed: dict[tuple[str, str] | None, list[int]] = {}
    for sid, email, line, zone in conn.execute(sa_select(*columns)):
        want = own.get(email)
        if (line, zone) != (want or (None, None)):
            changed.setdefault(want, []).append(int(sid or 0))
    for cadence, ids in changed.items():
        values = _cadence_columns(cadence, at)
        for chunk in chunks(ids):
            conn.execute(update(Subscriber).where(col(Subscriber.id).in_(chunk)).values(**values))


def _set_active(session: Session, ids: list[int], active: bool) -> None:
    for chunk in chunks(ids):
        core(session).execute(update(Subscriber).where(col(Subscriber.id).in_(chunk)).values(active=active))


def active_subscribers(*, session: Session) -> dict[str, Subscriber]:
    """The subscribers in the configuration, by lower-cased address."""
    stmt = select(Subscriber).where(Subscriber.active == True)  # noqa: E712
    return {s.email: s for s in session.exec(stmt)}


def receiving(*, session: Session) -> dict[str, int]:
    """The ids of the subscribers who get new papers (in the configuration, not unsubscribed),
    by lower-cased address: what matching needs of them, as plain values."""
    stmt = sa_select(col(Subscriber.email), col(Subscriber.id)).where(
        col(Subscriber.active).is_(True), col(Subscriber.unsubscribed_at).is_(None)
    )
    return {email: int(sid or 0) for email, sid in core(session).execute(stmt)}


def subscriber_by_token(*, session: Session, token: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.token == token)).first()


def unsubscribe(
    *, session: Session, at: datetime, token: str | None = None, email: str | None = None
) -> Subscriber | None:
    """An opt-out (one click, by ``token``; or the operator's, by ``email``): record it (once)
    and cancel what is still pending.

    Returns the subscriber, or None for a token or address that belongs to no one.
    """
    if token is not None:
        sub = subscriber_by_token(session=session, token=token)
    else:
        sub = subscriber_by_email(session=session, email=email or "")
    if sub is None:
        return None
    if sub.unsubscribed_at is None:
        sub.unsubscribed_at = at
        session.add(sub)
        assert sub.id is not None
        cancel_pending(session=session, subscriber_ids=[sub.id], reason="unsubscribed")
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


def subscribers_by_id(*, session: Session, ids: Sequence[int]) -> dict[int, Subscriber]:
    return {s.id: s for s in session.exec(select(Subscriber).where(col(Subscriber.id).in_(ids))) if s.id}


def subscriber_by_email(*, session: Session, email: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.email == email.lower())).first()


def fingerprints(*, session: Session, owner: str | None = None) -> dict[str, str]:
    """The rules each owner (``subscriber:<email>``, ``topic:<name>``, or :data:`ALL_RULES`)
    was last matched with; only ``owner``'s when given."""
    stmt = sa_select(col(RuleFingerprint.owner), col(RuleFingerprint.fingerprint))
    if owner is not None:
        stmt = stmt.where(col(RuleFingerprint.owner) == owner)
    return {owner: fingerprint for owner, fingerprint in core(session).execute(stmt)}


def record_fingerprints(*, session: Session, prints: dict[str, str], at: datetime) -> None:
    if not prints:
        return
    stmt = insert_for(session, RuleFingerprint)
    stmt = stmt.on_conflict_do_update(
        index_elements=["owner"],
        set_={"fingerprint": stmt.excluded.fingerprint, "updated_at": stmt.excluded.updated_at},
    )
    session.execute(stmt, [{"owner": o, "fingerprint": h, "updated_at": at} for o, h in prints.items()])
