"""One reader's taste: a linear model over the word space, fitted from their own yes and no.

As arxiv-sanity-lite does for a tag: a linear SVM over TF-IDF vectors, positives against
negatives, classes balanced. The positives are the papers rated "more like this" and the
configured likes; the negatives the papers rated "less like this", and papers the reader
was sent and did not rate count as weak negatives (``WEAK`` of a rating's weight: not
rating is not disliking). A reader with only "less like this" has the unrated papers as
weak positives instead, so that the model still learns what to push down.

A model is fitted when the reader's ratings or likes change, kept in the store as bytes
(:meth:`Model.to_bytes`: the ``KEEP`` heaviest weights), and scores a paper with one dot
product: ``score > 0`` leans towards "more like this".
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.svm import LinearSVC

from .space import FEATURES

WEAK = 0.25  # the weight of an unrated paper against a rating's
C = 1.0  # liblinear's C: how closely the model follows the examples
KEEP = 4_000  # weights kept per reader (the heaviest): 32 KB at most in the store


@dataclass(slots=True)
class Model:
    features: np.ndarray  # int32, sorted
    weights: np.ndarray  # float32, one per feature
    bias: float
    likes: int  # examples it was fitted on
    dislikes: int

    @property
    def ratings(self) -> int:
        return self.likes + self.dislikes

    def scores(self, vectors: sparse.csr_matrix) -> np.ndarray:
        """The model's score of each row of ``vectors``."""
        dense = np.zeros(FEATURES, dtype=np.float32)
        dense[self.features] = self.weights
        out: np.ndarray = vectors @ dense + self.bias
        return out

    def reasons(self, vector: sparse.csr_matrix, n: int = 5) -> list[tuple[int, float]]:
        """The features of one paper's ``vector`` that weighed most for it, heaviest first."""
        row = vector.tocsr()
        place = np.searchsorted(self.features, row.indices)
        place = np.minimum(place, len(self.features) - 1) if len(self.features) else place
        known = (len(self.features) > 0) & (self.features[place] == row.indices) if len(place) else place
        if not len(place) or not known.any():
            return []
        parts = row.data[known] * self.weights[place[known]]
        order = np.argsort(-parts)[:n]
        return [(int(row.indices[known][i]), float(parts[i])) for i in order if parts[i] > 0]

    def to_bytes(self) -> bytes:
        """A header (bias, likes, dislikes, features), then the features, then the weights."""
        head = _HEAD.pack(self.bias, self.likes, self.dislikes, len(self.features))
        return head + self.features.astype("<i4").tobytes() + self.weights.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        bias, likes, dislikes, n = _HEAD.unpack_from(data)
        features = np.frombuffer(data, dtype="<i4", count=n, offset=_HEAD.size)
        weights = np.frombuffer(data, dtype="<f4", count=n, offset=_HEAD.size + 4 * n)
        return cls(features, weights, bias, likes, dislikes)


_HEAD = struct.Struct("<dIII")


def fit(
    vectors: sparse.csr_matrix, place: Mapping[int, int], rated: Mapping[int, int], weak: Sequence[int]
) -> Model | None:
    """The model of a reader who gave ``rated`` (paper id: +1 or -1; likes count +1) and was
    sent the ``weak`` papers without rating them; ``place`` gives each paper's row of
    ``vectors``. None when there is nothing to learn from (no rating, or nothing to set it
    against)."""
    likes = [p for p, v in rated.items() if v > 0 and p in place]
    dislikes = [p for p, v in rated.items() if v < 0 and p in place]
    weak = list(dict.fromkeys(p for p in weak if p not in rated and p in place))
    weak_label = 0 if likes else 1
    labels = [1] * len(likes) + [0] * len(dislikes) + [weak_label] * len(weak)
    if len(set(labels)) < 2:
        return None
    ids = likes + dislikes + weak
    x = vectors[[place[p] for p in ids]]
    y = np.array(labels)
    weights = np.array([1.0] * (len(likes) + len(dislikes)) + [WEAK] * len(weak))
    svm = LinearSVC(C=C, class_weight="balanced", dual=True, max_iter=5_000, tol=1e-4, random_state=0)
    svm.fit(x, y, sample_weight=weights)
    coef = svm.coef_.ravel().astype(np.float32)
    features = np.flatnonzero(coef)
    if len(features) > KEEP:
        features = np.sort(features[np.argsort(-np.abs(coef[features]))[:KEEP]])
    return Model(
        features.astype(np.int32), coef[features], float(svm.intercept_[0]), len(likes), len(dislikes)
    )
