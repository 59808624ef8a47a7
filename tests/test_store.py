"""The store on SQLite and on PostgreSQL: the database refuses duplicates."""

import re
from datetime import datetime, timedelta, timezone
from typing import Any

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
        assert (
            store.add_papers(session=s, papers=[paper("a"), paper("b"), paper("a", "A again")], at=FIXED_NOW)
            == 2
        )
    with store.transaction(engine) as s:
        assert store.add_papers(session=s, papers=[paper("b"), paper("c")], at=FIXED_NOW) == 1
    with store.reading(engine) as s:
        assert store.counts(session=s)["papers"] == 3
        assert store.find_paper(session=s, key="a").title == "A"  # type: ignore[union-attr]


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


def test_claims_leases_retries_and_failure(engine: Engine) -> None:
    """pending -> sending -> sent; -> pending with a retry time; -> failed; an expired lease is due."""
    with store.transaction(engine) as s:
        subs = sync(s, [("a@x.org", None), ("b@x.org", None)])
        store.add_papers(session=s, papers=[paper("p"), paper("q")], at=FIXED_NOW)
        ids = {p.key: p.id for p in s.exec(select(store.Paper))}
        rows = [
            store.NewDelivery(sub.id, pid, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for sub in subs.values()
            for pid in ids.values()
        ]
        store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW)
    a, b = subs["a@x.org"].id, subs["b@x.org"].id
    lease = FIXED_NOW + timedelta(minutes=10)

    def claim(at: datetime, worker: str) -> dict[int, list[int]]:
        with store.transaction(engine) as s:
            claimed = store.claim_due(session=s, at=at, lease_until=lease, worker=worker, max_subscribers=10)[
                0
            ]
        return {sid: [r.id for r in rows] for sid, rows in claimed.items()}

    first = claim(FIXED_NOW, "w1")
    assert sorted(first) == [a, b] and all(len(v) == 2 for v in first.values())
    assert claim(FIXED_NOW, "w2") == {}  # claimed rows are not due for anyone else
    with store.transaction(engine) as s:
        store.record_sent(session=s, worker="w1", marks=[store.NewSentMark(a, "<a@x>", FIXED_NOW, 2)])
        store.record_sent(session=s, worker="w2", marks=[store.NewSentMark(b, "<b@x>", FIXED_NOW, 2)])
    with store.transaction(engine) as s:
        assert store.fold_sent(session=s, worker="w1") == store.FoldReport(1, 2, [])
        assert store.fold_sent(session=s, worker="w1") == store.FoldReport(0, 0, [])  # folded once
        # w2 never claimed b's rows: its mark moves nothing, and says so
        assert store.fold_sent(session=s) == store.FoldReport(1, 0, [(b, 2)])
    with store.reading(engine) as s:
        sent = s.exec(select(store.Delivery).where(store.Delivery.state == "sent")).all()
        assert sorted(d.id for d in sent) == first[a] and {d.message_id for d in sent} == {"<a@x>"}
        assert all(d.attempts == 1 and d.claimed_by is None for d in sent)
    with store.transaction(engine) as s:
        store.mark_failed_attempt(
            session=s,
            delivery_ids=first[b],
            worker="w1",
            error="451 try later",
            permanent=False,
            retry_at=FIXED_NOW + timedelta(minutes=5),
            max_attempts=2,
        )
    assert claim(FIXED_NOW + timedelta(minutes=4), "w1") == {}  # not due before its retry time
    second = claim(FIXED_NOW + timedelta(minutes=5), "w1")
    assert second == {b: first[b]}
    # w1 dies holding the claim; once the lease runs out the rows are due again
    assert claim(lease - timedelta(seconds=1), "w3") == {}
    third = claim(lease + timedelta(seconds=1), "w3")
    assert third == {b: first[b]}
    with store.transaction(engine) as s:
        store.mark_failed_attempt(
            session=s,
            delivery_ids=third[b],
            worker="w3",
            error="451 still later",
            permanent=False,
            retry_at=lease,
            max_attempts=2,
        )  # the second attempt of two: failed for good
    with store.reading(engine) as s:
        counts = store.counts(session=s)
        assert counts["deliveries"] == {"pending": 0, "sending": 0, "sent": 2, "failed": 2, "cancelled": 0}
        assert store.failures(session=s) == [
            {"email": "b@x.org", "reason": "451 still later", "papers": 2, "attempts": 2}
        ]
    assert claim(lease + timedelta(days=1), "w1") == {}


