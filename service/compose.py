"""Composing: a subscriber's claimed outbox rows into their digest email.

One email per subscriber holds every row claimed for them; it shows the best
``max_papers`` (:func:`best_first`: best matches first, then the newest) and
counts the rest, which are in the subscriber's feed. :class:`Composer` does
this for the chunks of a delivery run: a short read of the store per chunk
(each paper's text read once per run, :class:`PaperCache`), then the
templates and the message outside the transaction. :func:`next_digest` is
the same for ``paperboy preview``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from . import feeds, store
from .message import Mail, list_id, message_id, sender_address
from .ratings import ANSWERS, rating_url
from .ratings import SECRET as RATINGS
from .render import Digest, Renderer
from .settings import Settings
from .taste import SUGGESTED
from .views import PaperView, paper_link

PaperText = tuple[str, str, str]  # title, abstract, key


def unsubscribe_urls(settings: Settings, token: str) -> list[str]:
    """The configured unsubscribe URL (if any), then a mailto: to the sender.

    The mailto: reaches the operator, who removes the subscriber from the
    configuration; the token in the subject says who asked.
    """
    urls = []
    if settings.email.unsubscribe_url:
        urls.append(settings.email.unsubscribe_url.format(token=token, title="", key=""))
    mailto = f"mailto:{sender_address(settings.email.from_)}?subject=unsubscribe%20{token}"
    if mailto not in urls:
        urls.append(mailto)
    return urls


def paper_limits(settings: Settings) -> dict[str, tuple[int, int]]:
    """How many papers each subscriber's email shows: their ``max_papers`` (else
    ``email.max_papers``) of their matches, and their ``suggest`` of the suggestions."""
    default = settings.email.max_papers
    return {s.email.lower(): (s.max_papers or default, s.suggest) for s in settings.subscribers}


def best_first(
    rows: Iterable[store.OutboxRow],
    limit: int,
    seen: Mapping[int, Any],
    learned: Mapping[int, float] | None = None,
) -> list[store.OutboxRow]:
    """The ``limit`` rows an email shows: best matches first, then the newest papers
    (``seen``: each paper's ``first_seen_at``, see :func:`service.store.paper_seen`).

    ``learned`` (a reader with a model: their weighted learned score by paper, see
    :mod:`service.taste.rank`) is added to the rules' score, scaled to 1 for the best."""
    ordered = sorted(rows, key=lambda r: r.paper_id)
    ordered.sort(key=lambda r: seen[r.paper_id], reverse=True)  # stable: ties keep the paper order
    if learned:
        top = max((r.score for r in ordered), default=1) or 1
        ordered.sort(key=lambda r: r.score / top + learned[r.paper_id], reverse=True)
    else:
        ordered.sort(key=lambda r: r.score, reverse=True)
    return ordered[:limit]


def learned_scores(
    session: Session, rows: Mapping[int, list[store.OutboxRow]], papers: PaperCache, ranker: Any
) -> tuple[dict[int, dict[int, float]], Any]:
    """The weighted learned scores of the readers of ``rows`` who have a model (by subscriber
    id, then paper id), and the ranker that made them (made here the first time one is
    needed: numpy and scikit-learn load only for a store where someone rated)."""
    kept = store.models(session=session, subscriber_ids=list(rows))
    if not kept:
        return {}, ranker
    from .taste.model import Model
    from .taste.rank import Ranker, blend

    if ranker is None:
        ranker = Ranker(papers.texts)
    models = {sid: Model.from_bytes(data) for sid, data in kept.items()}
    scores = ranker.scores(session, {sid: [r.paper_id for r in rows[sid]] for sid in models}, models)
    return {
        sid: {p: blend(models[sid]) * v for p, v in by_paper.items()} for sid, by_paper in scores.items()
    }, ranker


class PaperCache:
    """What a delivery run has read of papers: each one goes into many emails, so its
    first-seen time and its text are read once (at most ``keep`` of each are kept)."""

    def __init__(self, keep: int = 50_000) -> None:
        self.keep = keep
        self._seen: dict[int, Any] = {}
        self._texts: dict[int, PaperText] = {}

    def seen(self, session: Session, paper_ids: set[int]) -> dict[int, Any]:
        return self._read(self._seen, store.paper_seen, session, paper_ids)

    def texts(self, session: Session, paper_ids: set[int]) -> dict[int, PaperText]:
        return self._read(self._texts, store.paper_texts, session, paper_ids)

    def _read(
        self, known: dict[int, Any], read: Callable[..., dict[int, Any]], session: Session, ids: set[int]
    ) -> Any:
        missing = ids.difference(known)
        if missing:
            if len(known) + len(missing) > self.keep:
                known.clear()
                missing = ids
            known.update(read(session=session, paper_ids=missing))
        return known


@dataclasses.dataclass(frozen=True, slots=True)
class Shown:
    """What an email shows of a reader's rows: the best matches, and their suggestions."""

    matched: list[store.OutboxRow]
    suggested: list[store.OutboxRow]
    more: int  # matches left out (on the reader's page and feed)

    @property
    def rows(self) -> list[store.OutboxRow]:
        return self.matched + self.suggested


def choose(
    rows: list[store.OutboxRow],
    limits: tuple[int, int],
    seen: Mapping[int, Any],
    learned: Mapping[int, float] | None = None,
) -> Shown:
    """The rows an email shows, of ``limits`` (max_papers, suggest): the matches
    :func:`best_first`, then the suggestions the reader's taste ranks highest."""
    matched = [r for r in rows if SUGGESTED not in r.via]
    suggested = [r for r in rows if SUGGESTED in r.via]
    shown = best_first(matched, limits[0], seen, learned)
    suggested.sort(key=lambda r: (-(learned or {}).get(r.paper_id, 0.0), r.paper_id))
    return Shown(shown, suggested[: limits[1]], len(matched) - len(shown))


def digest(
    sub: store.Subscriber,
    rows: list[store.OutboxRow],
    shown: Shown,
    texts: Mapping[int, PaperText],
    *,
    settings: Settings,
    at: datetime,
    rating_key: bytes | None = None,
) -> Digest:
    """What ``sub``'s email says: the ``shown`` rows (of all their ``rows``) as papers, each
    with its rating links when ``rating_key`` signs them. No database."""
    public = settings.http.url

    def view(row: store.OutboxRow) -> PaperView:
        title, abstract, key = texts[row.paper_id]
        rates = {}
        if rating_key is not None:
            rates = {
                f"{answer}_url": rating_url(public, rating_key, sub.token, row.paper_id, answer)
                for answer in ANSWERS
            }
        return PaperView.build(
            title=title,
            abstract=abstract,
            link=paper_link(settings.email.paper_link, title=title, key=key),
            terms=row.terms,
            score=row.score,
            via=row.via,
            anchor=f"p{row.paper_id}",  # where it stands on the reader's page
            **rates,
        )

    assert settings.feeds.base_url is not None  # Settings fills it in
    return Digest(
        to_email=sub.email,
        to_name=sub.name,
        papers=[view(row) for row in shown.matched],
        suggested=[view(row) for row in shown.suggested],
        more=shown.more,
        feed_url=feeds.feed_url(settings.feeds.base_url, feeds.subscriber_feed(sub.token)),
        page_url=feeds.reader_page(settings.http.url, sub.token),
        unsubscribe=unsubscribe_urls(settings, sub.token),
        message_id=message_id(
            sender=settings.email.from_, token=sub.token, delivery_ids=[r.id for r in rows]
        ),
        date=at,
    )


def next_digest(
    session: Session, sub: store.Subscriber, *, settings: Settings, limits: tuple[int, int], at: datetime
) -> Digest | None:
    """What ``sub``'s next email would say (``preview``), or None when nothing is pending."""
    assert sub.id is not None
    rows = store.outbox_rows(session=session, subscriber_ids=[sub.id]).get(sub.id)
    if not rows:
        return None
    cache = PaperCache()
    learned, _ = learned_scores(session, {sub.id: rows}, cache, None)
    shown = choose(rows, limits, cache.seen(session, {r.paper_id for r in rows}), learned.get(sub.id))
    texts = cache.texts(session, {r.paper_id for r in shown.rows})
    key = store.secret(session=session, name=RATINGS, make=False)
    return digest(sub, rows, shown, texts, settings=settings, at=at, rating_key=key)


class Composer:
    """Claimed chunks into emails, for one delivery run (or the benchmark)."""

    def __init__(
        self,
        engine: Engine,
        renderer: Renderer,
        settings: Settings,
        *,
        broken: Callable[[list[store.OutboxRow], str, str], None] | None = None,
    ) -> None:
        """``broken(rows, address, reason)`` hears of a subscriber whose email cannot be made (an
        address no header can hold, say): their rows, not the chunk, fail; without it,
        the error is raised."""
        self.engine, self.renderer, self.settings = engine, renderer, settings
        self.broken = broken
        self.papers = PaperCache()
        self.ranker: Any = None  # made when a reader of the run has a learned taste
        self.list_id = list_id(settings.email.from_)
        with store.transaction(engine) as session:  # made once, by the first run that needs it
            self.rating_key = store.secret(session=session, name=RATINGS)

    @functools.cached_property
    def limits(self) -> dict[str, tuple[int, int]]:
        """Each subscriber's limits (:func:`paper_limits`), made when the first chunk comes:
        a run with nothing due does not go through every subscriber."""
        return paper_limits(self.settings)

    def __call__(self, rows: dict[int, list[store.OutboxRow]], *, at: datetime) -> list[Mail]:
        """One email per subscriber of ``rows`` (claimed rows by subscriber id)."""
        default = (self.settings.email.max_papers, 0)
        with store.reading(self.engine) as session:  # one short read for the chunk
            subscribers = store.subscribers_by_id(session=session, ids=list(rows))
            seen = self.papers.seen(session, {r.paper_id for group in rows.values() for r in group})
            learned, self.ranker = learned_scores(session, rows, self.papers, self.ranker)
            limits = {sid: self.limits.get(subscribers[sid].email, default) for sid in rows}
            shown = {sid: choose(group, limits[sid], seen, learned.get(sid)) for sid, group in rows.items()}
            texts = self.papers.texts(session, {r.paper_id for group in shown.values() for r in group.rows})
        out = []
        for sid, group in rows.items():
            try:
                out.append(self.mail(subscribers[sid], group, shown[sid], texts, at=at))
            except (ValueError, UnicodeError) as exc:
                if self.broken is None:
                    raise
                address = subscribers[sid].email
                self.broken(group, address, f"cannot make the email for {address!r}: {exc}")
        return out

    def mail(
        self,
        sub: store.Subscriber,
        rows: list[store.OutboxRow],
        shown: Shown,
        texts: Mapping[int, PaperText],
        *,
        at: datetime,
    ) -> Mail:
        """The finished email for ``rows``, carrying them. No database."""
        view = digest(sub, rows, shown, texts, settings=self.settings, at=at, rating_key=self.rating_key)
        mail = self.renderer.message(view, sender=self.settings.email.from_, list_id=self.list_id)
        assert sub.id is not None
        return dataclasses.replace(
            mail,
            subscriber_id=sub.id,
            delivery_ids=tuple(r.id for r in rows),
            attempts=max(r.attempts for r in rows),
        )
