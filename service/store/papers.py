"""Papers and the files that brought them.

A paper is stored once per key (:func:`service.text.paper_key`), whichever
file brings it first; a file once per content hash; and which files brought
each paper (``paper_files``), so that forgetting a file takes only what no
other file also brought. A forgotten paper (``forgotten_at``) keeps its row
(sent deliveries point at it, and a later file does not bring it back) and is
left out of every feed, page and match. What feeds and pages list of them is in
:mod:`.listings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    delete,
    exists,
    type_coerce,
    update,
)
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from .engine import (
    bulk_insert,
    chunks,
    converter,
    core,
    driver_mark,
    insert_for,
    inserted,
    values_table,
)
from .tables import (
    Delivery,
    DeliveryState,
    IngestedFile,
    Paper,
    PaperFile,
    TopicPaper,
)

# ---------------------------------------------------------------- files


def file_known(*, session: Session, sha256: str) -> bool:
    """A file with this content was ingested (a rejected one is looked at again: moved back
    into the inbox unchanged, it is rejected again, not skipped in silence)."""
    stmt = select(IngestedFile.id).where(IngestedFile.sha256 == sha256, col(IngestedFile.error).is_(None))
    return session.exec(stmt).first() is not None


def files_named(*, session: Session, name: str) -> list[IngestedFile]:
    """The ingested files (not the rejected ones) recorded under this path or file name."""
    stmt = (
        select(IngestedFile)
        .where(col(IngestedFile.error).is_(None))
        .where((col(IngestedFile.path) == name) | col(IngestedFile.path).endswith("/" + name))
        .order_by(col(IngestedFile.ingested_at))
    )
    return list(session.exec(stmt))


def file_by_hash(*, session: Session, sha256: str) -> IngestedFile | None:
    return session.exec(select(IngestedFile).where(IngestedFile.sha256 == sha256)).first()


def papers_only_from(*, session: Session, sha256: str) -> tuple[list[Paper], int]:
    """The papers the file brought that no other file also brought, not forgotten yet; and
    how many papers it brought that another file also brought (those are kept)."""
    other = (
        sa_select(col(PaperFile.id))
        .where(col(PaperFile.paper_id) == col(Paper.id), col(PaperFile.file_sha256) != sha256)
        .join(IngestedFile, col(IngestedFile.sha256) == col(PaperFile.file_sha256))
        .where(col(IngestedFile.error).is_(None))
    )
    mine = (
        select(Paper)
        .join(PaperFile, col(PaperFile.paper_id) == col(Paper.id))
        .where(PaperFile.file_sha256 == sha256, col(Paper.forgotten_at).is_(None))
    )
    only = list(session.exec(mine.where(~exists(other)).order_by(col(Paper.id))))
    shared = len(list(session.exec(mine.where(exists(other)))))
    return only, shared


@dataclass(frozen=True, slots=True)
class Forgotten:
    papers: int
    cancelled: int  # pending deliveries cancelled
    topic_rows: int  # papers taken out of topic feeds


def forget_papers(*, session: Session, paper_ids: Sequence[int], at: datetime) -> Forgotten:
    """Hide papers from every feed and page, cancel their pending deliveries (sent ones stay
    recorded), and never match them again."""
    ids = list(paper_ids)
    if not ids:
        return Forgotten(0, 0, 0)
    papers = (
        core(session)
        .execute(
            update(Paper)
            .where(col(Paper.id).in_(ids), col(Paper.forgotten_at).is_(None))
            .values(forgotten_at=at)
        )
        .rowcount
    )
    core(session).execute(
        update(Paper).where(col(Paper.id).in_(ids), col(Paper.matched_at).is_(None)).values(matched_at=at)
    )
    cancelled = (
        core(session)
        .execute(
            update(Delivery)
            .where(col(Delivery.paper_id).in_(ids), col(Delivery.state) == DeliveryState.PENDING)
            .values(state=DeliveryState.CANCELLED, last_error="forgotten (paperboy forget)")
        )
        .rowcount
    )
    topic_rows = core(session).execute(delete(TopicPaper).where(col(TopicPaper.paper_id).in_(ids))).rowcount
    return Forgotten(int(papers), int(cancelled), int(topic_rows))


def record_file(*, session: Session, record: IngestedFile) -> bool:
    """Record an ingested file; False when another process recorded it first."""
    values = record.model_dump(exclude={"id"})
    stmt = insert_for(session, IngestedFile).values(**values).on_conflict_do_nothing()
    return inserted(session, stmt, IngestedFile.id) == 1


# ---------------------------------------------------------------- papers


class NewPaper(NamedTuple):
    """A paper as a file brings it (a plain tuple: a big file brings tens of thousands)."""

    key: str
    title: str
    abstract: str
    digest_date: date | None
    source: str
    line: int


def add_papers(
    *,
    session: Session,
    papers: Sequence[NewPaper],
    at: datetime,
    sha256: str | None = None,
    matched: bool = False,
) -> list[PaperText]:
    """Store the papers whose key is new; returns them, with their ids. With ``sha256``, every
    paper of the batch (new or known) is linked to that file. With ``matched``, they are
    stored as matched at ``at``: the caller matches them in this same transaction.

    A file's thousands of papers go in by the driver's executemany (:func:`bulk_insert`):
    the keys already known are looked up first, so that only new papers are written.
    """
    if not papers:
        return []
    unique: dict[str, NewPaper] = {}
    for paper in papers:
        unique.setdefault(paper.key, paper)
    connection = core(session)
    known = _ids_by_key(connection, list(unique))
    fresh = [p for p in unique.values() if p.key not in known]
    when = converter(connection, col(Paper.first_seen_at))(at)
    matched_at = when if matched else None
    day = converter(connection, col(Paper.digest_date))
    days = {p.digest_date: day(p.digest_date) for p in fresh}  # a file has a date or two
    last = _last_id(connection)
    went_in = bulk_insert(
        connection,
        Paper,
        ["key", "title", "abstract", "digest_date", "source", "line", "first_seen_at", "matched_at"],
        [
            (p.key, p.title, p.abstract, days[p.digest_date], p.source, p.line, when, matched_at)
            for p in fresh
        ],
        skip_conflicts_on=["key"],  # another process storing the same paper at this moment
    )
    ids = _new_ids(connection, [p.key for p in fresh], last, went_in)
    if sha256 is not None:
        _link(connection, [*known.values(), *ids.values()], sha256)
    return [PaperText(ids[p.key], p.title, p.abstract) for p in fresh if p.key in ids]


def _last_id(connection: Any) -> int | None:
    """The largest paper id on SQLite (see :func:`_new_ids`); None elsewhere."""
    if connection.dialect.name != "sqlite":
        return None
    return int(connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM papers").scalar_one())


def _new_ids(connection: Any, keys: list[str], last: int | None, went_in: int) -> dict[str, int]:
    """The ids of the papers just stored under ``keys`` (in the order they were given), when
    ``went_in`` of them went in and ``last`` was the largest id before.

    On SQLite the transaction is the store's one writer (BEGIN IMMEDIATE), and a new row takes
    the id after the table's largest: when every key went in and the largest id moved by as
    many, the ids are ``last + 1`` on, in order, and need no query (the rare exceptions, such
    as ids past 2**63, fail that test). Otherwise, and on PostgreSQL, they are looked up."""
    if last is not None and went_in == len(keys) and _last_id(connection) == last + went_in:
        return dict(zip(keys, range(last + 1, last + 1 + went_in), strict=True))
    return _ids_by_key(connection, keys)


def _link(connection: Any, paper_ids: list[int], sha256: str) -> None:
    """Link the papers to the file: one INSERT .. SELECT over the ids as one parameter (a
    third cheaper than a row of parameters per paper)."""
    ids, param = values_table(connection, paper_ids)
    mark = driver_mark(connection)
    connection.exec_driver_sql(
        f"INSERT INTO paper_files (paper_id, file_sha256) SELECT ids.value, {mark} FROM ({ids}) AS ids"
        " WHERE true ON CONFLICT (file_sha256, paper_id) DO NOTHING",  # WHERE: SQLite's upsert needs it
        (sha256, param),
    )


def _ids_by_key(connection: Any, keys: Sequence[str]) -> dict[str, int]:
    """The ids of the papers stored under ``keys`` (those that are). In the driver's own SQL, on
    its own cursor, in the session's transaction: SQLAlchemy's expanding ``IN`` handles each of
    a file's keys in Python, twice, and its result rows cost more than the query."""
    mark = driver_mark(connection)
    found: dict[str, int] = {}
    cursor = connection.connection.cursor()
    try:
        for part in chunks(keys):
            cursor.execute(f"SELECT key, id FROM papers WHERE key IN ({', '.join([mark] * len(part))})", part)
            found.update(cursor.fetchall())
    finally:
        cursor.close()
    return found


