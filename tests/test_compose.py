"""Composing: which of a subscriber's rows an email shows, in what order, and its links
(pure pieces; the whole path is in test_delivery and test_cycle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import store
from service.compose import best_first, paper_limits, unsubscribe_urls
from service.settings import parse_settings


def row(paper_id: int, score: int) -> store.OutboxRow:
    return store.OutboxRow(1, 100 + paper_id, paper_id, 0, score, "[]", "[]")


@pytest.mark.parametrize(
    ("rows", "seen", "limit", "shown"),
    [
        ([(1, 1), (2, 3), (3, 2)], {1: "a", 2: "a", 3: "a"}, 10, [2, 3, 1]),  # best match first
        (
            [(1, 2), (2, 2), (3, 2)],
            {1: "2026-03-01", 2: "2026-03-03", 3: "2026-03-02"},
            10,
            [2, 3, 1],
        ),  # then newest
        ([(3, 1), (1, 1), (2, 1)], {1: "x", 2: "x", 3: "x"}, 10, [1, 2, 3]),  # then page order
        ([(1, 1), (2, 3), (3, 2)], {1: "a", 2: "a", 3: "a"}, 2, [2, 3]),  # at most the limit
    ],
)
def test_an_email_shows_the_best_then_the_newest(
    rows: list[tuple[int, int]], seen: dict[int, str], limit: int, shown: list[int]
) -> None:
    assert [r.paper_id for r in best_first([row(*r) for r in rows], limit, seen)] == shown


def settings_with(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    text = f"""\
email:
  from: "paperboy <papers@example.org>"
  max_papers: 30
{extra}subscribers:
  - email: Ann@Example.org
    max_papers: 5
    suggest: 3
  - email: bob@example.org
"""
    return parse_settings(text, source="test.yaml", base=tmp_path)


def test_each_subscriber_has_their_limit_or_the_default(tmp_path: Path) -> None:
    limits = paper_limits(settings_with(tmp_path))
    assert limits == {"ann@example.org": (5, 3), "bob@example.org": (30, 0)}


def test_unsubscribe_links_the_page_first_then_a_mail_to_the_sender(tmp_path: Path) -> None:
    served = settings_with(tmp_path)  # http enabled: the built-in server's page
    assert unsubscribe_urls(served, "TOK") == [
        "http://localhost:8080/unsubscribe/TOK",
        "mailto:papers@example.org?subject=unsubscribe%20TOK",
    ]
    mail_only = settings_with(tmp_path, "http:\n  enabled: false\n")
    assert unsubscribe_urls(mail_only, "TOK") == ["mailto:papers@example.org?subject=unsubscribe%20TOK"]
