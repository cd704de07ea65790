"""MinHash signatures, LSH band keys and union-find, vectorised with NumPy.

A document's shingles are its word n-grams (:mod:`openmimo.data.texthash`, digits kept, punctuation
dropped; a document shorter than n words is one shingle).  Its signature has ``bands * rows`` values;
value k is ``min over shingles s of ((a_k * s + b_k) mod 2**64) >> 32`` (a multiply-shift hash family,
``a_k`` odd, drawn from ``seed``).  Two documents are near-duplicate candidates when all ``rows``
values of any band agree; each band's values are folded into one 64-bit band key, so a candidate pair
is a pair sharing a key.  The probability that a pair of Jaccard similarity J becomes a candidate is
``1 - (1 - J**rows)**bands`` (:func:`candidate_probability`).

:func:`signature_oracle` and :func:`jaccard` are the plain-Python definitions the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from openmimo.data.texthash import mix64, ngram_hashes, ngrams_oracle

_SHINGLES_PER_BLOCK = 1 << 15  # rows of the (shingles x hashes) product computed at once (~30 MB at 112 hashes)


@dataclass(frozen=True)
class MinHashParams:
    ngram: int = 5  # words per shingle
    bands: int = 14  # LSH bands
    rows: int = 8  # signature values per band
    seed: int = 1  # draws the hash family

    def __post_init__(self):
        if self.ngram < 1 or self.bands < 1 or self.rows < 1:
            raise ValueError(f"minhash ngram, bands and rows must be >= 1 (got {self.ngram}, {self.bands}, {self.rows})")

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.num_hashes])
        a = rng.integers(1, 1 << 63, size=self.num_hashes, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 1 << 63, size=self.num_hashes, dtype=np.uint64)
        return a, b


def candidate_probability(j: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - j ** rows) ** bands


def signatures_from_hashes(h: np.ndarray, offsets: np.ndarray, params: MinHashParams) -> np.ndarray:
    """``(docs, bands*rows)`` uint32 signatures from shingle hashes grouped by ``offsets``; a document
    without shingles gets all values 2**32-1 (it is nobody's candidate: :func:`band_keys` marks it)."""
    a, b = params.coefficients()
    n_docs = offsets.size - 1
    out = np.full((n_docs, params.num_hashes), np.iinfo(np.uint32).max, dtype=np.uint32)
    counts = np.diff(offsets)
    doc = 0
    while doc < n_docs:
        # a block of whole documents holding at most _SHINGLES_PER_BLOCK shingles (or one larger document)
        stop = max(doc + 1, int(np.searchsorted(offsets, offsets[doc] + _SHINGLES_PER_BLOCK, side="right")) - 1)
        stop = min(stop, n_docs)
        lo, hi = int(offsets[doc]), int(offsets[stop])
        nonempty = np.flatnonzero(counts[doc:stop] > 0)
        if hi > lo:
            with np.errstate(over="ignore"):
                v = ((h[lo:hi, None] * a + b) >> np.uint64(32)).astype(np.uint32)
            out[doc + nonempty] = np.minimum.reduceat(v, offsets[doc + nonempty] - lo, axis=0)
        doc = stop
    return out


def signatures_rensa(h: np.ndarray, offsets: np.ndarray, params: MinHashParams) -> np.ndarray:
    """The same shape from rensa's R-MinHash over the same shingle hashes (its own hash family; Rust, SIMD)."""
    import rensa  # optional dependency (the `data` extra)

    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(h, offsets.astype(np.uint64), num_perm=params.num_hashes,
                                                           seed=params.seed)
    out = np.asarray(m.to_rows(), dtype=np.uint32).reshape(offsets.size - 1, params.num_hashes)
    out[np.diff(offsets) == 0] = np.iinfo(np.uint32).max
    return out


BACKENDS = {"numpy": signatures_from_hashes, "rensa": signatures_rensa}


def signatures(texts: Sequence[str], params: MinHashParams, backend: str = "rensa") -> np.ndarray:
    """``(len(texts), bands*rows)`` uint32 signatures; ``backend``: ``"rensa"`` (fast) or ``"numpy"`` (this
    module's hash family, checked value for value against :func:`signature_oracle`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown minhash backend {backend!r} (choose from {', '.join(BACKENDS)})")
    h, off = ngram_hashes(texts, params.ngram, mode="alnum", short="whole")
    return BACKENDS[backend](h, off, params)


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """``(docs, bands)`` uint64 keys: band j's ``rows`` values folded into 64 bits (band index mixed in).
    Rows of an empty document (all values 2**32-1) get key 0, which callers skip."""
    n = sigs.shape[0]
    s = sigs.reshape(n, params.bands, params.rows).astype(np.uint64)
    key = np.zeros((n, params.bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(params.rows):
            key = mix64(key * np.uint64(0x100000001B3) + s[:, :, r])
        key = mix64(key ^ np.arange(1, params.bands + 1, dtype=np.uint64)) | np.uint64(1)
    key[(sigs == np.iinfo(np.uint32).max).all(axis=1)] = 0
    return key


class UnionFind:
    """Disjoint sets over arbitrary hashable items; the root of a set is its smallest item."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        p = self.parent.setdefault(x, x)
        root = x
        while p != root:
            root, p = p, self.parent[p]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x, y):
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = (rx, ry) if rx < ry else (ry, rx)
            self.parent[hi] = lo

    def groups(self) -> dict:
        out: dict = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return out


# ---- the plain-Python definitions ------------------------------------------------------------------------
def shingle_set(text: str, ngram: int = 5) -> set[int]:
    return set(ngrams_oracle(text, ngram, mode="alnum", short="whole"))


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = shingle_set(a, ngram), shingle_set(b, ngram)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def signature_oracle(text: str, params: MinHashParams) -> list[int]:
    a, b = params.coefficients()
    sh = shingle_set(text, params.ngram)
    if not sh:
        return [(1 << 32) - 1] * params.num_hashes
    return [min(((int(ak) * s + int(bk)) % (1 << 64)) >> 32 for s in sh) for ak, bk in zip(a, b)]
