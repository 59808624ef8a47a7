"""The web server: feeds, one-click unsubscribe, a status page, health and metrics.

Starlette, served by uvicorn, from inside ``paperboy run`` (on a thread
beside the scheduler, ``http.enabled``) or alone with ``paperboy serve``:

- ``/feeds/all.atom``, ``/feeds/topics/<name>.atom``, ``/feeds/u/<token>.atom``
  (and ``.rss``): the feeds, from the store (so any host sharing it serves
  them, :class:`~service.publish.Feeds`), with ``ETag`` and
  ``Last-Modified`` (a conditional GET is answered 304 from one query by
  key), gzip when asked, and the feed's own content type. Anything else under ``/feeds/`` is a plain 404,
  the same whether or not a token ever belonged to someone.
- ``/feeds.opml``: the public feeds (everything, then each topic) for a reader
  to import at once.
- ``/unsubscribe/<token>``: GET shows a page with a button; POST with
  ``List-Unsubscribe=One-Click`` (RFC 8058, what mail providers send; the
  button sends the same) records the opt-out at once. It wins over the
  configuration until the operator runs ``paperboy resubscribe EMAIL``.
- ``/u/<token>``: the reader's page (:mod:`service.pages`): their papers by
  digest day, paged, why each came, their feeds and rules, the unsubscribe
  button; never indexed, no Referer. ``/topics/<name>``: the same for a topic.
- ``/``: the topic feeds, the latest papers and a chart of papers and emails
  per day (inline SVG); ``/healthz`` (200 "ok", or 503 with the problems: the
  store is away, the last poll or delivery failed, or no poll has run for three
  ``schedule.poll`` intervals) and ``/metrics`` (Prometheus text format, read
  from the store at each scrape).

The application asks ``current()`` for the running :class:`~service.cycle.App`
on every request, so a configuration reloaded by ``paperboy run`` is what the
server shows.
"""

from __future__ import annotations

import functools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import anyio
import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import __version__, feeds, pages, store
from .cycle import App
from .health import verdict
from .log import event
from .metrics import StoreCollector
from .middleware import BodyLimit
from .publish import Feeds
from .ratings import answer_page
from .render import templates_path
from .views import paper_link

log = logging.getLogger("paperboy.web")

FEED_TYPES = {"atom": "application/atom+xml; charset=utf-8", "rss": "application/rss+xml; charset=utf-8"}
LATEST = 20  # papers on the front page
# A reader's page is theirs alone: no search engine, no cache between, and no Referer that
# would hand the token to the site of a paper they click.
PRIVATE_PAGE = {
    "x-robots-tag": "noindex",
    "referrer-policy": "no-referrer",
    "cache-control": "private, no-store",
}
MAX_BODY = 4096  # bytes of a request body: the one form (one-click unsubscribe) needs a few dozen
MAX_FORM_FIELDS = 8
CHART_DAYS = 30


