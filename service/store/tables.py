"""Every table of the store, in one place (the states of a delivery are in
:mod:`service.delivery_states`).

The database, not the code, refuses duplicates: one paper per key, one
ingested file per content hash, one subscriber per address, one delivery per
(subscriber, paper), one topic paper per (topic, paper), one link per (file,
paper), one fingerprint per rule owner. Timestamps are
timezone-aware UTC on every backend (:class:`UTCDateTime`).

Schema changes go through a migration in ``migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Column, Field, SQLModel, col

from ..delivery_states import DeliveryState


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class Paper(SQLModel, table=True):
    __tablename__ = "papers"
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True)
    title: str
    abstract: str
    digest_date: date | None = None
    first_seen_at: datetime = _ts()
    source: str  # the file it was first seen in
    line: int  # the line of its title there
    matched_at: datetime | None = _ts(nullable=True)  # None: not yet matched
    # migration 0007: ``paperboy forget`` (the row stays for the sent deliveries' sake)
    forgotten_at: datetime | None = _ts(nullable=True)


class PaperFile(SQLModel, table=True):
    """A file (by content hash) that brought a paper, new or already known (migration 0007)."""

    __tablename__ = "paper_files"
    __table_args__ = (UniqueConstraint("file_sha256", "paper_id"),)
    id: int | None = Field(default=None, primary_key=True)
    paper_id: int = Field(foreign_key="papers.id", index=True)
    file_sha256: str


class IngestedFile(SQLModel, table=True):
    __tablename__ = "ingested_files"
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(unique=True, index=True)
    path: str
    size: int
    ingested_at: datetime = _ts()
    entries: int = 0
    new_papers: int = 0
    problems: int = 0
    error: str | None = None  # the file held nothing to ingest (empty, binary)


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscribers"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)  # lower-cased
    name: str | None = None
    token: str = Field(unique=True, index=True)  # private feed URLs, unsubscribe
    active: bool = True  # False once the subscriber left the configuration
    created_at: datetime = _ts()
    # Set by one-click unsubscribe; wins over the configuration until ``paperboy resubscribe``.
    unsubscribed_at: datetime | None = _ts(nullable=True)
    # migration 0009: their own cadence (None: schedule.deliver), and when it next lets an email go
    schedule: str | None = None  # a cron line
    timezone: str | None = None  # IANA; None: the configuration's
    next_email_at: datetime | None = _ts(nullable=True)


# The rows still on their way out. A partial index holds only these (migration 0006): it
# stays as small as the backlog however long the history grows, and a row leaves it
# once, when it is sent, instead of moving inside an index of every row at each step.
# A query uses the index only when its WHERE carries this very condition, literals
# included (SQLite proves a partial index usable by matching terms, not by
# evaluating bound parameters): :func:`live` writes it.
LIVE_STATES = (DeliveryState.PENDING, DeliveryState.SENDING)
LIVE_STATES_SQL = "state IN ({})".format(", ".join(f"'{state}'" for state in LIVE_STATES))


def live() -> Any:
    """``deliveries.state IN ('pending', 'sending')``, with the states as literals: the
    condition of the partial index ``ix_deliveries_live`` (see ``LIVE_STATES_SQL``)."""
    return col(Delivery.state).in_([literal_column(f"'{state}'") for state in LIVE_STATES])


class Delivery(SQLModel, table=True):
    """The outbox: one row per (subscriber, paper) that matched."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "paper_id"),
        # a subscriber's pending and sending rows: claims, sent marks, preview, unsubscribe
        Index(
            "ix_deliveries_live",
            "subscriber_id",
            sqlite_where=text(LIVE_STATES_SQL),
            postgresql_where=text(LIVE_STATES_SQL),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscribers.id")
    paper_id: int = Field(foreign_key="papers.id", index=True)
    state: str = Field(default=DeliveryState.PENDING)
    score: int = 0
    terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # What brought the paper: "keywords", "query", "topic:<name>" (migration 0002).
    via: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=text("'[]'"))
    )
    created_at: datetime = _ts()
    sent_at: datetime | None = _ts(nullable=True)
    attempts: int = 0
    last_error: str | None = None
    message_id: str | None = None
    # migration 0003: retries and claims
    next_attempt_at: datetime | None = _ts(nullable=True)  # pending: not before this
    lease_until: datetime | None = _ts(nullable=True)  # sending: claimed until this
    claimed_by: str | None = None  # sending: which process


