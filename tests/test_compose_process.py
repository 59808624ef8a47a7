"""A delivery run of more than one chunk composes the chunks after the first in a child
process (service.compose_process): every reader gets one email, byte for byte the one the
run's own process would have made, and a reader whose email cannot be made fails alone."""

from __future__ import annotations

import mailbox
from collections import Counter
from datetime import datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import text

from service import delivery, store
from service.compose import Composer
from service.compose_process import ProcessComposer
from service.cycle import App
from service.message import Mail
from service.settings import parse_settings
from tests.helpers import copy_digest

READERS = 9
CHUNK = 2  # subscribers per claim: five chunks, the first composed here, four in the child


class Watched(ProcessComposer):
    """The real child, and beside it the same chunk composed in this process, to compare."""

    made: ClassVar[list[tuple[list[Mail], list[Mail]]]] = []

    def __call__(self, rows: dict[int, list[store.OutboxRow]], *, at: datetime) -> list[Mail]:
        mails = super().__call__(rows, at=at)
        here = Composer(self.engine, self.renderer, self.settings, broken=lambda *_: None)
        Watched.made.append((mails, here(rows, at=at)))
        return mails


def test_the_chunks_after_the_first_are_composed_in_a_child(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = "".join(f"  - email: reader{i}@example.org\n    keywords: [model]\n" for i in range(READERS))
    settings = parse_settings(
        f'database: "{database_url}"\ninbox: {tmp_path}/inbox\ninbox_settle: 0s\n'
        f"email: {{maildir: {tmp_path}/mail}}\nfeeds: {{dir: {tmp_path}/feeds}}\nsubscribers:\n{readers}",
        source="t.yaml",
        base=tmp_path,
    )
    monkeypatch.setattr(delivery, "CLAIM_SUBSCRIBERS", CHUNK)
    monkeypatch.setattr(delivery, "PROCESS_AFTER", CHUNK)
    monkeypatch.setattr(delivery, "ProcessComposer", Watched)
    Watched.made = []
    copy_digest("digest-a.txt", tmp_path / "inbox", mtime=0)
    app = App(settings, progress=False)
    try:
        app.cycle(send=False)
        with app.engine.begin() as conn:  # behind the configuration's back: no header can hold it
            conn.execute(
                text("UPDATE subscribers SET email = :bad WHERE email = 'reader7@example.org'"),
                {"bad": "reader7\r\nBcc: x@evil.example"},
            )
        report = app.deliver()
    finally:
        app.engine.dispose()

    assert report.emails == READERS - 1
    assert len(report.failed) == 1 and "cannot make the email for" in report.failed[0][1]
    box = mailbox.Maildir(tmp_path / "mail", create=False)
    received = Counter(message_from_bytes(m.as_bytes(), policy=policy.default)["To"] for m in box)
    assert sorted(received) == sorted(f"reader{i}@example.org" for i in range(READERS) if i != 7)
    assert set(received.values()) == {1}
    # the child composed every chunk after the first (the broken reader's among them)...
    assert len(Watched.made) == READERS // CHUNK
    assert sum(len(child) for child, _ in Watched.made) == READERS - CHUNK - 1
    # ...each email the same bytes as this process makes of the same rows
    for child, here in Watched.made:
        assert [m.data for m in child] == [m.data for m in here]
        assert [m.delivery_ids for m in child] == [m.delivery_ids for m in here]