def fresh(request: Request, etag: str, modified: datetime) -> bool:
    """Whether the reader's copy is current (RFC 9110 13.1): ``If-None-Match`` when sent
    (weak comparison, ``*`` matches), else ``If-Modified-Since`` to the second."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    return when.tzinfo is not None and modified.replace(microsecond=0) <= when


def feed_headers(kind: str, etag: str, modified: datetime) -> dict[str, str]:
    return {
        "etag": etag,
        "last-modified": format_datetime(modified.astimezone(UTC), usegmt=True),
        "cache-control": "no-cache",  # revalidate: the ETag makes that cheap
        "content-type": FEED_TYPES[kind],
    }


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    papers: int
    emails: int


def chart(bars: list[Bar], *, width: int = 600, height: int = 140) -> dict[str, Any]:
    """Geometry for the front page's SVG: two bars a day, each series scaled to its own
    busiest day (a few emails beside hundreds of papers would not show otherwise)."""
    top_papers = max([b.papers for b in bars] + [1])
    top_emails = max([b.emails for b in bars] + [1])
    slot = width / max(1, len(bars))
    out = []
    for i, b in enumerate(bars):
        x = i * slot
        ph = round(b.papers / top_papers * (height - 4), 1)
        eh = round(b.emails / top_emails * (height - 4), 1)
        out.append(
            {
                "bar": b,
                "x_papers": round(x + slot * 0.1, 1),
                "x_emails": round(x + slot * 0.5, 1),
                "w": round(slot * 0.4, 1),
                "h_papers": ph,
                "h_emails": eh,
                "y_papers": round(height - ph, 1),
                "y_emails": round(height - eh, 1),
            }
        )
    return {"bars": out, "width": width, "height": height, "top_papers": top_papers, "top_emails": top_emails}


def opml(title: str, outlines: list[tuple[str, str]]) -> bytes:
    """An OPML 2.0 subscription list (``outlines``: (title, URL) of each feed)."""
    root = ET.Element("opml", version="2.0")
    ET.SubElement(ET.SubElement(root, "head"), "title").text = title
    body = ET.SubElement(root, "body")
    for name, url in outlines:
        ET.SubElement(body, "outline", type="rss", text=name, title=name, xmlUrl=url)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def create_app(current: Callable[[], App]) -> Starlette:
    """The web application; ``current()`` gives the running App (settings, store)."""

    def environment() -> jinja2.Environment:
        return _pages(templates_path(current().settings.templates_dir))

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        settings = current().settings
        context.setdefault("site", settings.feeds.title)
        return HTMLResponse(environment().get_template(name).render(**context), status_code=status)

    async def in_thread(fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn)

    def topic_feeds() -> list[dict[str, str]]:
        settings = current().settings
        base = settings.feeds.base_url or ""
        out = [
            {
                "name": feeds.ALL,
                "title": f"{settings.feeds.title}: every paper",
                "description": "Every paper paperboy has seen, newest first.",
                "atom": feeds.feed_url(base, feeds.ALL, "atom"),
                "rss": feeds.feed_url(base, feeds.ALL, "rss"),
            }
        ]
        for name, topic in settings.topics.items():
            out.append(
                {
                    "name": name,
                    "title": topic.title or name,
                    "description": topic.description or "",
                    "atom": feeds.feed_url(base, feeds.topic_feed(name), "atom"),
                    "rss": feeds.feed_url(base, feeds.topic_feed(name), "rss"),
                }
            )
        return out

    async def index(request: Request) -> Response:
        def load() -> dict[str, Any]:
            app = current()
            today = app.clock().date()
            first = today - timedelta(days=CHART_DAYS - 1)
            with store.reading(app.engine) as session:
                latest = store.latest_papers(session=session, limit=LATEST)
                per_day = store.daily_activity(
                    session=session, since=app.clock() - timedelta(days=CHART_DAYS)
                )
                counts = store.counts(session=session)
                last = store.last_run(session=session)
            bars = [
                Bar(first + timedelta(days=i), *per_day.get(first + timedelta(days=i), (0, 0)))
                for i in range(CHART_DAYS)
            ]
            link = app.settings.email.paper_link
            papers = [(p, paper_link(link, title=p.title, key=p.key)) for p in latest]
            return {"latest": papers, "chart": chart(bars), "counts": counts, "last": last}

        data = await in_thread(load)
        return page("index.html.j2", feeds=topic_feeds(), version=__version__, **data)

    published = Feeds()

    async def feed(request: Request) -> Response:
        """A feed, on any host that shares the store: its ETag and time from one row by key
        (304 when the reader's copy is current); the body rendered from the store for a reader
        whose copy is old, and kept by ETag for the next one."""
        path = request.path_params["path"]
        if not feeds.FEED_FILE.fullmatch(path):
            raise HTTPException(status_code=404)
        app = current()
        head = await in_thread(lambda: Feeds.head(app.engine, path))
        if head is None:
            raise HTTPException(status_code=404)
        tag, modified = head
        headers = feed_headers(path.rpartition(".")[2], tag, modified)
        if fresh(request, tag, modified):
            del headers["content-type"]
            return Response(status_code=304, headers=headers)
        body = await in_thread(lambda: published.body(app.engine, app.settings, path, tag))
        if body is None:
            raise HTTPException(status_code=404)
        return Response(body, headers=headers)

    async def feeds_opml(request: Request) -> Response:
        body = opml(current().settings.feeds.title, [(f["title"], f["atom"]) for f in topic_feeds()])
        return Response(body, media_type="text/x-opml; charset=utf-8")

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        app = current()
        if request.method == "GET":
            sub = await in_thread(lambda: _find(app, token))
            if sub is None:
                return page("unsubscribe.html.j2", 404, state="unknown", token=token)
            state = "done" if sub.unsubscribed_at else "confirm"
            return page("unsubscribe.html.j2", state=state, token=token, **addressee(sub))
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        if form.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("expected List-Unsubscribe=One-Click (RFC 8058)", status_code=400)

        def record() -> store.Subscriber | None:
            with store.transaction(app.engine) as session:
                return store.unsubscribe(session=session, token=token, at=app.clock())

        sub = await in_thread(record)
        if sub is None:
            return page("unsubscribe.html.j2", 404, state="unknown", token=token)
        event(log, "subscriber.unsubscribed", subscriber=sub.id, email=sub.email, via="one-click")
        return page("unsubscribe.html.j2", state="done", token=token, **addressee(sub))

    def addressee(sub: store.Subscriber) -> dict[str, Any]:
        """Who the page speaks to, and whom they may write to."""
        name, address = current().settings.email.contact_address
        return {"address": sub.email, "contact_name": name or address, "contact": address}

    async def own_page(request: Request) -> Response:
        """A reader's page, behind their private token (never indexed, never in a Referer)."""
        token, app = request.path_params["token"], current()
        number = pages.page_number(request.query_params.get("page"))

        def load() -> pages.Listing | None:
            with store.reading(app.engine) as session:
                sub = store.subscriber_by_token(session=session, token=token)
                return None if sub is None else pages.reader_listing(session, app.settings, sub, number)

        listing = await in_thread(load)
        if listing is None:
            raise HTTPException(status_code=404)
        response = page("papers.html.j2", listing=listing, home=app.settings.http.url)
        response.headers.update(PRIVATE_PAGE)
        return response

    async def topic(request: Request) -> Response:
        name, app = request.path_params["name"], current()
        if name not in app.settings.topics:
            raise HTTPException(status_code=404)
        number = pages.page_number(request.query_params.get("page"))

        def load() -> pages.Listing:
            with store.reading(app.engine) as session:
                return pages.topic_listing(session, app.settings, name, number)

        return page("papers.html.j2", listing=await in_thread(load), home=app.settings.http.url)

    async def rate(request: Request) -> Response:
        """A rating link: GET shows the paper and a button, POST records the answer."""
        params, app = request.path_params, current()
        link = (params["token"], params["paper"], params["answer"], params["signature"])
        shown = await in_thread(
            lambda: answer_page(
                app.engine, app.settings, link, record=request.method == "POST", at=app.clock()
            )
        )
        if shown is None:
            raise HTTPException(status_code=404)  # a forged link looks like no link at all
        response = page("rate.html.j2", **shown)
        response.headers.update(PRIVATE_PAGE)
        return response

    started = current().clock()  # with no job run yet, "no poll for three intervals" counts from here

    async def healthz(request: Request) -> Response:
        def probe() -> tuple[dict[str, Any], list[str]]:
            app = current()
            with store.reading(app.engine) as session:
                session.execute(text("SELECT 1"))
                latest = store.latest_runs(session=session)
            return verdict(latest, now=app.clock(), since=started, poll=app.settings.schedule.poll)

        try:
            body, problems = await in_thread(probe)
        except Exception as exc:
            return JSONResponse(
                {
                    "status": "failing",
                    "store": f"{type(exc).__name__}: {exc}"[:300],
                    "problems": ["store away"],
                },
                status_code=503,
            )
        return JSONResponse(body, status_code=503 if problems else 200)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(current))

    async def metrics(request: Request) -> Response:
        body = await in_thread(lambda: generate_latest(registry))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return PlainTextResponse("not found" if status == 404 else "error", status_code=status)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/feeds.opml", feeds_opml),
            Route("/feeds/{path:path}", feed),
            Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
            Route("/u/{token}", own_page),
            Route("/topics/{name}", topic),
            Route("/rate/{token}/{paper:int}/{answer}/{signature}", rate, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
        ],
        middleware=[Middleware(BodyLimit, limit=MAX_BODY), Middleware(GZipMiddleware, minimum_size=512)],
        exception_handlers={HTTPException: not_found},
    )


@functools.lru_cache(maxsize=8)
def _pages(folder: Path) -> jinja2.Environment:
    """The page templates of a folder (kept: Jinja2 reloads a template whose file changed)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), autoescape=True, undefined=jinja2.StrictUndefined
    )


def _find(app: App, token: str) -> store.Subscriber | None:
    with store.reading(app.engine) as session:
        return store.subscriber_by_token(session=session, token=token)