def test_a_permanent_error_fails_at_once_and_release_counts_no_attempt(engine: Engine) -> None:
    with store.transaction(engine) as s:
        subs = sync(s, [("a@x.org", None)])
        store.add_papers(session=s, papers=[paper("p")], at=FIXED_NOW)
        pid = s.exec(select(store.Paper.id)).one()
        store.add_deliveries(
            session=s,
            deliveries=[store.NewDelivery(subs["a@x.org"].id, pid, 1, ["t"], ["keywords"])],  # type: ignore[arg-type]
            at=FIXED_NOW,
        )
    lease = FIXED_NOW + timedelta(minutes=10)
    with store.transaction(engine) as s:
        [rows] = store.claim_due(session=s, at=FIXED_NOW, lease_until=lease, worker="w", max_subscribers=5)[
            0
        ].values()
        ids = [r.id for r in rows]
        store.release(session=s, delivery_ids=ids, worker="w")
    with store.transaction(engine) as s:
        [rows] = store.claim_due(session=s, at=FIXED_NOW, lease_until=lease, worker="w", max_subscribers=5)[
            0
        ].values()
        ids = [r.id for r in rows]
        store.mark_failed_attempt(
            session=s,
            delivery_ids=ids,
            worker="w",
            error="550 no such user",
            permanent=True,
            retry_at=lease,
            max_attempts=8,
        )
    with store.reading(engine) as s:
        [d] = s.exec(select(store.Delivery)).all()
        assert (d.state, d.attempts, d.last_error, d.claimed_by) == ("failed", 1, "550 no such user", None)


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
        assert store.add_papers(session=s, papers=many, at=FIXED_NOW) == 5000
        subs = sync(s, [(f"r{i}@x.org", None) for i in range(3)])
        ids = [p.id for p in s.exec(select(store.Paper))]
        rows = [
            store.NewDelivery(sub.id, pid, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for sub in subs.values()
            for pid in ids
        ]
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 15_000
        assert store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW) == 0


def test_a_mark_left_by_a_dead_process_counts_before_anything_is_claimed_again(engine: Engine) -> None:
    """The server accepted the email, the process recorded its mark and died before folding:
    after the lease the rows are not claimed again (no duplicate); they are sent."""
    with store.transaction(engine) as s:
        subs = sync(s, [("a@x.org", None)])
        store.add_papers(session=s, papers=[paper("p"), paper("q")], at=FIXED_NOW)
        rows = [
            store.NewDelivery(subs["a@x.org"].id, p.id, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for p in s.exec(select(store.Paper))
        ]
        store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW)
    a = subs["a@x.org"].id
    assert a is not None
    lease = FIXED_NOW + timedelta(minutes=10)
    with store.transaction(engine) as s:
        [claimed] = store.claim_due(
            session=s, at=FIXED_NOW, lease_until=lease, worker="w1", max_subscribers=5
        )[0].values()
    with store.transaction(engine) as s:
        store.record_sent(session=s, worker="w1", marks=[store.NewSentMark(a, "<m@x>", FIXED_NOW, 2)])
    # w1 is gone; a later claim folds its mark first
    with store.transaction(engine) as s:
        after = lease + timedelta(seconds=1)
        assert store.claim_due(session=s, at=after, lease_until=after, worker="w2", max_subscribers=5) == (
            {},
            False,
        )
    with store.reading(engine) as s:
        states = {d.id: (d.state, d.message_id) for d in s.exec(select(store.Delivery))}
    assert states == {r.id: ("sent", "<m@x>") for r in claimed}


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[tuple[str, list[str]]]:
    """Each statement with how the database would find its rows (EXPLAIN)."""
    out = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # the tables are tiny: make an index worth its while
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        for statement, parameters in statements:
            rows = conn.exec_driver_sql(explain + statement, parameters).all()
            out.append((statement, [str(row[-1]) for row in rows]))
    return out