class TopicPaper(SQLModel, table=True):
    """A paper that matched a topic: the topic's public feed (migration 0002)."""

    __tablename__ = "topic_papers"
    __table_args__ = (UniqueConstraint("topic", "paper_id"),)
    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(index=True)
    paper_id: int = Field(foreign_key="papers.id", index=True)
    score: int = 0
    terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


class SentMark(SQLModel, table=True):
    """The server accepted the email carrying what ``worker`` claimed for ``subscriber_id``.

    Written in its own short transaction the moment the server says 250: a
    one-row insert, where marking the outbox rows themselves would rewrite a
    page per paper. :func:`fold_sent` then moves the rows to ``sent`` for many
    emails at once, and every claim folds first, so a mark left by a process
    that died still counts.
    """

    __tablename__ = "sent_marks"
    id: int | None = Field(default=None, primary_key=True)
    worker: str
    subscriber_id: int
    message_id: str
    sent_at: datetime = _ts()
    deliveries: int  # rows the email carried


class JobRun(SQLModel, table=True):
    """One run of a job (``poll``, ``deliver``, ``cycle``): for /healthz, /metrics and the status page."""

    __tablename__ = "job_runs"
    id: int | None = Field(default=None, primary_key=True)
    job: str
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    seconds: float
    ok: bool
    papers: int = 0  # new papers stored
    emails: int = 0  # emails sent
    error: str | None = None  # why it failed (migration 0007)


class RuleFingerprint(SQLModel, table=True):
    """The rules of a subscriber (``subscriber:<email>``) or topic (``topic:<name>``) as last
    matched: a new or changed one is backfilled (migration 0007). Two rows sum up the whole
    configuration: ``*`` (everyone's rules) and ``*roster`` (the subscribers, as last synced)."""

    __tablename__ = "rule_fingerprints"
    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(unique=True)
    fingerprint: str
    updated_at: datetime = _ts()


class FeedState(SQLModel, table=True):
    """A feed paperboy serves, and what it is rendered from (migration 0008).

    ``mark`` sums up everything the feed shows (its entries, titles and settings): the
    cycle updates it only when that changed, and the web server derives the feed's ETag
    from it, so any host sharing the store answers a conditional GET with one query by key
    and renders the feed only for a reader whose copy is out of date.
    """

    __tablename__ = "feed_states"
    name: str = Field(primary_key=True)  # its path under /feeds/ without the suffix: "all", "u/<token>"
    mark: str
    modified_at: datetime = _ts()  # when the mark last changed (Last-Modified)


class Rating(SQLModel, table=True):
    """A reader's "more like this" (+1) or "less like this" (-1) for a paper (migration 0010):
    one per reader and paper, changed by rating again."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("subscriber_id", "paper_id"),)
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscribers.id", index=True)
    paper_id: int = Field(foreign_key="papers.id")
    value: int  # +1 or -1
    rated_at: datetime = _ts()


class Secret(SQLModel, table=True):
    """A server secret every host sharing the store uses (migration 0010): ``ratings`` signs
    the rating links, so that a link names one reader, one paper and one answer."""

    __tablename__ = "secrets"
    name: str = Field(primary_key=True)
    value: str  # hex


class TasteSpace(SQLModel, table=True):
    """The word space readers' tastes are learned in (migration 0011): how many of the
    store's papers hold each hashed word, for TF-IDF weights. Rebuilt when the store has
    grown by a quarter since (only the newest row is read)."""

    __tablename__ = "taste_spaces"
    id: int | None = Field(default=None, primary_key=True)
    built_at: datetime = _ts()
    papers: int  # how many papers the counts are over
    last_paper_id: int  # the newest of them
    counts: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # see service.taste.space


class Taste(SQLModel, table=True):
    """A reader's learned taste (migration 0011): a linear model over the word space, fitted
    from their ratings and their configured likes when those change, not at every run."""

    __tablename__ = "tastes"
    subscriber_id: int = Field(primary_key=True, foreign_key="subscribers.id")
    examples: str  # what it was fitted on: a digest of the ratings and the likes
    likes: str = ""  # a digest of subscribers[].like as last resolved
    liked: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # resolved likes
    fitted_at: datetime = _ts()
    model: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))  # None: too few
    # the newest paper weighed for suggestions (subscribers[].suggest): later ones are next
    suggested_through: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
