"""The word space tastes are learned in: TF-IDF over hashed words, title words counting more.

A paper's vector holds its words and word pairs (English stop words left out), hashed into
``FEATURES`` places, so that no vocabulary is kept or grown: a word first seen tomorrow
already has its place. The title's counts are multiplied by ``TITLE_WEIGHT``; each count
becomes ``1 + log(count)``, is multiplied by the word's inverse document frequency over the
store's papers, and the vector is scaled to length 1 (arxiv-sanity-lite's features, with a
hasher in place of a fitted vocabulary). A vector is made once per paper and run; a reader's
score for a paper is then one dot product.

The document counts are a :class:`Space`, kept in the store (:func:`service.store.save_space`)
and rebuilt from the newest ``SAMPLE`` papers once the store has grown by a quarter since.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

FEATURES = 1 << 18
TITLE_WEIGHT = 3.0
SAMPLE = 20_000  # papers the document counts are taken over (the newest)
GROWTH = 0.25  # rebuild once this share of new papers arrived since the build

Text = tuple[str, str]  # title, abstract


@lru_cache(maxsize=1)
def hasher() -> HashingVectorizer:
    return HashingVectorizer(
        n_features=FEATURES,
        alternate_sign=False,
        norm=None,
        stop_words="english",
        ngram_range=(1, 2),
        dtype=np.float32,
    )


def counts(texts: Sequence[Text]) -> sparse.csr_matrix:
    """Word counts of each paper, one row per text, the title's weighing ``TITLE_WEIGHT``."""
    titles = hasher().transform([t for t, _ in texts])
    abstracts = hasher().transform([a for _, a in texts])
    out: sparse.csr_matrix = (titles * TITLE_WEIGHT + abstracts).tocsr()
    return out


class Space:
    """How many of ``papers`` papers hold each feature: the inverse document frequencies."""

    def __init__(self, papers: int, features: np.ndarray, documents: np.ndarray) -> None:
        self.papers = papers
        self.features = features.astype(np.int32)
        self.documents = documents.astype(np.int32)
        df = np.zeros(FEATURES, dtype=np.float32)
        df[self.features] = self.documents
        # sklearn's smooth idf: a word no paper holds weighs as if one more paper held it
        self.idf = (np.log((1.0 + papers) / (1.0 + df)) + 1.0).astype(np.float32)

    @classmethod
    def build(cls, texts: Sequence[Text]) -> Space:
        held = counts(texts) if texts else sparse.csr_matrix((0, FEATURES), dtype=np.float32)
        documents = np.bincount(held.indices, minlength=FEATURES)
        features = np.flatnonzero(documents)
        return cls(len(texts), features, documents[features])

    def vectors(self, texts: Sequence[Text]) -> sparse.csr_matrix:
        """One TF-IDF row of length 1 per text."""
        if not texts:
            return sparse.csr_matrix((0, FEATURES), dtype=np.float32)
        x = counts(texts)
        x.data = 1.0 + np.log(x.data)
        x = x.multiply(self.idf).tocsr()
        out: sparse.csr_matrix = normalize(x, copy=False)
        return out

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, features=self.features, documents=self.documents)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, papers: int, data: bytes) -> Space:
        held: Any = np.load(io.BytesIO(data))
        return cls(papers, held["features"], held["documents"])


def words(text: str) -> dict[int, str]:
    """The words and word pairs of ``text`` by the feature each falls on: what a feature of
    this text means (a hash has no way back)."""
    tokens = sorted(set(hasher().build_analyzer()(text)))
    if not tokens:
        return {}
    places = FeatureHasher(n_features=FEATURES, input_type="string", alternate_sign=False)
    rows = places.transform([[t] for t in tokens]).tocsr()
    out: dict[int, str] = {}
    for token, row in zip(tokens, _first_index(rows), strict=True):
        out.setdefault(int(row), token)
    return out


def _first_index(rows: sparse.csr_matrix) -> Iterable[int]:
    return (int(rows.indices[rows.indptr[i]]) for i in range(rows.shape[0]))
