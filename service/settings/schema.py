"""The configuration's schema: pydantic models that forbid unknown keys.

Each key's type, default and check. Relative paths, and a relative SQLite
database, are taken from the folder of the config file (the ``base`` in the
validation context), so the service behaves the same whatever the working
directory. Rules are checked with the rule language's own parser; cron
lines with :mod:`.cron`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import zoneinfo
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .addresses import check_address, check_name
from .base import MODEL_CONFIG, At, Duration, database_url, resolve
from .cron import check_cron
from .mail import Email


class _Model(BaseModel):
    model_config = MODEL_CONFIG


class Schedule(_Model):
    poll: Duration = 300.0
    deliver: str = "0 7 * * *"

    @field_validator("deliver")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            check_cron(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a cron line (minute hour day month weekday): {exc}") from None
        return value


class Http(_Model):
    """The web server inside ``paperboy run`` (and ``paperboy serve``): feeds, unsubscribe, status page."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = None  # how readers reach it; default http://localhost:<port>/

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value if value.endswith("/") else value + "/"

    @property
    def url(self) -> str:
        """The public address, ending in ``/``."""
        if self.public_url:
            return self.public_url
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "::1", "") else self.host
        return f"http://{host}:{self.port}/"


class Feeds(_Model):
    dir: Path = Path("var/feeds")
    base_url: str | None = None  # where readers fetch the feeds; default <http.public_url>feeds/
    max_entries: int = Field(default=200, ge=1)
    title: str = "paperboy"
    # which feeds are written into ``dir``: every one, or the shared ones (every paper, the
    # topics), the readers' own then only from the web server (rendered from the store)
    mirror: Literal["all", "shared"] = "all"

    @field_validator("dir")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve(value, info)

    @field_validator("base_url")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        return value if value is None or value.endswith("/") else value + "/"


@lru_cache(maxsize=1 << 16)  # readers share words: 50,000 terms of 10,000 readers are 2,000 distinct
def _term(value: str) -> str:
    # The rules are imported here, not at the top: the sending process reads Smtp
    # settings and has no use for them.
    from ..rules import RuleError, parse_term

    try:
        parse_term(value)
    except RuleError as exc:
        raise ValueError(exc.describe()) from None
    return value


RuleTerm = Annotated[str, AfterValidator(_term)]
TOPIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Rules(_Model):
    """What subscribers and topics share: the rule keys of spec section 5."""

    keywords: list[RuleTerm] = []
    exclude: list[RuleTerm] = []
    query: str | None = None

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None:
            from ..rules import RuleError, parse_query

            try:
                parse_query(value)
            except RuleError as exc:
                raise ValueError(exc.describe()) from None
        return value


class TopicConfig(_Rules):
    """One entry of ``topics``."""

    title: str | None = None  # the feed's title; the topic's name when unset
    description: str | None = None

    @model_validator(mode="after")
    def _something(self) -> TopicConfig:
        if not self.keywords and self.query is None:
            raise ValueError("a topic needs keywords or a query")
        return self


# subscribers[].schedule's words, as cron lines (0 7: seven in the morning, in their zone)
CADENCES = {"daily": "0 7 * * *", "weekly": "0 7 * * mon"}


def check_zone(value: str | None) -> str | None:
    if value is not None:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is no IANA time zone such as Europe/Berlin or UTC") from None
    return value


class SubscriberConfig(_Rules):
    """One entry of ``subscribers`` (the store's row for them is :class:`service.store.Subscriber`)."""

    email: str
    name: str | None = None
    topics: list[str] = []
    max_papers: int | None = Field(default=None, ge=1)  # None: email.max_papers
    # when their email goes: daily, weekly or a cron line (None: schedule.deliver), in their zone
    schedule: str | None = None
    timezone: str | None = None  # None: the configuration's
    # papers the reader liked before (titles, any unique part, or keys): seeds of their taste
    like: list[str] = Field(default=[], max_length=200)  # each is looked up in the store
    suggest: int = Field(default=0, ge=0, le=50)  # papers the rules missed that their taste ranks high

    @field_validator("like")
    @classmethod
    def _likes(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            if not text.strip():
                raise ValueError(f"entry {i} is empty: name a paper by its title, or a unique part of it")
        return [text.strip() for text in value]

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        line = CADENCES.get(value.strip().lower(), value)
        try:
            check_cron(line)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not daily, weekly or a cron line (minute hour day month weekday): {exc}"
            ) from None
        return line

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_zone(value)

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)


