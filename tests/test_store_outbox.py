"""The outbox on SQLite and on PostgreSQL: claims with leases, retries and failures, sent
marks left by a process that died, and the partial index of the rows still to send."""

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import select

from service import store
from tests.helpers import FIXED_NOW, sync
from tests.test_store import paper


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
