"""The SMTP transport against real aiosmtpd servers: STARTTLS, implicit TLS, AUTH."""

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult

from service.mailer import SendError
from service.message import Mail, list_id
from service.render import Digest, Renderer, templates_path
from service.settings import Smtp
from service.smtp import SmtpConnection, SmtpTransport
from service.views import PaperView
from tests.helpers import FIXED_NOW, Sink, free_port, serving
from tests.oracle import SENDER, rendered


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = auth_data.login == b"papers" and auth_data.password == b"s3cret"
    return AuthResult(success=ok)


def server(certificate: tuple[Path, Path], *, implicit: bool) -> Iterator[tuple[Sink, int]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    sink = Sink()
    # aiosmtpd cannot tell that an implicit-TLS session is encrypted; AUTH is still over TLS here
    kwargs = (
        {"ssl_context": ctx, "auth_require_tls": False}
        if implicit
        else {"tls_context": ctx, "require_starttls": True}
    )
    with serving(sink, authenticator=authenticator, auth_required=True, **kwargs) as port:
        yield sink, port


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Sink, int]]:
    yield from server(certificate, implicit=False)


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Sink, int]]:
    yield from server(certificate, implicit=True)


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "papers@example.org", "alice@example.org", "Grüße"
    msg.set_content("hello")
    return msg


async def send(config: Smtp, count: int = 2) -> None:
    async with SmtpTransport(config, sender="paperboy <papers@example.org>").connect() as conn:
        for _ in range(count):
            await conn.send(Mail.of(message()))


def test_starttls_is_used_when_offered_and_login_works(starttls_server: tuple[Sink, int]) -> None:
    sink, port = starttls_server
    config = Smtp(host="127.0.0.1", port=port, username="papers", password="s3cret", validate_certs=False)
    asyncio.run(send(config))
    assert [m["Subject"] for m in sink.messages] == ["Grüße", "Grüße"]
    assert sink.envelopes[0] == ("papers@example.org", ["alice@example.org"])


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls(tls_server: tuple[Sink, int]) -> None:
    sink, port = tls_server
    config = Smtp(
        host="127.0.0.1", port=port, tls=True, username="papers", password="s3cret", validate_certs=False
    )
    asyncio.run(send(config, count=1))
    assert len(sink.messages) == 1


def handled_authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = auth_data.login == b"papers" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def plain_server() -> Iterator[int]:
    with serving(Sink()) as port:
        yield port


