"""E-mail addresses in the configuration, parsed and checked once, when it loads.

A subscriber's ``email`` is one bare address (``local@domain``): no display
name (that is ``name``), no second address, no comment, no quoted local part,
no control, format (bidi) or separator character. ``email.from`` is an
address with an optional display name, held to the same rules, and its
address must read the same to every parser (the envelope sender and the
``From:`` header are then the same). The address syntax is email-validator's
(offline: no DNS); domains outside ASCII and UTF-8 local parts are allowed
(they travel with SMTPUTF8). Names used on a LAN (``localhost``, ``local``,
``test``, ``internal``, ``lan``, ``home.arpa``) are allowed, as a self-hosted
sender often needs them.
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import parseaddr
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# Control, format (bidi overrides, zero-width), line and paragraph separators, surrogates,
# private use, unassigned: none has a place in an address or a name in a header.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
LAN_DOMAINS = ("localhost", "local", "test", "internal", "lan", "home.arpa")
_NAMED = re.compile(r"\s*(?P<name>.*?)\s*<(?P<address>[^<>]*)>\s*", re.DOTALL)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# An ASCII dot-atom local part (RFC 5322 3.2.3), which email-validator accepts as it is.
_PLAIN_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
MAX_ADDRESS = 254  # octets, RFC 3696 errata 1690 (email-validator's limit too)


def unsafe_character(value: str) -> str | None:
    """The first character of ``value`` that may not stand in a header, described."""
    if value.isascii() and value.isprintable():
        return None
    for ch in value:
        if unicodedata.category(ch) in UNSAFE_CATEGORIES:
            return f"U+{ord(ch):04X} {unicodedata.name(ch, 'control character')}"
    return None


def check_address(value: str) -> str:
    """``value`` when it is one bare e-mail address; ValueError saying why not."""
    bad = unsafe_character(value)
    if bad:
        raise ValueError(f"{value!r} holds {bad}, which no address may")
    if value != value.strip():
        raise ValueError(f"{value!r} has spaces around the address")
    if "<" in value or ">" in value:
        raise ValueError(f"{value!r} is not a bare address: give only local@domain (the name goes in 'name')")
    local, _, domain = value.rpartition("@")
    if domain.lower() in LAN_DOMAINS:
        domain = "example.org"
    if _PLAIN_LOCAL.fullmatch(local) and len(value.encode()) <= MAX_ADDRESS:
        # The common case, checked at the cost of its domain (10,000 readers share a few):
        # the local part needs no more than the pattern, the domain is email-validator's.
        problem = _domain_problem(domain)
    else:
        problem = _address_problem(f"{local}@{domain}")
    if problem:
        raise ValueError(f"{value!r} is not one e-mail address: {problem}")
    return value


@lru_cache(maxsize=256)
def _domain_problem(domain: str) -> str | None:
    """Why ``domain`` cannot end an address (None when it can); a plain local part stands in."""
    return _address_problem(f"postmaster@{domain}")


def _address_problem(address: str) -> str | None:
    """email-validator's word on ``address`` (offline, no display name, no quoted local part,
    no domain literal); None when it is one valid address."""
    try:
        validate_email(
            address,
            check_deliverability=False,
            globally_deliverable=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None


def check_name(value: str) -> str:
    """A display name (a subscriber's ``name``, the sender's): one line, no control or bidi
    character, no address in it (a name that shows an address is a phishing trick)."""
    bad = unsafe_character(value)
    if bad:
        raise ValueError(f"{value!r} holds {bad}, which no name in a header may")
    if "@" in value or "<" in value or ">" in value:
        raise ValueError(f"{value!r}: a name may not hold '@', '<' or '>' (it would read as an address)")
    return value


def check_sender(value: str) -> str:
    """``email.from``: ``Name <local@domain>`` or ``local@domain``, each part checked, and the
    address the same to Python's parser as to ours (the envelope and the header agree)."""
    bad = unsafe_character(value)
    if bad:
        raise ValueError(f"{value!r} holds {bad}, which no header may")
    named = _NAMED.fullmatch(value)
    name, address = (named["name"].strip('"'), named["address"]) if named else ("", value.strip())
    if name:
        check_name(name)
    check_address(address)
    if parseaddr(value)[1] != address:
        raise ValueError(
            f"{value!r}: the address reads differently to other parsers; write Name <local@domain>"
        )
    return value
