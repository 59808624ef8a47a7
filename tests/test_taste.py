"""Learned tastes (issue 18, points 3 and 7): a rating posted through the real server changes
the next email's order; a GET, a forged link or one replayed for another paper change
nothing; a reader without ratings keeps the rules' order exactly; the models live in the
store, survive a restart, and are refitted only when ratings or likes change. SQLite and
PostgreSQL."""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlmodel import select

from service import store
from service.compose import PaperCache, best_first, next_digest
from service.cycle import App
from service.ratings import rating_url
from service.settings import load_settings
from service.store.migrate import _alembic
from tests.helpers import copy_digest, free_port, local_config, run_cli, serving_app, settings_for
from tests.oracle import email_papers
from tests.test_ratings import key_of
from tests.test_web import token_of

BOB = "bob@example.org"


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[App, str]]:
    """The web tests' server and store (digest-a ingested, no email yet), with Bob asking for
    every paper about models: enough of them for an order to change."""
    port = free_port()
    text = settings_for(tmp_path, database_url, port).replace("[diffusion]", "[model, learning]")
    with serving_app(tmp_path, text, port) as served:
        yield served


def pending_order(app: App, email: str, *, learned: bool = True) -> list[str]:
    """The titles of ``email``'s next email, in order (``learned`` off: the rules' order)."""
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=email)
        assert sub is not None and sub.id is not None
        if learned:
            digest = next_digest(session, sub, settings=app.settings, limits=(100, 0), at=app.clock())
            assert digest is not None
            return [p.title for p in digest.papers]
        rows = store.outbox_rows(session=session, subscriber_ids=[sub.id])[sub.id]
        cache = PaperCache()
        shown = best_first(rows, 100, cache.seen(session, {r.paper_id for r in rows}))
        texts = cache.texts(session, {r.paper_id for r in shown})
        return [texts[r.paper_id][0] for r in shown]


def paper_ids(app: App, titles: list[str]) -> list[int]:
    with store.reading(app.engine) as session:
        found = {p.title: p.id for p in session.exec(select(store.Paper))}
    return [found[t] or 0 for t in titles]


def bob_rates_last_up_first_down(app: App, base: str) -> list[str]:
    """Bob answers through the server: "more" for the last paper of his next email, "less"
    for the first; the email's titles before."""
    before = pending_order(app, BOB)
    liked, disliked = paper_ids(app, [before[-1], before[0]])
    token = token_of(app, BOB)
    with httpx.Client(timeout=10) as http:
        for paper, answer in ((liked, "more"), (disliked, "less")):
            assert http.post(rating_url(f"{base}/", key_of(app), token, paper, answer)).status_code == 200
    return before


def tastes(app: App) -> dict[int, bool]:
    with store.reading(app.engine) as session:
        return {t.subscriber_id: t.model is not None for t in session.exec(select(store.Taste))}


def sent_order(maildir: Path) -> list[str]:
    [message] = [m for m in mailbox.Maildir(maildir, create=False) if BOB in m["To"]]
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    return [title for title, _, _ in email_papers(parsed)]  # type: ignore[arg-type]


def test_a_rating_posted_through_the_server_changes_the_next_email(served: tuple[App, str]) -> None:
    app, base = served
    before = pending_order(app, BOB)
    assert before == pending_order(app, BOB, learned=False) and len(before) >= 6
    last, first = paper_ids(app, [before[-1], before[0]])
    token = token_of(app, BOB)
    with httpx.Client(timeout=10) as http:
        assert http.post(rating_url(f"{base}/", key_of(app), token, last, "more")).status_code == 200
        assert http.post(rating_url(f"{base}/", key_of(app), token, first, "less")).status_code == 200
    assert app.learn() == 1
    after = pending_order(app, BOB)
    assert sorted(after) == sorted(before) and after != before
    assert after.index(before[-1]) < len(before) - 1  # the liked paper moved up
    assert after.index(before[0]) > 0  # and the one they want less of, down

    app.run_job("deliver", send=True)  # the email itself, through the cycle and the maildir
    assert sent_order(app.settings.email.maildir) == after[: app.settings.email.max_papers]