@pytest.fixture
def login_server(certificate: tuple[Path, Path]) -> Iterator[int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    with serving(
        Sink(),
        tls_context=ctx,
        require_starttls=True,
        authenticator=handled_authenticator,
        auth_required=True,
    ) as port:
        yield port


def setup_failure(config: Smtp) -> SendError:
    with pytest.raises(SendError) as err:
        asyncio.run(send(config, count=1))
    assert err.value.config and err.value.temporary and err.value.network
    return err.value


def test_forbidding_starttls_where_the_server_requires_it_names_starttls(
    starttls_server: tuple[Sink, int],
) -> None:
    _, port = starttls_server
    error = setup_failure(Smtp(host="127.0.0.1", port=port, starttls=False, validate_certs=False))
    assert "530" in str(error) and "email.smtp.starttls" in str(error)


def test_an_untrusted_certificate_names_validate_certs(starttls_server: tuple[Sink, int]) -> None:
    _, port = starttls_server
    error = setup_failure(Smtp(host="127.0.0.1", port=port, username="papers", password="s3cret"))
    assert "not trusted" in str(error) and "validate_certs" in str(error)


def test_a_refused_login_names_the_credentials(login_server: int) -> None:
    error = setup_failure(
        Smtp(host="127.0.0.1", port=login_server, username="papers", password="wrong", validate_certs=False)
    )
    assert "535" in str(error) and "email.smtp.password" in str(error)


def test_starttls_demanded_of_a_server_without_it(plain_server: int) -> None:
    error = setup_failure(Smtp(host="127.0.0.1", port=plain_server, starttls=True))
    assert "does not offer STARTTLS" in str(error)


def test_implicit_tls_on_a_plain_port(plain_server: int) -> None:
    error = setup_failure(Smtp(host="127.0.0.1", port=plain_server, tls=True))
    assert "TLS failed" in str(error) and "starttls" in str(error)


def test_a_port_where_nothing_listens() -> None:
    port = free_port()
    error = setup_failure(Smtp(host="127.0.0.1", port=port))
    assert f"cannot connect to 127.0.0.1:{port}" in str(error) and "email.smtp.port" in str(error)


def test_a_busy_server_is_weather_not_setup() -> None:
    """421 at the greeting: try later, as before (counted as an attempt)."""

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def greet() -> None:
            conn, _ = listener.accept()
            conn.sendall(b"421 too busy, try later\r\n")
            conn.close()

        thread = threading.Thread(target=greet)
        thread.start()
        with pytest.raises(SendError) as err:
            asyncio.run(send(Smtp(host="127.0.0.1", port=port), count=1))
        thread.join()
    assert not err.value.config and err.value.temporary


def one_paper(to_email: str, to_name: str, unsubscribe: list[str] | None = None) -> Digest:
    """A digest of one paper, "Grüße", to ``to_email``."""
    return Digest(
        to_email=to_email,
        to_name=to_name,
        papers=[PaperView.build(title="Grüße", abstract="A.", link="https://x.org/p", terms=[], score=1)],
        more=0,
        feed_url="https://x.org/feeds/u/T.atom",
        unsubscribe=unsubscribe or [],
        message_id="<m@example.org>",
        date=FIXED_NOW,
    )


def send_one(port: int, mail: Mail) -> None:
    """``mail`` through one SMTP session with the server on ``port`` (no STARTTLS)."""
    config = Smtp(host="127.0.0.1", port=port, starttls=False)

    async def go() -> None:
        async with SmtpTransport(config, sender="papers@example.org").connect() as conn:
            await conn.send(mail)

    asyncio.run(go())


def test_an_address_outside_ascii_travels_as_smtputf8() -> None:
    """RFC 6531: a digest to jürgen@… goes with SMTPUTF8 and arrives with the address intact."""
    sink = Sink()
    with serving(sink, enable_SMTPUTF8=True) as port:
        digest = one_paper("jürgen@example.org", "Jürgen")
        mail = Renderer(templates_path()).message(digest, sender="papers@example.org", list_id=list_id("x"))
        assert mail.smtputf8
        send_one(port, mail)
    assert sink.envelopes == [("papers@example.org", ["jürgen@example.org"])]
    assert len(sink.messages) == 1
    assert "To: Jürgen <jürgen@example.org>\n" in mail.data.decode()  # UTF-8 as is, not encoded-words


def test_names_outside_ascii_need_no_smtputf8() -> None:
    """A sender's or reader's name outside ASCII goes as RFC 2047 words: a relay without
    SMTPUTF8 (aiosmtpd's default) takes the digest, and the reader sees the names whole."""
    sink = Sink()
    with serving(sink) as port:
        digest = one_paper("juergen@example.org", "Jürgen Größe", unsubscribe=["https://x.org/unsubscribe/T"])
        sender = "Pâpers Dïgest <papers@example.org>"
        mail = Renderer(templates_path()).message(digest, sender=sender, list_id=list_id(sender))
        assert not mail.smtputf8
        send_one(port, mail)
    assert sink.envelopes == [("papers@example.org", ["juergen@example.org"])]
    assert "SMTPUTF8" not in sink.options[0]
    head = sink.raw[0][: sink.raw[0].index(b"\r\n\r\n")]
    assert head.isascii() and b"=?utf-8?" in head
    received = sink.messages[0]
    assert received["From"].addresses[0].display_name == "Pâpers Dïgest"
    assert received["To"].addresses[0].display_name == "Jürgen Größe"
    assert "Grüße" in received["Subject"]


class SevenBitSink(Sink):
    """A server that does not offer 8BITMIME (it takes its EHLO line out)."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        return [line for line in responses if "8BITMIME" not in line]


@pytest.mark.parametrize("offers_8bitmime", [True, False])
def test_8bit_parts_go_as_8bitmime_or_quoted_printable_to_a_server_without_it(offers_8bitmime: bool) -> None:
    """RFC 6152: raw UTF-8 in a body only with BODY=8BITMIME, to a server that offers it;
    otherwise the same message in quoted-printable. Either way the reader gets the same text."""
    mail = rendered()
    assert mail.eight_bit
    sink = Sink() if offers_8bitmime else SevenBitSink()
    with serving(sink) as port:

        async def go() -> None:
            async with SmtpTransport(
                Smtp(host="127.0.0.1", port=port, starttls=False), sender=SENDER
            ).connect() as conn:
                await conn.send(mail)
                await conn.send(mail)  # the second on the same session, after its EHLO

        asyncio.run(go())
    assert len(sink.raw) == 2
    for raw, options in zip(sink.raw, sink.options, strict=True):
        assert ("BODY=8BITMIME" in options) == offers_8bitmime
        assert raw.isascii() != offers_8bitmime
        assert "8bit" in raw.decode().lower() if offers_8bitmime else b"quoted-printable" in raw
    expected = mail.parse()
    for msg in sink.messages:
        assert msg["Message-ID"] == expected["Message-ID"]
        for subtype in ("plain", "html"):
            got, want = msg.get_body((subtype,)), expected.get_body((subtype,))
            assert got is not None and want is not None
            assert got.get_content().replace("\r\n", "\n") == want.get_content()


@contextmanager
def silent_at_close(certificate: tuple[Path, Path]) -> Iterator[int]:
    """An implicit-TLS SMTP server that takes one message, answers QUIT, and then keeps
    the connection open without a word (no TLS close_notify) until the block ends: as a
    busy or sloppy server does."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, certificate))
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        raw, _ = listener.accept()
        with ctx.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 silent\r\n")
            for line in lines:
                verb = line[:4].upper()
                if verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                    conn.sendall(b"250 taken\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    done.wait(timeout=60)  # and say nothing more
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=60)
        listener.close()


def test_a_session_closes_its_socket_before_the_run_ends_whatever_the_server_does(
    certificate: tuple[Path, Path],
) -> None:
    """After QUIT, a TLS close that waits for the server's close_notify would outlive a
    run's event loop and leave the socket to the garbage collector (a ResourceWarning
    in whatever test runs next): the session's socket is closed when ``connect()`` ends."""
    sockets = []
    with silent_at_close(certificate) as port:

        async def go() -> None:
            config = Smtp(host="127.0.0.1", port=port, tls=True, validate_certs=False)
            async with SmtpTransport(config, sender="paperboy <papers@example.org>").connect() as conn:
                await conn.send(Mail.of(message()))
                assert isinstance(conn, SmtpConnection)
                sockets.append(conn.client.transport.get_extra_info("socket"))
            sockets.append(sockets[0].fileno())  # as the block ends, before the loop does

        asyncio.run(go())
    assert sockets[1] == -1
