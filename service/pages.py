"""The reader's page (``/u/<token>``) and each topic's (``/topics/<name>``): their papers
newest digest first, grouped by the digest's day, a page of :data:`PAGE_SIZE` at a time,
each with its terms marked and a sentence saying why it came; the feeds to subscribe to;
the rules, in words.

The reader's page sits behind their private token, like their feed: it is answered with
``noindex`` and ``no-referrer`` (a click on a paper must not hand the token to another
site). :mod:`service.web` serves both; this module reads the store and shapes what the
template ``papers.html.j2`` shows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlmodel import Session

from . import feeds, store
from .feeds import dated, reader_page, topic_page
from .publish import subscriber_rules_in_words
from .ratings import ANSWERS, answer_of, rating_url
from .ratings import SECRET as RATINGS
from .rules.words import describe
from .settings import Settings
from .views import PaperView, paper_link

PAGE_SIZE = 50  # papers on one page


@dataclass(frozen=True, slots=True)
class Day:
    day: date | None
    entries: list[PaperView]


@dataclass(frozen=True, slots=True)
class Listing:
    """What ``papers.html.j2`` shows."""

    heading: str
    about: str  # the rules, in words
    url: str  # the page itself
    atom: str
    rss: str
    days: list[Day]
    page: int
    pages: int
    total: int
    unsubscribe: str | None = None  # the reader's unsubscribe page (not on a topic's)
    notice: str | None = None  # the reader unsubscribed, or left the configuration
    topics: list[tuple[str, str]] = field(default_factory=list)  # (name, page) they follow

    @property
    def newer(self) -> str | None:
        return None if self.page <= 1 else f"{self.url}?page={self.page - 1}"

    @property
    def older(self) -> str | None:
        return None if self.page >= self.pages else f"{self.url}?page={self.page + 1}"


def page_number(raw: str | None) -> int:
    """``?page=`` as a number from 1; anything else is the first page."""
    return int(raw) if raw and raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def _entry(
    settings: Settings,
    paper: store.Paper,
    terms: Sequence[str],
    via: Sequence[str],
    rating: tuple[bytes, str, dict[int, int]] | None = None,
    taste: str = "",
) -> PaperView:
    """A paper as the page shows it; with ``rating`` (key, token, the reader's answers), its
    "more like this" and "less like this" buttons."""
    rates: dict[str, str] = {}
    if rating is not None and paper.id is not None:
        key, token, answers = rating
        rates = {f"{a}_url": rating_url(settings.http.url, key, token, paper.id, a) for a in ANSWERS}
        rates["rated"] = answer_of(answers.get(paper.id))
    return PaperView.build(
        title=paper.title,
        abstract=paper.abstract,
        link=paper_link(settings.email.paper_link, title=paper.title, key=paper.key),
        terms=terms,
        score=0,
        via=via,
        anchor=f"p{paper.id}",
        taste=taste,
        **rates,
    )


def _by_day(rows: list[tuple[store.Paper, PaperView]]) -> list[Day]:
    days = itertools.groupby(rows, key=lambda row: dated(row[0].digest_date, row[0].first_seen_at, 0).date())
    return [Day(day, [entry for _, entry in group]) for day, group in days]


def reader_listing(session: Session, settings: Settings, sub: store.Subscriber, page: int) -> Listing:
    """The reader's page ``page`` (past the last: the last)."""
    assert sub.id is not None and settings.feeds.base_url is not None
    total = store.subscriber_paper_count(session=session, subscriber_id=sub.id)
    page = min(page, _pages(total))
    rows = store.subscriber_papers(
        session=session, subscriber_id=sub.id, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    rules = settings.subscriber(sub.email)
    key = store.secret(session=session, name=RATINGS, make=False)  # made by the first delivery
    answers = store.ratings_of(session=session, subscriber_id=sub.id, paper_ids=[p.id or 0 for _, p in rows])
    rating = None if key is None else (key, sub.token, answers)
    tastes = {}
    kept = store.models(session=session, subscriber_ids=[sub.id]).get(sub.id)
    if kept is not None:  # scikit-learn loads for a taste only
        from .taste.why import reasons

        shown = [(p.id or 0, p.title, p.abstract) for _, p in rows]
        tastes = {pid: why.sentence() for pid, why in reasons(session, sub.id, kept, shown).items()}
    name = feeds.subscriber_feed(sub.token)
    notice = None
    if sub.unsubscribed_at is not None:
        notice = f"You unsubscribed on {sub.unsubscribed_at:%Y-%m-%d}: no email goes to {sub.email} any more."
    elif not sub.active or rules is None:
        notice = f"{sub.email} is no longer on the list: no new papers come here."
    return Listing(
        heading=f"Papers for {sub.name or sub.email}",
        about=subscriber_rules_in_words(rules) if rules else "",
        url=reader_page(settings.http.url, sub.token),
        atom=feeds.feed_url(settings.feeds.base_url, name, "atom"),
        rss=feeds.feed_url(settings.feeds.base_url, name, "rss"),
        days=_by_day(
            [(p, _entry(settings, p, d.terms, d.via, rating, tastes.get(p.id or 0, ""))) for d, p in rows]
        ),
        page=page,
        pages=_pages(total),
        total=total,
        unsubscribe=f"{settings.http.url}unsubscribe/{sub.token}" if sub.unsubscribed_at is None else None,
        notice=notice,
        topics=[(t, topic_page(settings.http.url, t)) for t in (rules.topics if rules else [])],
    )


def topic_listing(session: Session, settings: Settings, name: str, page: int) -> Listing:
    """A topic's page ``page``."""
    assert settings.feeds.base_url is not None
    topic = settings.topics[name]
    total = store.topic_paper_count(session=session, topic=name)
    page = min(page, _pages(total))
    rows = store.topic_papers(session=session, topic=name, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    feed = feeds.topic_feed(name)
    about = topic.description or describe(keywords=topic.keywords, query=topic.query, exclude=topic.exclude)
    return Listing(
        heading=topic.title or name,
        about=about,
        url=topic_page(settings.http.url, name),
        atom=feeds.feed_url(settings.feeds.base_url, feed, "atom"),
        rss=feeds.feed_url(settings.feeds.base_url, feed, "rss"),
        days=_by_day([(p, _entry(settings, p, t.terms, ())) for t, p in rows]),
        page=page,
        pages=_pages(total),
        total=total,
    )