def test_gets_forged_and_replayed_links_teach_nothing(served: tuple[App, str]) -> None:
    app, base = served
    before = pending_order(app, BOB)
    first, second = paper_ids(app, before[:2])
    token = token_of(app, BOB)
    good = rating_url(f"{base}/", key_of(app), token, first, "less")
    signature = good.rsplit("/", 1)[1]
    with httpx.Client(timeout=10) as http:
        assert http.get(good).status_code == 200  # a mail scanner opening the link
        for url in (
            good[:-1] + ("0" if good[-1] != "0" else "1"),
            f"{base}/rate/{token}/{second}/less/{signature}",
        ):
            assert http.post(url).status_code == 404
    assert app.learn() == 0 and tastes(app) == {}
    assert pending_order(app, BOB) == before


def test_a_reader_without_ratings_keeps_the_rules_order(served: tuple[App, str]) -> None:
    app, base = served
    alice = pending_order(app, "alice@example.org")
    [paper] = paper_ids(app, pending_order(app, BOB)[-1:])
    with httpx.Client(timeout=10) as http:
        url = rating_url(f"{base}/", key_of(app), token_of(app, BOB), paper, "more")
        assert http.post(url).status_code == 200
    assert app.learn() == 1
    assert (
        pending_order(app, "alice@example.org")
        == alice
        == pending_order(app, "alice@example.org", learned=False)
    )


def test_models_are_kept_in_the_store_and_refitted_only_on_change(served: tuple[App, str]) -> None:
    app, base = served
    before = bob_rates_last_up_first_down(app, base)
    [disliked] = paper_ids(app, before[:1])
    assert app.learn() == 1 and app.learn() == 0  # nothing changed since
    learned = pending_order(app, BOB)

    restarted = App(app.settings, progress=False)  # a new process over the same store
    try:
        restarted.prepare_store()
        assert restarted.learn() == 0
        assert pending_order(restarted, BOB) == learned
    finally:
        restarted.engine.dispose()

    with httpx.Client(timeout=10) as http:  # changing an answer refits
        http.post(rating_url(f"{base}/", key_of(app), token_of(app, BOB), disliked, "more"))
    assert app.learn() == 1
    assert pending_order(app, BOB) != learned


def test_likes_seed_a_taste_and_an_unknown_one_is_a_warning_with_its_line(tmp_path: Path) -> None:
    subscribers = (
        "  - email: carol@example.org\n"
        "    keywords: [model, learning]\n"
        "    like:\n"
        "      - Novel Self-Training Framework for Semantic\n"  # a unique part of a title
        "      - a paper nobody wrote\n"
    )
    config = local_config(tmp_path, subscribers)
    digest = copy_digest("digest-a.txt", tmp_path / "inbox")
    assert run_cli("--config", config, "ingest", digest).returncode == 0

    checked = run_cli("--config", config, "check")
    assert checked.returncode == 0, checked.stderr  # a warning, not an error
    [warning] = [line for line in checked.stdout.splitlines() if line.startswith("warning:")]
    line = config.read_text().splitlines().index("      - a paper nobody wrote") + 1
    assert f"{config}:{line}: subscribers[0].like[1]:" in warning and "a paper nobody wrote" in warning

    settings = load_settings(config)
    app = App(settings, progress=False)
    try:
        app.prepare_store()
        rules = pending_order(app, "carol@example.org", learned=False)
        assert app.learn() == 1 and app.learn() == 0
        [liked] = paper_ids(app, [t for t in rules if t.startswith("Learning from Future")])
        with store.reading(app.engine) as session:
            state = store.taste_states(session=session)
        [(_, taste)] = state.items()
        assert taste.liked == [liked] and taste.fitted
        learned = pending_order(app, "carol@example.org")
        assert learned != rules and learned[0].startswith("Learning from Future")
    finally:
        app.engine.dispose()


def suggested_papers(app: App, email: str) -> list[tuple[str, str, str]]:
    """(title, abstract, state) of the suggestions queued for ``email``."""
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=email)
        assert sub is not None
        rows = session.exec(
            select(store.Delivery, store.Paper)
            .join(store.Paper)
            .where(store.Delivery.subscriber_id == sub.id)
        ).all()
    return [(p.title, p.abstract, d.state) for d, p in rows if d.via == ["suggested"]]


