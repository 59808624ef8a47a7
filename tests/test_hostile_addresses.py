"""Hostile addresses: refused when the configuration loads, with file, line and key, so that
no run can be stopped, no session broken and no mail sent to someone the operator never
configured; and, should a bad address reach a run all the same, only that reader's mail
fails. Before, 12 of 14 such addresses passed `check`, and one with CR/LF stopped every run."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from service import store
from service.cycle import App
from service.delivery import DeliveryRun
from service.mailer import InProcessSender, MaildirTransport
from service.settings import parse_settings
from service.settings.addresses import _address_problem, check_address
from tests.helpers import copy_digest, local_yaml, run_cli, write_config

HOSTILE = [
    "a1@example.org\r\nRCPT TO:<x@evil.example>",  # SMTP command injection
    "a1@example.org\nBcc: victim@evil.example",  # header injection
    "a2@example.org, victim2@evil.example",  # two addresses: envelope and To: disagree
    "a3@example.org;victim3@evil.example",
    "<victim@evil.example> a7@example.org",  # the envelope went to the victim
    "Alice <a4@example.org>",  # a display name: it belongs in name:
    "a5@example.org (comment)",
    '"a b"@example.org',  # a quoted local part
    "a6@[192.0.2.1]",  # a domain literal
    "a7@example.org\x00",  # NUL
    "a8\u2028@example.org",  # a line separator
    "a9\u202e@example.org",  # a bidi override
    "a10\u200b@example.org",  # a zero-width space
    " a11@example.org",
    "a12@@example.org",
    "@example.org",
    "a14@example..org",
    "a15@-example.org",
]


def yaml_string(value: str) -> str:
    """``value`` inside a double-quoted YAML string (escapes for control characters)."""
    return value.encode("unicode_escape").decode().replace('"', '\\"')


def config_for(tmp_path: Path, email: str, *, sender: str = "paperboy <papers@example.org>") -> Path:
    quoted = yaml_string(email)
    sender_quoted = yaml_string(sender)
    return write_config(
        tmp_path / "paperboy.yaml",
        f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
email:
  from: "{sender_quoted}"
  maildir: {tmp_path}/mail
subscribers:
  - email: reader@example.org
  - email: "{quoted}"
    keywords: [model]
""",
    )


@pytest.mark.parametrize("address", HOSTILE, ids=[repr(a)[1:30] for a in HOSTILE])
def test_a_hostile_address_is_a_configuration_error(tmp_path: Path, address: str) -> None:
    config = config_for(tmp_path, address)
    done = run_cli("--config", config, "check")
    assert done.returncode == 2, (address, done.stdout)
    assert f"{config}:8: subscribers[1].email: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "address", ["a+tag@example.org", "first.last@sub.example.co.uk", "jürgen@exämple.org", "ops@localhost"]
)
def test_real_addresses_pass(tmp_path: Path, address: str) -> None:
    done = run_cli("--config", config_for(tmp_path, address), "check")
    assert done.returncode == 0, done.stderr


_PIECES = st.sampled_from(["a", "Z", "0", ".", "..", "-", "+", "_", "'", "~", "@", "ü", "é", "x" * 30])
_DOMAINS = st.sampled_from(
    [
        "example.org",
        "localhost",
        "sub.example.co.uk",
        "exämple.org",
        "-bad.org",
        "a..b",
        "x" * 70 + ".org",
        "org",
        "",
    ]
)


@settings(max_examples=400, deadline=None)
@given(local=st.lists(_PIECES, max_size=8).map("".join), domain=_DOMAINS)
@example(local="a" * 67, domain=("d" * 60 + ".") * 3 + "org")  # 254 octets: the longest
@example(local="a" * 68, domain=("d" * 60 + ".") * 3 + "org")
def test_the_quick_address_check_agrees_with_email_validator(local: str, domain: str) -> None:
    """check_address skips email-validator for plain local parts and checks each domain once;
    it accepts and refuses exactly what email-validator does for the whole address."""
    address = f"{local}@{domain}"
    lan = domain.lower() in ("localhost", "local", "test", "internal", "lan", "home.arpa")
    expected = _address_problem(f"{local}@example.org" if lan else address)
    try:
        check_address(address)
    except ValueError as exc:
        assert expected is not None, (address, str(exc))
        assert expected in str(exc)
    else:
        assert expected is None, (address, expected)


@pytest.mark.parametrize(
    ("sender", "ok"),
    [
        ("paperboy <papers@example.org>", True),
        ("Pâpers Dïgest <papers@example.org>", True),
        ("papers@example.org", True),
        ("paperboy <paperboy@localhost>", True),
        ("victim@evil.example <papers@example.org>", False),  # a name that shows another address
        ("paperboy <papers@example.org>, <x@evil.example>", False),
        ("paperboy\r\nBcc: x@evil.example <papers@example.org>", False),
        ("paperboy <papers@example.org\x00>", False),
    ],
)
def test_the_sender_is_checked_the_same_way(tmp_path: Path, sender: str, ok: bool) -> None:
    done = run_cli("--config", config_for(tmp_path, "reader2@example.org", sender=sender), "check")
    assert done.returncode == (0 if ok else 2), done.stderr
    if not ok:
        assert ": email.from: " in done.stderr


def test_a_bad_address_that_reaches_a_run_fails_only_its_reader(tmp_path: Path) -> None:
    """Put into the store behind the configuration's back: that reader's rows fail with the
    reason, the other reader's email goes out, the run completes."""
    settings = parse_settings(
        local_yaml(
            tmp_path,
            "  - email: good@example.org\n    keywords: [model]\n"
            "  - email: bad@example.org\n    keywords: [model]\n",
        ),
        source="t.yaml",
        base=tmp_path,
    )
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=0)
    app = App(settings, progress=False)
    try:
        app.cycle(send=False)
        with app.engine.begin() as conn:
            conn.execute(
                text("UPDATE subscribers SET email = :bad WHERE email = 'bad@example.org'"),
                {"bad": "bad\r\nBcc: x@evil.example"},
            )
        run = DeliveryRun(
            engine=app.engine,
            sender=InProcessSender(MaildirTransport(tmp_path / "mail")),
            renderer=app.renderer,
            settings=settings,
            clock=app.clock,
        )
        report = run.run()
        assert report.emails == 1 and len(report.failed) == 1
        assert "cannot make the email for" in report.failed[0][1]
        with store.reading(app.engine) as session:
            counts = store.counts(session=session)["deliveries"]
        assert counts["pending"] == counts["sending"] == 0 and counts["failed"] > 0 and counts["sent"] > 0
        [message] = list(mailbox.Maildir(tmp_path / "mail", create=False))
        assert message["To"] == "good@example.org"
    finally:
        app.engine.dispose()
