"""Taking things back out: which paper or file the operator means, forgetting it.

``paperboy forget`` names papers by title (or any unique part of it) and files
by path or by the name they were ingested under; :func:`find_paper` and
:func:`find_file` say which, or raise :class:`NotFound` with the candidates.
:func:`forget` hides the chosen papers from every feed and page, cancels their
pending deliveries and keeps sent ones recorded (:func:`service.store.forget_papers`);
for a file, only the papers no other file also brought.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from . import glance, store
from .errors import NotFound
from .ingest import file_hash


def find_paper(session: Session, text: str) -> store.Paper:
    """The paper whose title is ``text``, or the one paper whose title holds it (folded):
    :func:`service.glance.paper_named`."""
    paper_id, _ = glance.paper_named(glance.on_session(session), text)
    paper = session.get(store.Paper, paper_id)
    assert paper is not None  # just read in this session
    return paper


def find_file(session: Session, name: str) -> store.IngestedFile:
    """An ingested file: by the content of the file at ``name`` if it exists, else by the path
    or file name it was ingested under."""
    path = Path(name)
    if path.is_file():
        record = store.file_by_hash(session=session, sha256=file_hash(path))
        if record is not None and record.error is None:
            return record
    found = store.files_named(session=session, name=name) or store.files_named(
        session=session, name=path.name
    )
    if not found:
        raise NotFound(f"no ingested file is {name!r} (a rejected file brought nothing to forget)")
    if len(found) > 1:
        listed = "\n".join(f"  {f.path} ({f.ingested_at:%Y-%m-%d %H:%M}, {f.entries} entries)" for f in found)
        raise NotFound(f"{len(found)} ingested files are named {name!r}; give the full path:\n{listed}")
    return found[0]


@dataclass(slots=True)
class Forgetting:
    chosen: dict[int, store.Paper] = field(default_factory=dict)
    done: store.Forgotten | None = None  # None: a dry run


def forget(
    engine: Engine,
    *,
    titles: Sequence[str],
    files: Sequence[str],
    at: datetime,
    dry_run: bool,
    say: Callable[[str], None],
) -> Forgetting:
    """Forget the papers named and the papers only the files brought (in one transaction)."""
    out = Forgetting()
    with store.transaction(engine) as session:
        for text in titles:
            paper = find_paper(session, text)
            if paper.forgotten_at is not None:
                say(f"already forgotten: {paper.title}")
            elif paper.id is not None:
                out.chosen[paper.id] = paper
        for name in files:
            record = find_file(session, name)
            only, shared = store.papers_only_from(session=session, sha256=record.sha256)
            out.chosen.update((p.id, p) for p in only if p.id is not None)
            kept = f"{shared} also brought by another file are kept"
            say(f"{record.path}: {len(only)} papers only it brought; {kept}")
        for paper in out.chosen.values():
            say(f"{'would forget' if dry_run else 'forget'}: {paper.title}")
        if dry_run:
            session.rollback()
            return out
        out.done = store.forget_papers(session=session, paper_ids=list(out.chosen), at=at)
    return out