def test_suggestions_come_in_their_own_section_never_excluded_never_twice(tmp_path: Path) -> None:
    likes = '    suggest: 3\n    like: [GS-DiT]\n    keywords: ["language model", LLM]\n'
    subscribers = (
        f"  - email: dana@example.org\n{likes}    exclude: [video]\n  - email: erin@example.org\n{likes}"
    )
    settings = load_settings(local_config(tmp_path, subscribers))
    copy_digest("digest-a.txt", tmp_path / "inbox")
    app = App(settings, progress=False)
    try:
        app.run_job("cycle", send=True)
        dana, erin = suggested_papers(app, "dana@example.org"), suggested_papers(app, "erin@example.org")
        assert 1 <= len(dana) <= 3 and 1 <= len(erin) <= 3
        assert any("video" in (t + a).lower() for t, a, _ in erin)  # what the exclude keeps from Dana
        for title, abstract, state in dana:
            assert "video" not in (title + abstract).lower() and state == "sent"
            assert not re.search(r"\bLLMs?\b|language models?\b", title + abstract, re.I)  # her rules' papers
        for title, _, _ in dana + erin:
            assert not title.startswith("GS-DiT")  # the paper they named is no suggestion

        [mail] = [m for m in mailbox.Maildir(settings.email.maildir, create=False) if "dana" in m["To"]]
        body = message_from_bytes(mail.as_bytes(), policy=policy.default).get_body(("plain",))
        text = body.get_content()  # type: ignore[union-attr]
        section = text.split("You might also like", 1)[1]
        assert all(f"* {title}" in section for title, _, _ in dana)

        app.run_job("cycle", send=True)  # nothing new: nothing suggested again
        assert suggested_papers(app, "dana@example.org") == dana
        copy_digest("digest-b.txt", settings.inbox)
        app.run_job("cycle", send=True)
        again = suggested_papers(app, "dana@example.org")
        assert len(again) > len(dana) and len({t for t, _, _ in again}) == len(again)  # never twice
    finally:
        app.engine.dispose()


def test_explain_and_the_page_say_why_for_the_learned_part(served: tuple[App, str], tmp_path: Path) -> None:
    app, base = served
    before = pending_order(app, BOB)
    liked, disliked = paper_ids(app, [before[-1], before[0]])
    token = token_of(app, BOB)
    with httpx.Client(timeout=10) as http:
        assert "why taste" not in http.get(f"{base}/u/{token}").text  # nothing learned yet
        http.post(rating_url(f"{base}/", key_of(app), token, liked, "more"))
        http.post(rating_url(f"{base}/", key_of(app), token, disliked, "less"))
        assert app.learn() == 1
        page = http.get(f"{base}/u/{token}").text
    other = before[1]
    [line] = [p for p in page.split("<article")[1:] if f'id="p{paper_ids(app, [other])[0]}"' in p]
    assert 'class="why taste"' in line and f"most like “{before[-1]}”" in line.replace("&#34;", '"')

    told = run_cli("--config", tmp_path / "paperboy.yaml", "explain", BOB, other)
    assert told.returncode == 0, told.stderr
    assert "taste: learned from 1 liked and 1 disliked papers; score " in told.stdout
    assert "words that weighed most: " in told.stdout
    assert f"most like a paper they liked: {before[-1]} (similarity " in told.stdout


def test_the_answers_outlive_a_migration_and_the_taste_is_fitted_again(served: tuple[App, str]) -> None:
    app, base = served
    before = bob_rates_last_up_first_down(app, base)
    assert app.learn() == 1
    learned = pending_order(app, BOB)

    with app.engine.begin() as conn:  # back to before tastes: their tables go, the answers stay
        command.downgrade(_alembic(conn), "0010")
    assert store.upgrade(app.engine) == ("0010", store.head_revision())
    assert tastes(app) == {} and pending_order(app, BOB) == before
    assert app.learn() == 1  # fitted again from the same answers: the same order
    assert pending_order(app, BOB) == learned
