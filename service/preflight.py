"""Before trusting a setup: ``check --connect`` and ``send-test``.

``paperboy check`` validates the configuration alone. ``check --connect``
also tries what a run will need, without sending anything: the store opens,
the inbox is readable, the folders paperboy writes (maildir, feeds, the
SQLite database's folder) are writable (a missing one is created, as a run
would), and the SMTP server accepts a connection, TLS and the login. Each
check is a line ``name: OK ...`` or ``name: FAILED ...`` that names the key
to fix. ``send-test EMAIL`` then sends a real digest of the latest papers to
one address through the configured transport (no outbox row is written).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, text

from . import feeds, store
from .compose import unsubscribe_urls
from .mailer import MaildirTransport, SendError, Transport, make_maildir
from .message import Mail, list_id, message_id
from .render import Digest, Renderer
from .settings import Settings
from .views import PaperView, paper_link


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {'OK' if self.ok else 'FAILED'}: {self.detail}"


def folders(settings: Settings) -> list[tuple[str, Path]]:
    """The folders paperboy writes to, by the key that names them."""
    out = [("feeds.dir", settings.feeds.dir)]
    if settings.email.transport == "maildir":
        out.append(("email.maildir", settings.email.maildir))
    database = sqlite_file(settings.database)
    if database is not None:
        out.append(("database", database.parent))
    return out


def sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_folders(settings: Settings) -> None:
    """Create the folders the configuration names (the inbox too), as every run does; a
    PermissionError that says what to do when one is not writable (the usual cause: a
    bind mount owned by another user than the one paperboy runs as, in Docker uid 10001)."""
    for key, folder in [("inbox", settings.inbox), *folders(settings)]:
        try:
            if key == "email.maildir":
                make_maildir(folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
            writable = os.access(folder, os.W_OK | os.X_OK)
        except PermissionError:
            writable = False
        except OSError as exc:  # a file in the way, a read-only file system
            raise OSError(f"cannot make {folder} ({key}): {exc.strerror or exc}; fix {key}") from exc
        if not writable:
            uid = os.getuid()
            raise PermissionError(
                f"{folder} ({key}) is not writable by uid {uid}; fix {key}, or give the folder to "
                f"that user (on a Docker bind mount: chown -R {uid} on the host folder, or run the "
                "container with --user)"
            )


def writable(key: str, folder: Path) -> Check:
    """Create ``folder`` if missing, then write and remove a file in it (the check is named
    by the key; the SQLite database's folder as "database folder")."""
    name = "database folder" if key == "database" else key
    try:
        created = not folder.exists()
        if key == "email.maildir":
            make_maildir(folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".paperboy-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return Check(
            name, False, f"{folder} is not writable ({exc.strerror or exc}); fix {key} or the permissions"
        )
    return Check(name, True, f"{folder} is writable" + (" (created)" if created else ""))


def readable_inbox(settings: Settings) -> Check:
    inbox = settings.inbox
    try:
        inbox.mkdir(parents=True, exist_ok=True)
        files = sum(1 for p in inbox.iterdir() if p.is_file())
    except OSError as exc:
        return Check("inbox", False, f"{inbox} cannot be read ({exc.strerror or exc}); fix inbox")
    if not os.access(inbox, os.W_OK):
        return Check("inbox", False, f"{inbox} is read-only: rejected files cannot be moved aside")
    return Check("inbox", True, f"{inbox} is readable ({files} files waiting)")


def store_answers(engine: Engine) -> Check:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = store.schema_revision(engine)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        return Check(
            "database", False, f"cannot open the store ({type(exc).__name__}: {first}); fix database"
        )
    head = store.head_revision()
    if revision is None:
        where = "empty: the first run creates the tables"
    elif revision == head:
        where = f"at revision {revision}"
    else:
        where = f"at revision {revision}; the next run upgrades it to {head}"
    return Check("database", True, f"{engine.url.render_as_string(hide_password=True)} answers, {where}")


def smtp_answers(settings: Settings) -> Check:
    from .smtp import SmtpConnection, SmtpTransport

    smtp = settings.email.smtp

    async def probe() -> str:
        async with SmtpTransport(smtp, sender=settings.email.from_).connect() as connection:
            assert isinstance(connection, SmtpConnection)
            await connection.open()
            client = connection.client
            tls = "TLS" if smtp.tls else "STARTTLS" if client.get_transport_info("sslcontext") else "no TLS"
            login = f"logged in as {smtp.username}" if smtp.username else "no login"
            return f"{smtp.host}:{smtp.port or 'the default port'} answers ({tls}, {login}); nothing was sent"

    try:
        return Check("email.smtp", True, asyncio.run(probe()))
    except SendError as exc:
        return Check("email.smtp", False, str(exc))


def connect(settings: Settings, engine: Engine) -> list[Check]:
    """Everything ``check --connect`` tries."""
    checks = [store_answers(engine), readable_inbox(settings)]
    checks += [writable(key, folder) for key, folder in folders(settings)]
    if settings.email.transport == "smtp":
        checks.append(smtp_answers(settings))
    if settings.email.dkim is not None:
        checks.append(dkim_signs(settings))
    return checks


def dkim_signs(settings: Settings) -> Check:
    """Sign a message with the key and verify it against the key's own public half (no DNS):
    the record named in the detail is what to publish."""
    import dkim

    from .settings.keys import dns_record
    from .signing import Signer

    config = settings.email.dkim
    assert config is not None
    name = f"{config.selector}._domainkey.{config.domain}"
    record = dns_record(config.private_key.get_secret_value())
    message = f"From: {settings.email.from_}\nSubject: paperboy check\n\nA test.\n".encode()
    signed = Signer(config)(message).replace(b"\n", b"\r\n")
    if not dkim.verify(
        signed, dnsfunc=lambda asked, timeout=5: record.encode() if asked == f"{name}.".encode() else None
    ):
        return Check("email.dkim", False, f"a message signed with the key does not verify; check {name}")
    return Check("email.dkim", True, f"signs as {name}; publish there the TXT record: {record}")


# ---------------------------------------------------------------- send-test


def sample_digest(engine: Engine, settings: Settings, *, to: str, at: datetime) -> Digest:
    """A digest of the latest papers for ``to`` (a subscriber or anyone), as they look in an
    email; the subscriber's own feed and unsubscribe links when ``to`` is one."""
    limit = next(
        (s.max_papers for s in settings.subscribers if s.email.lower() == to.lower() and s.max_papers),
        settings.email.max_papers,
    )
    with store.reading(engine) as session:
        latest = store.latest_papers(session=session, limit=limit)
        sub = store.subscriber_by_email(session=session, email=to)
    token = sub.token if sub is not None else "send-test-" + secrets.token_hex(6)
    papers = [
        PaperView.build(
            title=p.title,
            abstract=p.abstract,
            link=paper_link(settings.email.paper_link, title=p.title, key=p.key),
            terms=[],
            score=0,
        )
        for p in latest
    ]
    assert settings.feeds.base_url is not None
    return Digest(
        to_email=to,
        to_name=sub.name if sub is not None else None,
        papers=papers,
        more=0,
        feed_url=feeds.feed_url(settings.feeds.base_url, feeds.subscriber_feed(token)),
        page_url=feeds.reader_page(settings.http.url, token),
        unsubscribe=unsubscribe_urls(settings, token),
        message_id=message_id(
            sender=settings.email.from_, token=token + secrets.token_hex(8), delivery_ids=[]
        ),
        date=at,
    )


def transport_of(settings: Settings) -> Transport:
    if settings.email.transport == "smtp":
        from .smtp import SmtpTransport

        return SmtpTransport(settings.email.smtp, sender=settings.email.from_)
    return MaildirTransport(settings.email.maildir)


def send_test(
    engine: Engine, settings: Settings, renderer: Renderer, *, to: str, at: datetime
) -> tuple[Mail, int]:
    """Render a digest of the latest papers for ``to`` and send it now (SendError when it
    fails, LookupError when there is no paper to show); the message and how many papers
    it shows."""
    view = sample_digest(engine, settings, to=to, at=at)
    if not view.papers:
        raise LookupError("the store holds no papers yet: ingest a digest first")
    mail = renderer.message(view, sender=settings.email.from_, list_id=list_id(settings.email.from_))

    async def send() -> None:
        async with transport_of(settings).connect() as connection:
            await connection.send(mail)

    asyncio.run(send())
    return mail, len(view.papers)
