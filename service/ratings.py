"""Rating links: "more like this" and "less like this" for a paper, from an email or the page.

A link names the reader (their private token), the paper, the answer, and a signature:
HMAC-SHA256, with a server secret kept in the store, over all three. A link that was
tampered with, or taken from one paper to another, does not verify, and is refused. A GET
only shows the paper and a button (mail scanners open every link in an email); the POST
records the answer, and posting it again changes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from . import store
from .feeds import reader_page
from .latex import tidy
from .settings import Settings

ANSWERS = {"more": 1, "less": -1}  # the word in the link, and the value stored


def answer_of(value: int | None) -> str:
    """The word for a stored value ("" for none)."""
    return next((word for word, v in ANSWERS.items() if v == value), "")


SECRET = "ratings"  # the store's secret that signs the links


def signature(key: bytes, token: str, paper_id: int, answer: str) -> str:
    mac = _keyed(key).copy()  # two links per paper per email: the key is set up once
    mac.update(f"{token}\n{paper_id}\n{answer}".encode())
    return mac.hexdigest()[:32]


@functools.lru_cache(maxsize=4)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def rating_url(public_url: str, key: bytes, token: str, paper_id: int, answer: str) -> str:
    """``<public_url>rate/<token>/<paper>/<more|less>/<signature>``."""
    return f"{public_url}rate/{token}/{paper_id}/{answer}/{signature(key, token, paper_id, answer)}"


def verified(key: bytes, token: str, paper_id: int, answer: str, given: str) -> bool:
    """Whether ``given`` is the signature of this reader, paper and answer."""
    return answer in ANSWERS and hmac.compare_digest(signature(key, token, paper_id, answer), given)


def answer_page(
    engine: Engine, settings: Settings, link: tuple[str, int, str, str], *, record: bool, at: datetime
) -> dict[str, Any] | None:
    """What the rating page shows for ``link`` (token, paper id, answer, signature), after
    recording the answer when ``record`` (a POST; a GET changes nothing). None: the link is
    refused (no such reader or paper, or a signature that does not match)."""
    token, paper_id, answer, given = link
    with store.transaction(engine) if record else store.reading(engine) as session:
        sub = store.subscriber_by_token(session=session, token=token)
        key = store.secret(session=session, name=SECRET, make=False)
        if sub is None or sub.id is None or key is None or not verified(key, token, paper_id, answer, given):
            return None
        paper = session.get(store.Paper, paper_id)
        if paper is None:
            return None
        if record:
            store.rate(session=session, subscriber_id=sub.id, paper_id=paper_id, value=ANSWERS[answer], at=at)
        current = store.ratings_of(session=session, subscriber_id=sub.id, paper_ids=[paper_id]).get(paper_id)
    other = "less" if answer == "more" else "more"
    return {
        "title": tidy(paper.title),
        "answer": answer,
        "recorded": record,
        "current": answer_of(current),
        "other": other,
        "other_url": rating_url(settings.http.url, key, token, paper_id, other),
        "page": reader_page(settings.http.url, token),
    }
