"""The digest email as a message: headers, List-Unsubscribe, the parts' encodings,
SMTPUTF8 and 7-bit servers, read back by Python's email parser."""

import dataclasses
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.message import MAX_8BIT_LINE, MAX_LINE, Mail, alternative_body, message_id, one_line
from tests.helpers import FIXED_NOW
from tests.oracle import DIGEST, SENDER, rendered, view


@pytest.fixture
def message():  # type: ignore[no-untyped-def]
    return rendered().parse()


def test_email_headers(message) -> None:  # type: ignore[no-untyped-def]
    assert message["Subject"] == "4 new papers for you: TÜLU 3: Pushing Frontiers"  # LaTeX tidied
    assert message["To"].addresses[0].display_name == "Alice Müller"
    assert message["From"].addresses[0].addr_spec == "papers@example.org"
    assert message["Date"].datetime == FIXED_NOW
    assert message["Message-ID"] == message_id(sender=SENDER, token="TOKEN", delivery_ids=[1, 2, 3])
    assert message["List-Id"] == "paperboy <paperboy.example.org>"
    assert message["List-Unsubscribe"].startswith("<https://papers.example.org/unsubscribe/TOKEN>, <mailto:")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert "Bcc" not in message


def head_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n\n", 1)[0].split(b"\n")


def test_list_unsubscribe_urls_are_never_encoded_or_broken() -> None:
    """A receiving server reads List-Unsubscribe as it is: each URL whole between < and >,
    never an RFC 2047 encoded word (the email package encoded a long mailto: URL that way)."""
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_"
    urls = [
        f"https://papers.example.org/unsubscribe/{token}",
        f"mailto:papers@example.org?subject=unsubscribe%20{token}",
    ]
    digest = dataclasses.replace(DIGEST, unsubscribe=urls)
    data = rendered(digest).data
    lines = head_lines(data)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"List-Unsubscribe:"))
    raw = lines[start] + b"".join(line for line in lines[start + 1 :] if line.startswith(b" ")).replace(
        b"\n", b""
    )
    assert b"=?" not in raw
    assert raw == f"List-Unsubscribe: <{urls[0]}>, <{urls[1]}>".encode()
    assert lines[start].endswith(b",") and lines[start + 1] == f" <{urls[1]}>".encode()  # folded between URLs


TEXT = st.one_of(  # any text, and plain ASCII words (the headers written without the email package)
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200),
    st.lists(
        st.text(st.sampled_from(string.ascii_letters + "-:=?"), min_size=1, max_size=12), max_size=20
    ).map(" ".join),
)
NAMES = st.text(st.characters(max_codepoint=0x17F, exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(title=TEXT, name=NAMES, local=st.sampled_from(["alice", "a.b+c", "bøb", "x" * 60]))
def test_headers_read_back_as_written(title: str, name: str, local: str) -> None:
    """Whatever the title and the reader's name, the headers parse back to them, no other
    header appears, and lines stay within 78 characters unless one word is longer."""
    digest = dataclasses.replace(
        DIGEST, papers=[view(title or "t", "a", ("a",), 1)], to_name=name, to_email=f"{local}@example.org"
    )
    mail = rendered(digest)
    msg = mail.parse()
    utf8_address = {"To"} if not local.isascii() else set()  # (the parser calls raw UTF-8 a defect)
    assert msg.defects == [] and all(msg[h].defects == () for h in set(msg.keys()) - utf8_address)
    expected_names = [
        "From",
        "Date",
        "List-Id",
        "Auto-Submitted",
        "Precedence",
        "MIME-Version",
        "Subject",
        "To",
    ]
    expected_names += ["Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type"]
    assert msg.keys() == expected_names
    shown = digest.papers[0].title
    subject = one_line(f"{len(digest.papers) + digest.more} new papers for you: {shown}")
    assert str(msg["Subject"]) == subject or (len(shown) > 70 and str(msg["Subject"]).endswith("..."))
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == (one_line(name), f"{local}@example.org")
    for line in head_lines(mail.data):
        text = line.decode("utf-8")
        assert len(line) <= 998
        if len(text) > MAX_LINE:  # one word too long to break (after the header's name)
            word = text.strip() if text.startswith(" ") else text.partition(": ")[2]
            assert " " not in word.removesuffix(","), text


def parts_of(data: bytes) -> list[tuple[str, str, str]]:
    """(subtype, Content-Transfer-Encoding, content) of each part of a message."""
    msg = Mail("x@example.org", "<m@x>", data).parse()
    return [
        (p.get_content_subtype(), p["Content-Transfer-Encoding"], p.get_content()) for p in msg.iter_parts()
    ]


@pytest.mark.parametrize(
    ("content", "eight_bit", "expected"),
    [
        ("plain ASCII\nin short lines\n", True, "7bit"),
        ("Grüße, TÜLU\n", True, "8bit"),
        ("Grüße, TÜLU\n", False, "quoted-printable"),  # for a server without 8BITMIME
        ("x" * MAX_8BIT_LINE + "\n", True, "7bit"),
        ("x" * (MAX_8BIT_LINE + 1) + "\n", True, "quoted-printable"),  # too long for SMTP
        ("ü" * 500 + "\n", True, "quoted-printable"),  # 500 characters, 1,000 octets
        ("a NUL \0 in it\n", True, "quoted-printable"),
        ("--=_b0undary\nlooks like the end\n", True, "quoted-printable"),
    ],
)
def test_a_part_travels_as_it_is_only_where_smtp_allows(content: str, eight_bit: bool, expected: str) -> None:
    body, any_8bit = alternative_body(
        [("plain", content), ("html", "<p>ok</p>")], boundary="=_b0undary", eight_bit=eight_bit
    )
    data = b'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="=_b0undary"\n\n' + body
    assert parts_of(data) == [("plain", expected, content), ("html", "7bit", "<p>ok</p>")]
    assert any_8bit == (expected == "8bit")
    assert max(map(len, data.split(b"\n"))) <= MAX_8BIT_LINE


def test_a_digest_goes_8bit_and_seven_bit_gives_the_same_text_in_ascii() -> None:
    """The default templates keep lines short, so a digest needs no quoted-printable;
    for a server without 8BITMIME the same parts come back as quoted-printable."""
    mail = rendered()
    assert mail.eight_bit and not mail.smtputf8
    parts = parts_of(mail.data)
    assert [(subtype, cte) for subtype, cte, _ in parts] == [("plain", "8bit"), ("html", "8bit")]
    seven = mail.seven_bit()
    assert seven.isascii()
    assert seven.partition(b"\n\n")[0] == mail.data.partition(b"\n\n")[0]  # the same headers, byte for byte
    assert parts_of(seven) == [(subtype, "quoted-printable", content) for subtype, _, content in parts]


def test_an_smtputf8_message_with_an_8bit_body_reads_back_whole() -> None:
    """UTF-8 headers and an 8-bit body together: both read back as written."""
    digest = dataclasses.replace(DIGEST, to_email="jürgen@example.org", to_name="Jürgen")
    mail = rendered(digest)
    assert mail.smtputf8 and mail.eight_bit
    msg = mail.parse()
    assert str(msg["To"]) == "Jürgen <jürgen@example.org>"
    text = msg.get_body(("plain",))
    assert text is not None
    assert text.get_content().startswith("Hello Jürgen,\n") and "TÜLU 3" in text.get_content()