class PaperText(NamedTuple):
    """What matching reads of a paper (a plain row: no ORM object per paper)."""

    id: int
    title: str
    abstract: str


_TEXT = (col(Paper.id), col(Paper.title), col(Paper.abstract))


def unmatched_papers(*, session: Session, limit: int, after: int = 0) -> list[PaperText]:
    """Papers not matched yet (nor forgotten), by id after ``after``. A caller going through
    them in batches passes the last id it saw: searching from the first paper each time
    would step over every paper matched by the batches before, for each batch."""
    stmt = (
        sa_select(*_TEXT)
        .where(col(Paper.id) > after, col(Paper.matched_at).is_(None), col(Paper.forgotten_at).is_(None))
        .order_by(col(Paper.id))
        .limit(limit)
    )
    return [PaperText(int(pid or 0), title, abstract) for pid, title, abstract in core(session).execute(stmt)]


def papers_since(*, session: Session, since: datetime, after: int, limit: int) -> list[PaperText]:
    """Papers first seen at ``since`` or later and matched already (not forgotten), by id after
    ``after``: what a backfill rematches."""
    stmt = (
        sa_select(*_TEXT)
        .where(
            col(Paper.first_seen_at) >= since,
            col(Paper.id) > after,
            col(Paper.matched_at).is_not(None),
            col(Paper.forgotten_at).is_(None),
        )
        .order_by(col(Paper.id))
        .limit(limit)
    )
    return [PaperText(int(pid or 0), title, abstract) for pid, title, abstract in core(session).execute(stmt)]