class Settings(_Model):
    database: str = "sqlite:///var/paperboy.db"
    inbox: Path = Path("inbox")
    inbox_settle: Duration = 5.0
    timezone: str | None = None  # None: the machine's zone
    backfill: int = Field(default=7, ge=0)  # days of papers a new or changed rule set receives
    templates_dir: Path | None = None
    schedule: Schedule = Field(default_factory=dict)  # type: ignore[assignment]
    email: Email = Field(default_factory=dict)  # type: ignore[assignment]
    feeds: Feeds = Field(default_factory=dict)  # type: ignore[assignment]
    http: Http = Field(default_factory=dict)  # type: ignore[assignment]
    topics: dict[str, TopicConfig] = {}
    subscribers: list[SubscriberConfig] = []

    @cached_property
    def by_email(self) -> dict[str, SubscriberConfig]:
        """The subscribers by lower-cased address (made once per configuration)."""
        return {s.email.lower(): s for s in self.subscribers}

    @cached_property
    def rules_digest(self) -> str:
        """One hash of every subscriber's and topic's rules (one serialisation, not one per
        owner; made once per configuration, and kept with it by :mod:`.cache`)."""
        topics = [[name, t.keywords, t.exclude, t.query] for name, t in sorted(self.topics.items())]
        people = [[s.email.lower(), s.keywords, s.exclude, s.query, s.topics] for s in self.subscribers]
        return hashlib.sha256(json.dumps([topics, people]).encode()).hexdigest()[:32]

    @cached_property
    def feed_digests(self) -> tuple[str, str]:
        """Hashes of what the configuration puts into feeds: into every feed (the feeds
        section, the paper link), and into any (that, the topics' texts and rules, the
        subscribers' names and rules). Made once per configuration, kept with it."""

        def rules(r: _Rules) -> list[object]:
            return [r.keywords, r.exclude, r.query, getattr(r, "topics", [])]

        def digest(value: object) -> str:
            return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()

        feeds = self.feeds.model_dump(mode="json", exclude={"mirror"})  # where, not what: not in a feed
        common = {"feeds": feeds, "paper_link": self.email.paper_link}
        shown = {
            **common,
            "public_url": self.http.url,  # the pages, the feeds' alternate links
            "topics": {n: [t.title, t.description, *rules(t)] for n, t in self.topics.items()},
            # the personal feeds' titles and subtitles (their rules in words)
            "names": [[s.email.lower(), s.name, *rules(s)] for s in self.subscribers],
        }
        return digest(common), digest(shown)

    def subscriber(self, email: str) -> SubscriberConfig | None:
        """The subscriber with ``email`` (any case), or None."""
        return self.by_email.get(email.lower())

    @model_validator(mode="after")
    def _served_urls(self) -> Settings:
        """Feed and unsubscribe URLs not set point at the built-in web server."""
        feeds, email = self.feeds, self.email
        if feeds.base_url is None:
            feeds = feeds.model_copy(update={"base_url": self.http.url + "feeds/"})
        if email.unsubscribe_url is None and self.http.enabled:
            email = email.model_copy(update={"unsubscribe_url": self.http.url + "unsubscribe/{token}"})
        if feeds is self.feeds and email is self.email:
            return self
        return self.model_copy(update={"feeds": feeds, "email": email})

    @field_validator("inbox", "templates_dir")
    @classmethod
    def _path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve(value, info)

    @field_validator("database")
    @classmethod
    def _database(cls, value: str, info: ValidationInfo) -> str:
        return database_url(value, info)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_zone(value)

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, topics: dict[str, TopicConfig]) -> dict[str, TopicConfig]:
        for name in topics:
            if not TOPIC_NAME.match(name):
                raise At(
                    ("topics", name),
                    f"{name!r} is not a topic name: lower-case letters, digits, - and _ "
                    "(it names the topic's feed files)",
                )
        return topics

    @field_validator("subscribers")
    @classmethod
    def _subscribers(
        cls, subscribers: list[SubscriberConfig], info: ValidationInfo
    ) -> list[SubscriberConfig]:
        seen: dict[str, int] = {}
        for i, sub in enumerate(subscribers):
            first = seen.setdefault(sub.email.lower(), i)
            if first != i:
                raise At(("subscribers", i), f"repeats subscribers[{first}] ({sub.email})")
        topics = info.data.get("topics")
        if topics is None:  # the topics themselves are invalid; that error is reported
            return subscribers
        for i, sub in enumerate(subscribers):
            for j, name in enumerate(sub.topics):
                if name not in topics:
                    close = difflib.get_close_matches(name, list(topics), n=1)
                    hint = (
                        f"; did you mean {close[0]!r}?"
                        if close
                        else (
                            f"; the topics are {', '.join(topics)}" if topics else "; no topics are defined"
                        )
                    )
                    raise At(("subscribers", i, "topics", j), f"unknown topic {name!r}{hint}")
        return subscribers
