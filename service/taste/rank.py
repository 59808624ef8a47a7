"""A delivery run's learned scores, and how they blend with the rules' score.

:class:`Ranker` scores the papers of the readers who have a model: the word space is read
once per run, each paper's vector made once and kept, and a chunk of readers is scored
with one sparse product (papers x words times words x readers). :func:`blend` gives the
weight of a reader's learned score against the rules' score in their email's order; a
reader without a model keeps the rules' order (``service.compose.best_first``) exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import sparse
from sqlmodel import Session

from .learn import kept_space
from .model import Model
from .space import FEATURES, Space

# How much the learned score counts against the rules' (scaled to 0..1 for the reader's
# best match): a model's score runs about -1.5 to 1.5, so a confident model outweighs
# the rules, and an unsure one (few ratings) mostly reorders what the rules rank alike.
BLEND = 1.0
CONFIDENT = 5  # ratings after which the model counts fully (fewer: in proportion)
KEEP = 50_000  # paper vectors kept per run

Texts = Callable[[Session, set[int]], Mapping[int, tuple[str, str, str]]]


def blend(model: Model) -> float:
    return BLEND * min(1.0, model.ratings / CONFIDENT)


class Ranker:
    """Learned scores for one run (or one page): the space, and each paper's vector, read once."""

    def __init__(self, texts: Texts) -> None:
        """``texts(session, ids)`` gives (title, abstract, key) by paper id (a run's cache)."""
        self.texts = texts
        self._space: Space | None = None
        self._rows: dict[int, sparse.csr_matrix] = {}

    def space(self, session: Session) -> Space:
        if self._space is None:
            self._space = kept_space(session)
        return self._space

    def vectors(self, session: Session, paper_ids: list[int]) -> sparse.csr_matrix:
        """One row per paper of ``paper_ids``, in that order."""
        missing = set(paper_ids).difference(self._rows)
        if missing:
            if len(self._rows) + len(missing) > KEEP:
                self._rows.clear()
                missing = set(paper_ids)
            texts = self.texts(session, missing)
            order = sorted(missing)
            matrix = self.space(session).vectors([(texts[p][0], texts[p][1]) for p in order])
            self._rows.update((p, matrix[i]) for i, p in enumerate(order))
        if not paper_ids:
            return sparse.csr_matrix((0, FEATURES), dtype=np.float32)
        out: sparse.csr_matrix = sparse.vstack([self._rows[p] for p in paper_ids]).tocsr()
        return out

    def scores(
        self, session: Session, papers: Mapping[int, list[int]], models: Mapping[int, Model]
    ) -> dict[int, dict[int, float]]:
        """Each reader's learned score of each of their ``papers`` (by subscriber id)."""
        readers = [sid for sid in papers if sid in models]
        if not readers:
            return {}
        ids = sorted({p for sid in readers for p in papers[sid]})
        place = {p: i for i, p in enumerate(ids)}
        x = self.vectors(session, ids)
        w = sparse.csr_matrix(
            (
                np.concatenate([models[sid].weights for sid in readers]),
                np.concatenate([models[sid].features for sid in readers]),
                np.cumsum([0] + [len(models[sid].features) for sid in readers]),
            ),
            shape=(len(readers), FEATURES),
        )
        product = (x @ w.T).toarray()
        out: dict[int, dict[int, float]] = {}
        for j, sid in enumerate(readers):
            bias = models[sid].bias
            out[sid] = {p: float(product[place[p], j]) + bias for p in papers[sid]}
        return out
