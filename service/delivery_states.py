"""The states of a delivery, in a leaf module: the store's tables write them, and
:mod:`service.glance` writes them into the SQL that ``status`` runs without SQLAlchemy."""

from __future__ import annotations


class DeliveryState:
    """pending -> sending -> sent; a failed send goes back to pending, or to failed.

    ``sending`` is a claim with a lease: the process that claimed the row
    (``claimed_by``) sends it before ``lease_until``; a row still sending after
    that (the process died) is due again.
    """

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the subscriber unsubscribed (or left the configuration) before it went out
    ALL = (PENDING, SENDING, SENT, FAILED, CANCELLED)


LEFT = "left the configuration"  # the reason of rows cancelled when their subscriber left the YAML
