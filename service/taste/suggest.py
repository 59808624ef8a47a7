"""Suggestions: papers the rules did not select that a reader's taste ranks high.

``subscribers[].suggest: N`` adds up to N such papers to each email, in their own section
("You might also like"). Each cycle weighs the papers matched since the reader's last
weighing (at most the last ``backfill`` days): never one the reader already has (the
outbox holds one row per reader and paper, sent ones included) or rated or named in
``like``, never one their ``exclude`` terms reject; only one their model ranks with the
best quarter of the papers their rules brought lately (:func:`bars_of`). The
chosen papers join the outbox like matches, with ``via`` = ``suggested``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session

from .. import store
from ..compose import PaperCache
from ..rules import Index, RuleSet
from ..settings import Settings, SubscriberConfig
from . import SUGGESTED

if TYPE_CHECKING:  # numpy, SciPy and scikit-learn: imported once there is something to weigh
    from .model import Model
    from .rank import Ranker

BAR_PAPERS = 50  # a reader's latest papers, whose learned scores set the bar of a suggestion
BAR = 0.75  # the quantile of those scores a suggestion must pass: the best quarter of the rules'
BAR_LEAST = 5  # fewer unrated papers than this: no bar can be told, no suggestion
CANDIDATES = 5_000  # papers weighed per cycle, at most (the oldest first; the rest next cycle)


def excluded(readers: dict[int, SubscriberConfig], papers: list[store.PaperText]) -> set[tuple[int, int]]:
    """(reader, paper) pairs where one of the reader's ``exclude`` terms is in the paper."""
    rules = [RuleSet.build(str(sid), sub.exclude) for sid, sub in readers.items() if sub.exclude]
    if not rules:
        return set()
    index = Index(rules, [])
    return {(int(m.owner), p.id) for p in papers for m in index.match(p.title, p.abstract).subscribers}


def bars_of(
    session: Session, ranker: Ranker, models: dict[int, Model], told: set[tuple[int, int]]
) -> dict[int, float]:
    """What a suggestion must score for each reader: as much as the best quarter of the
    papers their rules brought lately, leaving out those they ``told`` us of (rated or
    liked). A model fitted on a few likes scores nearly everything below 0 and still ranks
    what resembles them first, so the bar is the reader's own papers, not 0. A reader with
    fewer than ``BAR_LEAST`` such papers gets no suggestion (infinity)."""
    recent = store.recent_papers(session=session, subscriber_ids=list(models), each=BAR_PAPERS)
    recent = {sid: [p for p in papers if (sid, p) not in told] for sid, papers in recent.items()}
    scores = ranker.scores(session, recent, models)
    out = {}
    for sid in models:
        values = sorted(scores.get(sid, {}).values())
        out[sid] = values[int(BAR * (len(values) - 1))] if len(values) >= BAR_LEAST else math.inf
    return out


def suggest(engine: Engine, settings: Settings, *, at: datetime) -> int:
    """Queue the suggestions of this cycle; how many."""
    wanted = {s.email.lower(): s for s in settings.subscribers if s.suggest}
    if not wanted:
        return 0
    with store.reading(engine) as session:
        states = store.taste_states(session=session)
        readers = {
            sid: wanted[email]
            for email, sid in store.receiving(session=session).items()
            if email in wanted and sid in states and states[sid].fitted
        }
        if not readers:
            return 0
        start = min(states[sid].suggested_through for sid in readers)
        since = at - timedelta(days=settings.backfill)
        papers = store.papers_since(session=session, since=since, after=start, limit=CANDIDATES)
        if not papers:
            return 0
        from .model import Model
        from .rank import Ranker

        ranker = Ranker(PaperCache().texts)
        ids = [p.id for p in papers]
        taken = store.delivered(session=session, subscriber_ids=list(readers), paper_ids=ids)
        taken |= excluded(readers, papers)
        rated = store.ratings_by_reader(session=session, subscriber_ids=list(readers))
        told = {(sid, p) for sid, by_paper in rated.items() for p in by_paper}
        told |= {(sid, p) for sid in readers for p in states[sid].liked}
        taken |= told
        weighed = {
            sid: [p for p in ids if p > states[sid].suggested_through and (sid, p) not in taken]
            for sid in readers
        }
        models = {
            sid: Model.from_bytes(data)
            for sid, data in store.models(session=session, subscriber_ids=list(readers)).items()
        }
        scores = ranker.scores(session, weighed, models)
        bars = bars_of(session, ranker, models, told)
        rows = []
        for sid, by_paper in scores.items():
            best = sorted(((v, p) for p, v in by_paper.items() if v > bars[sid]), reverse=True)
            rows += [store.NewDelivery(sid, p, 0, [], [SUGGESTED]) for _, p in best[: readers[sid].suggest]]
    with store.transaction(engine) as session:
        queued = store.add_deliveries(session=session, deliveries=rows, at=at)
        behind = [sid for sid in readers if states[sid].suggested_through < ids[-1]]
        store.mark_suggested(session=session, subscriber_ids=behind, through=ids[-1])
    return queued