def test_the_outbox_is_read_through_the_index_of_rows_still_to_send(engine: Engine) -> None:
    """Claims, sent marks, preview and unsubscribe find a subscriber's due rows in the partial
    index of pending and sending rows, never by scanning the table or every row of theirs."""
    with store.transaction(engine) as s:
        subs = sync(s, [("a@x.org", None), ("b@x.org", None)])
        store.add_papers(session=s, papers=[paper("p"), paper("q")], at=FIXED_NOW)
        pids = list(s.exec(select(store.Paper.id)))
        rows = [
            store.NewDelivery(sub.id, pid, 1, ["t"], ["keywords"])  # type: ignore[arg-type]
            for sub in subs.values()
            for pid in pids
        ]
        store.add_deliveries(session=s, deliveries=rows, at=FIXED_NOW)
    a, b = subs["a@x.org"], subs["b@x.org"]
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if re.search(r"\b(FROM|UPDATE) deliveries\b", statement) and not many:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with store.transaction(engine) as s:
            store.claim_due(session=s, at=FIXED_NOW, lease_until=FIXED_NOW, worker="w", max_subscribers=1)
            store.record_sent(session=s, worker="w", marks=[store.NewSentMark(a.id, "<m@x>", FIXED_NOW, 2)])  # type: ignore[arg-type]
        with store.transaction(engine) as s:
            assert store.fold_sent(session=s, worker="w").rows == 2
            assert list(store.outbox_rows(session=s, subscriber_ids=[b.id])) == [b.id]  # type: ignore[list-item]
            assert store.unsubscribe(session=s, token=b.token, at=FIXED_NOW) is not None
    finally:
        event.remove(engine, "before_cursor_execute", record)

    plans = _plans(engine, seen)
    kinds = {statement.split()[0] for statement, _ in plans}
    # the claim (its subscribers, then their rows), the fold, the preview, the cancel
    assert len(plans) >= 5 and kinds == {"SELECT", "UPDATE"}
    for statement, plan in plans:
        text = "\n".join(plan)
        assert "SCAN deliveries" not in text and "Seq Scan on deliveries" not in text, text  # whole table
        used = {  # how rows of deliveries are found (SQLite's and PostgreSQL's wording)
            name
            for found in _INDEX_USED.findall(text)
            for name in found
            if name and (name == "PRIMARY KEY" or "deliveries" in name)
        }
        # the partial index, and the primary key for the claim's UPDATE of the rows found there
        allowed = {"ix_deliveries_live", "PRIMARY KEY", "deliveries_pkey"}
        assert "ix_deliveries_live" in used and used <= allowed, (statement, text)


_INDEX_USED = re.compile(
    r"SEARCH deliveries USING (?:COVERING )?INDEX (\w+)|SEARCH deliveries USING INTEGER (PRIMARY KEY)"
    r"|Scan using (\w+) on deliveries|Bitmap Index Scan on (\w+)"
)


def test_following_the_configuration_takes_the_same_statements_for_10_or_1000_subscribers(
    engine: Engine,
) -> None:
    """sync_subscribers is set-based: adding, leaving, coming back and renaming cost a handful of
    statements, however many subscribers change (the driver sends many rows per INSERT, a few
    hundred at a time, so 1,000 new rows may take a statement or two more than 10)."""
    from sqlalchemy import event

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
