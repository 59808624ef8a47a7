"""DKIM (issue 17): every email signed with the operator's key, verified by dkimpy against
the public key (a DNS stub answers for ``<selector>._domainkey.<domain>``) as a real
aiosmtpd server received it; a key that cannot sign is refused by ``check``.

``fixtures/dkim/test-only.pem`` is a key made for these tests (``openssl genrsa 2048``),
``test-only.txt`` its TXT record; ``short-512.pem`` is too short to count."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from service.cycle import App
from service.settings import parse_settings
from tests.helpers import FIXTURES, Sink, copy_digest, free_port, run_cli, serving, write_config

KEY = FIXTURES / "dkim" / "test-only.pem"
RECORD = (FIXTURES / "dkim" / "test-only.txt").read_bytes().strip()


def dns(name: bytes, timeout: int = 5) -> bytes | None:
    """The TXT record of pb2026._domainkey.example.org, and nothing else (no network)."""
    return RECORD if name == b"pb2026._domainkey.example.org." else None


def config(tmp_path: Path, port: int, *, key: str = str(KEY), smtp: str = "") -> str:
    return f"""\
database: sqlite:///{tmp_path}/paperboy.db
inbox: {tmp_path}/inbox
inbox_settle: 0s
email:
  from: "Pâpers Dïgest <papers@example.org>"
  transport: smtp
  smtp: {{host: 127.0.0.1, port: {port}, starttls: false{smtp}}}
  unsubscribe_url: "https://papers.example.org/unsubscribe/{{token}}"
  dkim:
    domain: example.org
    selector: pb2026
    private_key: {key}
feeds: {{dir: {tmp_path}/feeds}}
http: {{enabled: false}}
subscribers:
  - email: alice@example.org
    name: Alice Ünïcode
    keywords: [model, learning]
"""


class SevenBitSink(Sink):
    """A server that offers neither 8BITMIME nor SMTPUTF8."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        return [line for line in responses if "8BITMIME" not in line]


@pytest.mark.parametrize("sink", [Sink(), SevenBitSink()], ids=["8bitmime", "7bit-only"])
def test_every_email_arrives_signed_and_verifies(tmp_path: Path, sink: Sink) -> None:
    port = free_port()
    settings = parse_settings(config(tmp_path, port), source="t.yaml", base=tmp_path)
    copy_digest("digest-a.txt", tmp_path / "inbox")
    with serving(sink, port=port):
        app = App(settings, progress=False)
        report = app.cycle()
        app.engine.dispose()
    assert report.delivery.emails == 1 and len(sink.raw) == 1
    raw = sink.raw[0]  # as it came over the wire: CRLF
    assert dkim.verify(raw, dnsfunc=dns)
    signature = sink.messages[0]["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in re.sub(r"\s+", "", str(signature)).split(";") if t)
    assert tags["d"] == "example.org" and tags["s"] == "pb2026" and tags["c"] == "relaxed/relaxed"
    signed = set(tags["h"].lower().split(":"))
    assert {"from", "to", "subject", "date", "message-id", "list-id"} <= signed
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed  # RFC 8058 one-click counts
    # what the signature protects: a changed subject, or a changed body, no longer verifies
    head, body = raw.split(b"\r\n\r\n", 1)
    forged = re.sub(rb"\r\nSubject: [^\r]*", b"\r\nSubject: Claim your prize", head)
    assert forged != head and not dkim.verify(forged + b"\r\n\r\n" + body, dnsfunc=dns)
    assert not dkim.verify(head + b"\r\n\r\n" + body.replace(b"model", b"mode1", 1), dnsfunc=dns)


def test_the_key_can_come_from_the_environment_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DKIM_KEY", KEY.read_text())
    settings = parse_settings(config(tmp_path, 2525, key='"${DKIM_KEY}"'), source="t.yaml", base=tmp_path)
    assert settings.email.dkim is not None
    assert settings.email.dkim.private_key.get_secret_value() == KEY.read_text()
    assert "PRIVATE KEY" not in repr(settings) and "PRIVATE KEY" not in str(settings.email)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing.pem", "no such file"),
        (str(FIXTURES / "digest-a.txt"), "not an RSA private key in PEM"),
        (str(FIXTURES / "dkim" / "test-only.txt"), "not an RSA private key in PEM"),  # the public half
        (str(FIXTURES / "dkim" / "short-512.pem"), "an RSA key of 512 bits; receivers need at least 1024"),
    ],
)
def test_check_refuses_a_key_that_cannot_sign(tmp_path: Path, key: str, message: str) -> None:
    path = write_config(tmp_path / "paperboy.yaml", config(tmp_path, 2525, key=key))
    done = run_cli("--config", path, "check")
    assert done.returncode == 2, done.stdout
    assert f"{path}:12: email.dkim.private_key: " in done.stderr and message in done.stderr, done.stderr


def test_check_refuses_a_domain_dmarc_would_not_align(tmp_path: Path) -> None:
    text = config(tmp_path, 2525).replace("domain: example.org", "domain: mailer.example.net")
    done = run_cli("--config", write_config(tmp_path / "paperboy.yaml", text), "check")
    assert done.returncode == 2
    assert ":10: email.dkim.domain: 'mailer.example.net' is not the sender's domain" in done.stderr, (
        done.stderr
    )


def test_the_record_to_publish_is_the_keys_public_half(tmp_path: Path) -> None:
    """``check --connect`` signs a message with the key, verifies it, and gives the TXT
    record to publish: the one openssl derives from the same key."""
    from service.settings.keys import dns_record

    assert dns_record(KEY.read_text()) == RECORD.decode()
    path = write_config(
        tmp_path / "paperboy.yaml", config(tmp_path, 2525).replace("transport: smtp", "transport: maildir")
    )
    done = run_cli("--config", path, "check", "--connect")
    line = next(x for x in done.stdout.splitlines() if x.startswith("email.dkim:"))
    said = "email.dkim: OK: signs as pb2026._domainkey.example.org; publish there the TXT record: "
    assert line == said + RECORD.decode()
