"""What the tests hold paperboy's output against, written apart from it: the rules as the
spec reads them (one regular expression per keyword), the papers a digest email shows read
back from its HTML, and the digest the golden files and the message tests render."""

from __future__ import annotations

import html
import re
import unicodedata
from email.message import EmailMessage

from service.message import Mail, list_id, message_id
from service.render import Digest, Renderer, templates_path
from service.views import PaperView, paper_link
from tests.helpers import FIXED_NOW

# ---------------------------------------------------------------- matching, written independently


def fold(text: str) -> str:
    text = re.sub(r"\\[\"'`^~=.]\{?([A-Za-z])\}?", r"\1", text)
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(c for c in text if not unicodedata.combining(c))


def naive_match(keyword: str, text: str) -> bool:
    """The spec's semantics, written independently of the index: one regex per keyword."""
    words = re.findall(r"[^\W_]+", fold(keyword))
    stem = words[-1]
    last = re.escape(stem) + r"(?:s|es)?"
    if stem.endswith("y"):
        last = f"(?:{last}|{re.escape(stem[:-1])}ies)"
    pattern = r"(?<![^\W_])" + r"[\W_]+".join([*map(re.escape, words[:-1]), last]) + r"(?![^\W_])"
    return re.search(pattern, fold(text)) is not None


# ---------------------------------------------------------------- a digest email

# A paper in the HTML part: its anchor, its score (a data- attribute, for tests and the curious),
# its title, and the sentence saying why it came.
_EMAIL_PAPER = re.compile(
    r'<div class="paper"[^>]* data-score="(\d+)"[^>]*>\s*<p class="title"[^>]*><a href="[^"]*"[^>]*>'
    r'(.*?)</a></p>\s*<p class="why"[^>]*>(.*?)</p>',
    re.S,
)


def plain(fragment: str) -> str:
    """An HTML fragment as the text a reader sees."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def email_papers(msg: EmailMessage) -> list[tuple[str, int, str]]:
    """(title, score, why it came) of each paper an email shows, in order."""
    body = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return [(plain(title), int(score), plain(why)) for score, title, why in _EMAIL_PAPER.findall(body)]


SENDER = "paperboy <papers@example.org>"


def view(
    title: str, abstract: str, terms: tuple[str, ...], score: int, via: tuple[str, ...] = ("keywords",)
) -> PaperView:
    link = paper_link("https://huggingface.co/papers?q={title}", title=title, key="k")
    return PaperView.build(title=title, abstract=abstract, link=link, terms=terms, score=score, via=via)


DIGEST = Digest(  # what the golden files and the message tests render
    to_email="alice@example.org",
    to_name="Alice Müller",
    papers=[
        view(
            'T\\"ULU 3: Pushing Frontiers',
            "We present TÜLU 3 reward models. Code: https://github.com/allenai/open-instruct.",
            ("tulu", "reward model*", "/open-\\w+/"),
            3,
            ("keywords", "topic:llm-safety"),
        ),
        view(
            "<script>alert(1)</script>\r\nBcc: victim@example.org",
            "Instruction-following & more.",
            ("instruction following",),
            1,
        ),
    ],
    more=2,
    feed_url="https://papers.example.org/feeds/u/TOKEN.atom",
    page_url="https://papers.example.org/u/TOKEN",
    unsubscribe=[
        "https://papers.example.org/unsubscribe/TOKEN",
        "mailto:papers@example.org?subject=unsubscribe%20TOKEN",
    ],
    message_id=message_id(sender=SENDER, token="TOKEN", delivery_ids=[3, 1, 2]),
    date=FIXED_NOW,
)


def rendered(digest: Digest = DIGEST) -> Mail:
    """``digest`` rendered with the shipped templates, as a delivery run would."""
    return Renderer(templates_path()).message(digest, sender=SENDER, list_id=list_id(SENDER))
