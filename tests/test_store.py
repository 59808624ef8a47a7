"""The store on SQLite and on PostgreSQL: the database refuses duplicates."""

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from service import glance, store
from service.compose import best_first
from tests.helpers import FIXED_NOW, sync


def paper(key: str, title: str | None = None) -> store.NewPaper:
    return store.NewPaper(key, title or key.title(), "An abstract.", None, "x.txt", 1)


def test_papers_are_stored_once_per_key(engine: Engine) -> None:
    with store.transaction(engine) as s:
        first = store.add_papers(
            session=s, papers=[paper("a"), paper("b"), paper("a", "A again")], at=FIXED_NOW
        )
        assert [p.title for p in first] == ["A", "B"]
    with store.transaction(engine) as s:
        second = store.add_papers(session=s, papers=[paper("b"), paper("c")], at=FIXED_NOW)
        assert [p.title for p in second] == ["C"]  # only the new ones come back
    with store.reading(engine) as s:
        assert store.counts(session=s)["papers"] == 3
        assert store.find_paper(session=s, key="a").title == "A"  # type: ignore[union-attr]
        for new in (*first, *second):  # each with the id it was stored under
            assert s.get(store.Paper, new.id).title == new.title  # type: ignore[union-attr]


def test_new_papers_get_their_ids_when_sqlite_picks_them_at_random(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """On SQLite a new paper takes the id after the largest, so a batch's ids are known
    without a query; past the largest possible id SQLite picks them at random, and they
    are looked up."""
    target = tmp_path / "paperboy.db"
    shutil.copyfile(sqlite_template, target)
    engine = store.make_engine(f"sqlite:///{target}")
    try:
        with store.transaction(engine) as s:
            counted = store.add_papers(session=s, papers=[paper("a"), paper("b")], at=FIXED_NOW)
            s.add(
                store.Paper(
                    id=2**63 - 1,
                    key="last",
                    title="Last",
                    abstract="",
                    source="f",
                    line=1,
                    first_seen_at=FIXED_NOW,
                )
            )
        with store.transaction(engine) as s:
            drawn = store.add_papers(session=s, papers=[paper(f"r{i}") for i in range(20)], at=FIXED_NOW)
        with store.reading(engine) as s:
            stored = {p.id: p.title for p in s.exec(select(store.Paper))}
    finally:
        engine.dispose()
    assert [p.id for p in counted] == [1, 2]
    assert len(drawn) == 20 and all(stored[p.id] == p.title for p in drawn)
    assert all(3 <= p.id < 2**63 - 1 for p in drawn)  # at random, not after the largest


def test_the_database_refuses_a_duplicate_key(engine: Engine) -> None:
    with pytest.raises(IntegrityError), store.transaction(engine) as s:
        s.add(store.Paper(key="k", title="t", abstract="a", source="f", line=1, first_seen_at=FIXED_NOW))
        s.add(store.Paper(key="k", title="t2", abstract="a", source="f", line=2, first_seen_at=FIXED_NOW))


def test_timestamps_come_back_aware_utc(engine: Engine) -> None:
    berlin = datetime(2026, 3, 15, 8, 0, tzinfo=timezone(timedelta(hours=1)))
    with store.transaction(engine) as s:
        store.add_papers(session=s, papers=[paper("a")], at=berlin)
    with store.reading(engine) as s:
        got = store.find_paper(session=s, key="a").first_seen_at  # type: ignore[union-attr]
    assert got == FIXED_NOW and got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_deliveries_are_unique_per_subscriber_and_paper(engine: Engine) -> None:
    with store.transaction(engine) as s:
        subs = sync(s, [("Ann@X.org", "Ann")])
        store.add_papers(session=s, papers=[paper("a"), paper("b")], at=FIXED_NOW)
        store.add_papers(session=s, papers=[paper("c")], at=FIXED_NOW + timedelta(hours=1))
    ann = subs["ann@x.org"]
    assert ann.id is not None
    with store.transaction(engine) as s:
        ids = {p.key: p.id for p in s.exec(select(store.Paper))}
        rows = [
            store.NewDelivery(ann.id, ids["a"], 2, ["x"], ["keywords"]),  # type: ignore[arg-type]
            store.NewDelivery(ann.id, ids["b"], 1, ["y"], ["topic:t"]),  # type: ignore[arg-type]
            store.NewDelivery(ann.id, ids["c"], 1, ["z"], ["query"]),  # type: ignore[arg-type]
        ]
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 3
    with store.transaction(engine) as s:
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 0
        pending = store.outbox_rows(session=s, subscriber_ids=[ann.id])
        assert list(pending) == [ann.id] and len(pending[ann.id]) == 3
        assert [r.attempts for r in pending[ann.id]] == [0, 0, 0]
        seen = store.paper_seen(session=s, paper_ids=ids.values())
        shown = best_first(pending[ann.id], 10, seen)
        texts = store.paper_texts(session=s, paper_ids=[r.paper_id for r in shown])
        # best first; among equals the newest paper first
        assert [(texts[r.paper_id][2], r.terms, r.via) for r in shown] == [
            ("a", ["x"], ["keywords"]),
            ("c", ["z"], ["query"]),
            ("b", ["y"], ["topic:t"]),
        ]
        assert [texts[r.paper_id][2] for r in best_first(pending[ann.id], 1, seen)] == ["a"]
    with store.transaction(engine) as s:  # a claim returns the same rows, and then none is pending
        claimed, _ = store.claim_due(
            session=s,
            at=FIXED_NOW,
            lease_until=FIXED_NOW + timedelta(minutes=1),
            worker="w",
            max_subscribers=5,
        )
        assert claimed == pending
        assert store.outbox_rows(session=s, subscriber_ids=[ann.id]) == {}


def test_topic_papers_are_unique_per_topic_newest_then_best_first(engine: Engine) -> None:
    later = FIXED_NOW + timedelta(days=1)
    with store.transaction(engine) as s:
        store.add_papers(session=s, papers=[paper("old")], at=FIXED_NOW)
        store.add_papers(session=s, papers=[paper("weak"), paper("strong")], at=later)
        ids = {p.key: p.id for p in s.exec(select(store.Paper))}
        rows = [
            store.NewTopicPaper("safety", ids["old"], 5, ["x"]),  # type: ignore[arg-type]
            store.NewTopicPaper("safety", ids["weak"], 1, ["x"]),  # type: ignore[arg-type]
            store.NewTopicPaper("safety", ids["strong"], 4, ["x", "y"]),  # type: ignore[arg-type]
            store.NewTopicPaper("other", ids["weak"], 1, ["z"]),  # type: ignore[arg-type]
        ]
        assert store.add_topic_papers(session=s, rows=rows, at=later) == 4
        assert store.add_topic_papers(session=s, rows=rows, at=later) == 0
    with store.reading(engine) as s:
        feed = store.topic_papers(session=s, topic="safety", limit=10)
        assert [p.key for _, p in feed] == ["strong", "weak", "old"]
        assert feed[0][0].terms == ["x", "y"]
        assert [p.key for _, p in store.topic_papers(session=s, topic="other", limit=10)] == ["weak"]
        assert glance.paper_named(glance.on_session(s), "tro")[0] == ids["strong"]


def test_subscribers_follow_the_configuration_and_keep_their_token(engine: Engine) -> None:
    with store.transaction(engine) as s:
        first = sync(s, [("a@x.org", "A"), ("b@x.org", None)])
    token = first["a@x.org"].token
    assert len(token) >= 24 and "a@x" not in token
    with store.transaction(engine) as s:
        second = sync(s, [("A@x.org", "Anna")])
    assert list(second) == ["a@x.org"]
    assert second["a@x.org"].token == token and second["a@x.org"].name == "Anna"
    with store.transaction(engine) as s:
        third = sync(s, [("a@x.org", "Anna"), ("b@x.org", None)])
    assert third["b@x.org"].token == first["b@x.org"].token


def test_files_are_recorded_once_per_content(engine: Engine) -> None:
    record = store.IngestedFile(sha256="ab" * 32, path="x", size=3, ingested_at=FIXED_NOW)
    with store.transaction(engine) as s:
        assert store.record_file(session=s, record=record) is True
        assert store.record_file(session=s, record=record.model_copy()) is False
    with store.reading(engine) as s:
        assert store.file_known(session=s, sha256="ab" * 32)
        assert store.counts(session=s)["files"] == 1


def test_a_subscribers_new_deliveries_are_stored_side_by_side(engine: Engine) -> None:
    """Matching hands rows over paper by paper; they are stored subscriber by subscriber
    (consecutive ids), so a claim or a sent mark touches a few pages, not one per row."""
    with store.transaction(engine) as s:
        store.add_papers(session=s, papers=[paper(f"p{i}") for i in range(5)], at=FIXED_NOW)
        subs = sync(s, [(f"r{i}@x.org", None) for i in range(3)])
        paper_ids = [p.id for p in s.exec(select(store.Paper))]
        rows = [
            store.NewDelivery(sub.id, pid, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for pid in paper_ids
            for sub in subs.values()
        ]
        store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW)
        stored = s.exec(select(store.Delivery).order_by(store.Delivery.id)).all()  # type: ignore[arg-type]
    assert [(d.subscriber_id, d.paper_id) for d in stored] == sorted(
        (r.subscriber_id, r.paper_id) for r in rows
    )


def test_inserts_larger_than_one_statement_allows(engine: Engine) -> None:
    """SQLite binds at most 32,766 values per statement, PostgreSQL 65,535: inserts go in chunks."""
    many = [paper(f"paper {i}") for i in range(5000)]  # 5,000 x 7 values
    with store.transaction(engine) as s:
        assert len(store.add_papers(session=s, papers=many, at=FIXED_NOW)) == 5000
        subs = sync(s, [(f"r{i}@x.org", None) for i in range(3)])
        ids = [p.id for p in s.exec(select(store.Paper))]
        rows = [
            store.NewDelivery(sub.id, pid, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for sub in subs.values()
            for pid in ids
        ]
        assert store.add_deliveries(session=s, deliveries=rows[::2], at=FIXED_NOW) == 7_500
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 7_500  # the others
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 0


def test_following_the_configuration_takes_the_same_statements_for_10_or_1000_subscribers(
    engine: Engine,
) -> None:
    """sync_subscribers is set-based: adding, leaving, coming back and renaming cost a handful of
    statements, however many subscribers change (the driver sends many rows per INSERT, a few
    hundred at a time, so 1,000 new rows may take a statement or two more than 10)."""

    def statements(people: list[tuple[str, str | None]]) -> int:
        seen: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            with store.transaction(engine) as s:
                store.sync_subscribers(session=s, people=people, at=FIXED_NOW)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    def rounds(n: int) -> list[int]:
        everyone = [(f"r{i}@{n}.org", None) for i in range(n)]
        half = everyone[: n // 2]
        renamed = [(email, "New Name") for email, _ in everyone]
        return [statements(everyone), statements(half), statements(renamed), statements(everyone)]

    small, large = rounds(10), rounds(1000)
    assert all(b <= a + 3 for a, b in zip(small, large, strict=True)), (small, large)
    assert max(large) <= 12, large
    with store.reading(engine) as s:
        active = store.active_subscribers(session=s)
    assert len([e for e in active if e.endswith("@1000.org")]) == 1000
    assert {sub.name for e, sub in active.items() if e.endswith("@1000.org")} == {None}  # renamed back
