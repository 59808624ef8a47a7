"""The ``email`` section: the sender, the transport (SMTP or a maildir), DKIM, retries."""

from __future__ import annotations

import re
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from .addresses import check_sender
from .base import MODEL_CONFIG, At, Duration, resolve


class _Model(BaseModel):
    model_config = MODEL_CONFIG


class Smtp(_Model):
    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    starttls: bool | None = None  # None: use STARTTLS when the server offers it
    tls: bool = False  # implicit TLS (port 465)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    timeout: Duration = 30.0
    concurrency: int = Field(default=2, ge=1, le=64)
    rate: float | None = Field(default=None, gt=0)  # messages per second, all connections together
    validate_certs: bool = True

    @model_validator(mode="after")
    def _tls_modes(self) -> Smtp:
        if self.tls and self.starttls:
            raise ValueError("tls (implicit TLS) and starttls exclude each other; choose one")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


_SELECTOR = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*"
)


class Dkim(_Model):
    """``email.dkim``: every email signed (RFC 6376) as ``<selector>._domainkey.<domain>``."""

    domain: str
    selector: str
    # a PEM file (its path), or the PEM itself (from ${ENV}); held as the PEM, never shown
    private_key: SecretStr

    @field_validator("domain", "selector")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SELECTOR.fullmatch(value) or len(value) > 253:
            raise ValueError(f"{value!r} is not a DNS name (letters, digits, '-', '_' and dots)")
        return value.lower()

    @field_validator("private_key", mode="before")
    @classmethod
    def _key(cls, value: Any, info: ValidationInfo) -> str:
        from .keys import read_private_key

        if not isinstance(value, str):
            raise ValueError("a PEM file's path, or the PEM itself")
        return read_private_key(value, base=(info.context or {}).get("base"))


class Email(_Model):
    from_: str = Field(default="paperboy <paperboy@localhost>", alias="from")
    transport: Literal["smtp", "maildir"] = "maildir"
    smtp: Smtp = Field(default_factory=dict)  # type: ignore[assignment]
    maildir: Path = Path("var/mail")
    paper_link: str = "https://huggingface.co/papers?q={title}"
    unsubscribe_url: str | None = None
    max_papers: int = Field(default=30, ge=1)
    max_attempts: int = Field(default=8, ge=1)  # then a delivery is failed
    retry_after: Duration = 300.0  # the first retry's delay; it doubles each time, with jitter
    retry_max: Duration = 6 * 3600.0  # the longest delay between two attempts
    lease: Duration = 600.0  # a claimed delivery not sent by then is due again (its process died)
    dkim: Dkim | None = None
    contact: str | None = None  # whom readers may write to (the unsubscribe page); None: the sender

    @model_validator(mode="after")
    def _aligned(self) -> Email:
        """DMARC passes on DKIM only when the signing domain is the sender's or a parent of it."""
        if self.dkim is not None:
            sender = parseaddr(self.from_)[1].rpartition("@")[2].lower()
            if sender != self.dkim.domain and not sender.endswith("." + self.dkim.domain):
                raise At(
                    ("email", "dkim", "domain"),
                    f"{self.dkim.domain!r} is not the sender's domain {sender!r} nor a parent of it: "
                    "receivers apply DMARC to the From domain, and this signature would not count for it",
                )
        return self

    @field_validator("from_", "contact")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else check_sender(value)

    @property
    def contact_address(self) -> tuple[str, str]:
        """(name, address) of whom readers may write to: ``contact``, else the sender."""
        name, address = parseaddr(self.contact or self.from_)
        return name, address

    @field_validator("maildir")
    @classmethod
    def _path(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve(value, info)

    @field_validator("paper_link", "unsubscribe_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format(title="t", key="k", token="t")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"{value!r}: bad placeholder {exc}; use {{title}} {{key}} {{token}}"
                ) from None
        return value
