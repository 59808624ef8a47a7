"""The DKIM private key of ``email.dkim.private_key``: read and checked when the configuration
loads, so that ``check`` refuses a key no email could be signed with.

The value is a PEM file's path (relative to the configuration's folder) or the
PEM itself, as ``${DKIM_KEY}`` gives it from the environment. An RSA key of at
least 1,024 bits (2,048 recommended; receivers ignore shorter signatures), in
PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8 (``BEGIN PRIVATE KEY``) form, as
``openssl genrsa`` writes it.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

MIN_BITS = 1024  # RFC 8301 3.2: verifiers MUST NOT consider shorter RSA signatures valid


def read_private_key(value: str, *, base: str | Path | None) -> str:
    """The PEM text of the key ``value`` names or holds; ValueError saying what is wrong."""
    if value.lstrip().startswith("-----BEGIN"):
        pem, where = value.strip() + "\n", "the key given"
    else:
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(os.path.normpath(Path(base) / path))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file (give the PEM file of the private key)") from None
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the private key: {exc.strerror or exc}") from None
        where = str(path)
        if not raw.isascii():
            raise ValueError(f"{where}: not an RSA private key in PEM (PEM is ASCII text)")
        pem = raw.decode("ascii")
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        key = parse_pem_private_key(pem.encode("ascii"))
    except (UnparsableKeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{where}: not an RSA private key in PEM ({exc})") from None
    bits = int(key["modulus"]).bit_length()
    if bits < MIN_BITS:
        raise ValueError(f"{where}: an RSA key of {bits} bits; receivers need at least {MIN_BITS} (use 2048)")
    return pem


_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d0101010500")  # OID 1.2.840.113549.1.1.1, NULL


def dns_record(pem: str) -> str:
    """The TXT record to publish at ``<selector>._domainkey.<domain>`` for the key ``pem``:
    ``v=DKIM1; k=rsa; p=`` and its public half (DER SubjectPublicKeyInfo, base64), as
    ``openssl rsa -pubout -outform DER | base64`` gives it."""
    from dkim.crypto import parse_pem_private_key

    key = parse_pem_private_key(pem.encode("ascii"))
    public = _der(0x30, _integer(int(key["modulus"])) + _integer(int(key["publicExponent"])))
    info = _der(0x30, _der(0x30, _RSA_ENCRYPTION) + _der(0x03, b"\0" + public))
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(info).decode("ascii")


def _integer(n: int) -> bytes:
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))  # a leading 0: never negative


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content
