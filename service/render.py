"""What people read: each paper and each digest as the templates see them.

A :class:`Digest` is one subscriber's next email before it is a message:
its papers (:class:`PaperView`, terms marked up, links made), what was left
out, its links. :class:`Renderer` runs the templates over it; the message
itself (MIME, headers) is :mod:`service.message`'s.

Templates live in ``templates/`` (``subject.txt.j2``, ``email.txt.j2``,
``email.html.j2``); ``templates_dir`` in the configuration points at an
operator's own copies. HTML is autoescaped and every template runs with
``StrictUndefined``, so a missing variable fails loudly instead of sending a
blank. The clock and the identity of each message come from the caller, so
the same inputs always render the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from jinja2.filters import do_wordwrap

from .message import Mail, build
from .settings import Settings
from .signing import Signer
from .views import PaperView

TEMPLATE_RECHECK = 1.0  # seconds between looks at a template file for changes
FULL = 3  # papers whose whole abstract the email shows; the others' are shortened
TOC = 10  # titles in the list at the top of the email
HTML_BUDGET = 100_000  # bytes of the HTML part, at most: Gmail clips a message past 102 KB
# Inline every rule into the elements' style attributes, keep @media (dark mode) in <style>,
# and never fetch a stylesheet from anywhere.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def templates_path(override: Path | None = None) -> Path:
    """The templates folder: the override, the checkout's, or the installed copy."""
    if override is not None:
        return override
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if (candidate / "email.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"no templates found beside {here}; reinstall paperboy")


def compiled(kind: str) -> jinja2.BytecodeCache | None:
    """Where the templates compiled by one kind of environment are kept between processes:
    ``templates-<kind>`` in the private cache folder (:func:`service.settings.cache.folder`),
    None when there is none to trust. Compiling the three email templates costs every
    command that loads them (``check``, ``preview``, a delivery run) 60 ms of CPU; Jinja2
    keys each entry by the template's name and path and checks it against the source's
    checksum, so an edited template is compiled again. One folder per kind: the same file
    compiles differently with and without autoescape."""
    from .settings.cache import folder

    where = folder()
    if where is None:
        return None
    try:
        (where / f"templates-{kind}").mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(where / f"templates-{kind}"))


@dataclass(frozen=True, slots=True)
class Digest:
    """One subscriber's next email, before it becomes a message."""

    to_email: str
    to_name: str | None
    papers: list[PaperView]  # best first, at most max_papers
    more: int  # matched papers left out of the email (they are on the reader's page and feed)
    feed_url: str
    unsubscribe: list[str]  # List-Unsubscribe URLs, the one to show people first
    message_id: str
    date: datetime
    page_url: str = ""  # the reader's page (every paper, their feeds and rules); "" : the feed
    suggested: list[PaperView] = dataclasses.field(default_factory=list)  # "You might also like"


class Renderer:
    def __init__(self, templates: Path, *, sign: Callable[[bytes], bytes] | None = None) -> None:
        """``sign``: a DKIM signer (:class:`service.signing.Signer`) for every message."""
        loader = jinja2.FileSystemLoader(str(templates))
        self.templates = templates
        self.sign = sign
        self.html = jinja2.Environment(
            loader=loader,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            bytecode_cache=compiled("email-html"),
        )
        self.text = jinja2.Environment(
            loader=loader,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            bytecode_cache=compiled("email-text"),
        )
        # A paper's abstract goes to many readers: wrap it once (the same filter, remembered).
        wordwrap = functools.partial(do_wordwrap, self.text)
        self.text.filters["wordwrap"] = functools.lru_cache(maxsize=4096)(wordwrap)
        self._loaded: dict[str, tuple[jinja2.Template, float]] = {}

    @classmethod
    def configured(cls, settings: Settings) -> Renderer:
        """The configuration's templates (``templates_dir``, else the shipped ones), signing
        with its DKIM key when it has one."""
        return cls(templates_path(settings.templates_dir), sign=Signer.of(settings.email.dkim))

    def _template(self, env: jinja2.Environment, name: str) -> jinja2.Template:
        """``env.get_template(name)``, asked at most once a second: Jinja2 looks at the file's
        modification time on every call, so an edited template is still picked up
        while a delivery run renders thousands of emails."""
        now = time.monotonic()
        hit = self._loaded.get(name)
        if hit is not None and now - hit[1] < TEMPLATE_RECHECK:
            return hit[0]
        template = env.get_template(name)
        self._loaded[name] = (template, now)
        return template

    def check(self) -> None:
        """Load every template, so a broken one stops start-up, not a delivery."""
        for name in ("subject.txt.j2", "email.txt.j2"):
            self.text.get_template(name)
        self.html.get_template("email.html.j2")

    def parts(self, digest: Digest) -> tuple[str, str, str]:
        """The subject, the text part and the HTML part of ``digest``'s email.

        The HTML part stays under :data:`HTML_BUDGET` bytes whatever ``max_papers`` is:
        when the papers do not fit, the email shows the best that do, and the rest join
        "N more on your page" (the text part says the same)."""
        html = self._html(digest)
        while (size := len(html.encode())) > HTML_BUDGET and len(digest.papers) > 1:
            shown = len(digest.papers)
            keep = max(1, min(shown - 1, shown * HTML_BUDGET * 9 // 10 // size))  # 10% to spare
            digest = dataclasses.replace(
                digest, papers=digest.papers[:keep], more=digest.more + len(digest.papers) - keep
            )
            html = self._html(digest)
        context = self._context(digest)
        subject = self._template(self.text, "subject.txt.j2").render(context)
        text = self._template(self.text, "email.txt.j2").render(context)
        return subject, text, html

    @staticmethod
    def _context(digest: Digest) -> dict[str, Any]:
        return {
            "digest": digest,
            "papers": digest.papers,
            "suggested": digest.suggested,
            "more": digest.more,
            "full": FULL,
            "toc": TOC,
        }

    def _html(self, digest: Digest) -> str:
        """The HTML part, its CSS inlined into each element (the @media rules stay in <style>)."""
        html = self._template(self.html, "email.html.j2").render(self._context(digest))
        return _INLINER.inline(html)

    def message(self, digest: Digest, *, sender: str, list_id: str) -> Mail:
        """``digest`` as a finished message (:func:`service.message.build`)."""
        subject, text, html = self.parts(digest)
        return build(
            sender=sender,
            list_id=list_id,
            to_email=digest.to_email,
            to_name=digest.to_name,
            subject=subject,
            date=digest.date,
            message_id=digest.message_id,
            unsubscribe=digest.unsubscribe,
            text=text,
            html=html,
            sign=self.sign,
        )
