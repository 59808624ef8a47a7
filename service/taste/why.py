"""Why a reader's taste ranks a paper as it does: the words that weighed most for it in
the reader's model, and the liked paper it is most like. For ``paperboy explain`` and the
reader's page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from .. import store
from ..latex import tidy
from .learn import kept_space
from .model import Model
from .rank import blend
from .space import words

WORDS = 4  # words named per paper


@dataclass(frozen=True, slots=True)
class Reason:
    score: float  # the model's score: above 0 leans to "more like this"
    weight: float  # how much it counts in the email's order (see service.taste.rank)
    words: list[tuple[str, float]]  # the words that weighed most for the paper, and how much
    nearest: tuple[str, float] | None  # the liked paper it is most like, and how much (cosine)
    likes: int
    dislikes: int

    def sentence(self) -> str:
        """The reason in words, for the page and ``explain``."""
        lean = "more" if self.score > 0 else "less"
        parts = [f"Your answers lean {lean} towards it ({self.score:+.2f})"]
        if self.words:
            parts.append("words that count: " + ", ".join(w for w, _ in self.words))
        if self.nearest is not None:
            parts.append(f"most like “{self.nearest[0]}”, which you liked")
        return "; ".join(parts) + "."


def reasons(
    session: Session, subscriber_id: int, kept: bytes, papers: Sequence[tuple[int, str, str]]
) -> dict[int, Reason]:
    """The learned reason of each of ``papers`` (id, title, abstract) for the reader whose
    model is ``kept`` (as :func:`service.store.models` reads it)."""
    if not papers:
        return {}
    model = Model.from_bytes(kept)
    space = kept_space(session)
    x = space.vectors([(t, a) for _, t, a in papers])
    scores = model.scores(x)
    liked = store.liked_papers(session=session, subscriber_id=subscriber_id)
    liked_texts = store.paper_texts(session=session, paper_ids=liked)
    order = [p for p in liked if p in liked_texts]
    likeness = (
        (x @ space.vectors([liked_texts[p][:2] for p in order]).T).toarray()
        if order
        else np.zeros((len(papers), 0))
    )
    out = {}
    for i, (pid, title, abstract) in enumerate(papers):
        names = {**words(abstract), **words(title)}
        found = [(names[f], part) for f, part in model.reasons(x[i], WORDS) if f in names]
        nearest = None
        others = [(likeness[i, j], p) for j, p in enumerate(order) if p != pid]
        if others:
            similarity, best = max(others)
            if similarity > 0:
                nearest = (tidy(liked_texts[best][0]), float(similarity))
        out[pid] = Reason(float(scores[i]), blend(model), found, nearest, model.likes, model.dislikes)
    return out
