"""Feeds: what goes into them, compared with a golden file and read back by feedparser.

Regenerate after an intended change: PAPERBOY_REGEN_GOLDEN=1 pytest tests/test_feeds.py
"""

import html

import feedparser

from service import feeds, publish
from tests.helpers import FIXED_NOW, golden


def test_feed_is_golden_and_parses_cleanly() -> None:
    items = [
        feeds.FeedItem(
            "tulu 3", "TÜLU 3 <b>bold</b>", "Abstract & more", FIXED_NOW, ("tulu", '"tulu 3"', "tül*")
        ),
        feeds.FeedItem("older paper", "Older Paper", "Old abstract", FIXED_NOW.replace(day=1)),
    ]
    spec = feeds.FeedSpec(
        feeds.subscriber_feed("TOKEN"),
        "paperboy: papers for Alice",
        "Papers that mention tulu, tulu 3 or tül….",
        page="https://papers.example.org/u/TOKEN",
    )
    files = feeds.render(
        spec,
        items,
        base_url="https://papers.example.org/feeds/",
        link_template="https://huggingface.co/papers?q={title}",
    )
    golden("feed.atom", files[".atom"].decode())
    for suffix, version in ((".atom", "atom10"), (".rss", "rss20")):
        parsed = feedparser.parse(files[suffix])
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.version == version
        # Atom titles are text; RSS ones are HTML for readers, so the markup arrives escaped
        as_text = (lambda t: t) if suffix == ".atom" else html.unescape
        assert [as_text(e.title) for e in parsed.entries] == ["TÜLU 3 <b>bold</b>", "Older Paper"]
        assert parsed.entries[0].id == feeds.entry_id("tulu 3")
        assert parsed.entries[0].link == "https://huggingface.co/papers?q=T%C3%9CLU+3+%3Cb%3Ebold%3C%2Fb%3E"


def test_feed_names_are_the_ones_the_server_serves() -> None:
    for name in (feeds.ALL, feeds.topic_feed("llm-safety"), feeds.subscriber_feed("A" * 24)):
        for kind in feeds.SUFFIXES:
            assert feeds.FEED_FILE.fullmatch(f"{name}.{kind}")
    for path in ("all.xml", "topics/../all.atom", "u/short.atom", "u/" + "A" * 24 + ".atom.bak", "x.atom"):
        assert not feeds.FEED_FILE.fullmatch(path)


def test_a_quiet_poll_renders_no_feed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Nothing a feed shows changed: no feed is rendered (the stamp beside the feeds says so);
    a new paper, a forgotten one, or a new feed title renders them again."""
    import shutil
    from datetime import UTC, datetime

    from service import store
    from service.cycle import App
    from service.settings import parse_settings
    from tests.helpers import FIXTURES

    def settings_with(title: str):  # type: ignore[no-untyped-def]
        return parse_settings(
            f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
email: {{maildir: {tmp_path}/mail}}
feeds: {{dir: {tmp_path}/feeds, title: {title}}}
subscribers:
  - email: alice@example.org
    keywords: [model]
""",
            source="t.yaml",
            base=tmp_path,
        )

    (tmp_path / "inbox").mkdir()
    shutil.copy(FIXTURES / "digest-a.txt", tmp_path / "inbox")
    app = App(settings_with("Desk"), progress=False)
    try:
        app.cycle(send=False)
        assert (tmp_path / "feeds" / publish.STAMP).is_file()
        rendered: list[str] = []
        real = feeds.render
        monkeypatch.setattr(
            feeds, "render", lambda spec, *a, **k: rendered.append(spec.name) or real(spec, *a, **k)
        )
        assert app.cycle(send=False).feeds_changed == 0 and rendered == []  # quiet: nothing rendered

        with store.transaction(app.engine) as session:
            store.forget_papers(session=session, paper_ids=[1], at=datetime.now(UTC))
        assert app.write_feeds() > 0 and feeds.ALL in rendered
        rendered.clear()
        assert app.write_feeds() == 0 and rendered == []

        shutil.copy(FIXTURES / "digest-c.txt", tmp_path / "inbox")  # new papers
        assert app.cycle(send=False).feeds_changed > 0
        rendered.clear()
        renamed = App(settings_with("Paper Desk"), engine=app.engine, progress=False)
        assert renamed.write_feeds() > 0 and rendered  # the title is in every feed
    finally:
        app.engine.dispose()