def mark_matched(*, session: Session, paper_ids: Iterable[int], at: datetime) -> None:
    ids = list(paper_ids)
    if ids:
        core(session).execute(update(Paper).where(col(Paper.id).in_(ids)).values(matched_at=at))


def find_paper(*, session: Session, key: str) -> Paper | None:
    return session.exec(select(Paper).where(Paper.key == key)).first()


def latest_papers(*, session: Session, limit: int) -> list[Paper]:
    """Newest first: the latest digest first, each digest in page order."""
    stmt = (
        select(Paper)
        .where(col(Paper.forgotten_at).is_(None))
        .order_by(col(Paper.first_seen_at).desc(), col(Paper.id))
        .limit(limit)
    )
    return list(session.exec(stmt))


def paper_seen(*, session: Session, paper_ids: Iterable[int]) -> dict[int, Any]:
    """When each paper was first seen, by id, as the database holds it: only ever compared."""
    stmt = sa_select(col(Paper.id), type_coerce(col(Paper.first_seen_at), String)).where(
        col(Paper.id).in_(list(paper_ids))
    )
    rows: Any = core(session).execute(stmt).all()
    return dict(rows)


def paper_texts(*, session: Session, paper_ids: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    """(title, abstract, key) of each paper, by id."""
    stmt = sa_select(col(Paper.id), col(Paper.title), col(Paper.abstract), col(Paper.key)).where(
        col(Paper.id).in_(list(paper_ids))
    )
    rows: Any = core(session).execute(stmt).all()
    return {i: (title, abstract, key) for i, title, abstract, key in rows}
