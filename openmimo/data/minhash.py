"""MinHash signatures, LSH band keys and union-find, vectorised with NumPy.

A document's shingles are its word n-grams (:mod:`openmimo.data.texthash`, digits kept, punctuation
dropped; a document shorter than n words is one shingle).  Its signature has ``bands * rows`` values;
value k is ``min over shingles s of ((a_k * s + b_k) mod 2**64) >> 32`` (a multiply-shift hash family,
``a_k`` odd, drawn from ``seed``).  Two documents are near-duplicate candidates when all ``rows``
values of any band agree; each band's values are folded into one 64-bit band key, so a candidate pair
is a pair sharing a key.  The probability that a pair of Jaccard similarity J becomes a candidate is
``1 - (1 - J**rows)**bands`` (:func:`candidate_probability`).

:func:`shingle_hashes` gives ``texthash.ngram_hashes(texts, ngram, mode="alnum", short="whole")`` in fewer passes
over the bytes (the tests hold the two equal): compiled by Numba where it is installed (one call per batch),
else in NumPy.  :func:`signature_oracle` and :func:`jaccard` are the plain-Python
definitions the tests compare against.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from openmimo.data.texthash import (MIX_MULTIPLIERS, OPERATORS, TRANSLATE_TABLES, combine, edge_word_hashes,
                                    hash_powers, mix64_inplace, ngrams_oracle, word_hashes)

try:
    import numba
except ImportError:  # optional (the `data` extra): without it shingle_hashes takes its NumPy path
    numba = None

_SHINGLES_PER_BLOCK = 1 << 15  # shingles and hash functions of one pass of the NumPy backend (2 MB of products)
_HASHES_PER_PASS = 8
_TEXT_CHUNK = 1 << 18  # characters whose n-grams are hashed and signed at once (as texthash.text_chunks cuts)
_BYTE_CHUNK = 1 << 17  # characters whose bytes are scanned at once (shingle_hashes_numpy)
# a byte of a word (mode "alnum") to itself lower-cased, a blank to 0 (the NumPy path's bytes.translate table, the
# Numba kernel's lookup table); NUL is the one word byte that maps to 0, so a batch holding one takes
# texthash.word_hashes instead
_WORD_OR_ZERO_ARRAY = np.where(TRANSLATE_TABLES["alnum"] == 32, 0, TRANSLATE_TABLES["alnum"]).astype(np.uint8)
_WORD_OR_ZERO = _WORD_OR_ZERO_ARRAY.tobytes()
_OPS = [bytes([c]) for c in OPERATORS]
_SPACED_OPS = [(op, b" " + op + b" ") for op in _OPS]


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


def _batch_bytes(texts: Sequence[str], chars: np.ndarray) -> tuple[bytes, np.ndarray]:
    """``(raw, lens)``: the texts as one byte string, a blank before, between and after them, each operator spaced
    out (a word of its own, as in texthash.word_hashes), and each text's length in it plus its separator
    (``chars``: each text's length in characters).  A text in ASCII is encoded as it is (the translate table
    lower-cases A-Z, which is all ``str.lower`` does to ASCII); a batch all in ASCII and without operators is
    joined and encoded in one call."""
    if all(map(str.isascii, texts)):
        raw = " ".join(["", *texts, ""]).encode("ascii")
        if not any(op in raw for op in _OPS):
            return raw, chars + 1
        enc = [t.encode("ascii") for t in texts]
    else:
        enc = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    joined = b" ".join(enc)
    for op, spaced in _SPACED_OPS:
        if op in joined:
            enc = [e.replace(op, spaced) for e in enc]
    lens = np.fromiter(map(len, enc), dtype=np.int64, count=len(enc))
    lens += 1
    return b" ".join([b"", *enc, b""]), lens


def _word_hashes(texts: Sequence[str], chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``texthash.word_hashes(texts, "alnum")``, value for value, in fewer passes: one ``bytes.translate`` gives
    each byte of a word lower-cased and each blank as 0, so the byte polynomial's prefix sum and the word edges
    both come from it; ASCII texts skip ``str.lower`` (:func:`_batch_bytes`; ``chars``: the texts' lengths)."""
    raw, lens = _batch_bytes(texts, chars)
    if b"\x00" in raw:
        return word_hashes(texts, "alnum")
    z = np.frombuffer(raw.translate(_WORD_OR_ZERO), dtype=np.uint8)
    solid = z.astype(bool)
    # the edges alternate: byte edge[2k] + 1 starts a word and byte edge[2k + 1] + 1 is the blank after it
    edge = np.flatnonzero(solid[1:] != solid[:-1])
    words, starts = edge_word_hashes(z, edge)
    # each text's first word starts after the previous text's last separator
    offsets = np.empty(len(texts) + 1, dtype=np.int64)
    offsets[0] = 0
    np.cumsum(lens, out=offsets[1:])
    offsets[1:] = np.searchsorted(starts, offsets[1:], side="left")
    return words, offsets


if numba is not None:
    _MIX_1, _MIX_2 = (np.uint64(m) for m in MIX_MULTIPLIERS)
    _SHIFT_1, _SHIFT_2, _SHIFT_3 = np.uint64(30), np.uint64(27), np.uint64(31)

    @numba.njit(cache=True, nogil=True, inline="always")
    def _mix64(x):
        """splitmix64's finaliser (texthash.mix64_inplace) on one uint64."""
        x ^= x >> _SHIFT_1
        x *= _MIX_1
        x ^= x >> _SHIFT_2
        x *= _MIX_2
        x ^= x >> _SHIFT_3
        return x

    @numba.njit(cache=True, nogil=True)
    def _shingle_kernel(raw, bounds, table, pw, inv, qw, n):
        """``(hashes, offsets)`` of :func:`shingle_hashes` from :func:`_batch_bytes`' bytes ``raw`` (uint8) and
        ``bounds`` (document d's bytes lie between the blanks ``raw[bounds[d]]`` and ``raw[bounds[d + 1]]``);
        ``table``: each byte of a word to itself lower-cased, a blank to 0; ``pw``, ``inv``: the byte base's powers
        and inverse powers, ``qw``: the word base's powers (as long as a document plus one, and n).

        One document at a time, with positions counted from its leading blank, in short loops without a branch on
        the data: each byte's ``value * p**i``; their running sum, recorded at every
        blank/word edge (the edges alternate: a word's first byte, the blank after it); each word of bytes s..e-1
        as ``mix64((P[e] - P[s]) * p**-s + (e - s))`` (texthash.edge_word_hashes); each window of n words as
        ``mix64(sum_j w[i + j] * q**j + n)`` (texthash.combine); fewer than n words give one hash of all of them
        plus their count; no words, no hash."""
        n_docs = bounds.size - 1
        longest = 1
        for d in range(n_docs):
            longest = max(longest, bounds[d + 1] - bounds[d] + 1)
        value = np.empty(longest, dtype=np.uint8)
        term = np.empty(longest, dtype=np.uint64)
        edge = np.empty(longest + 1, dtype=np.int64)
        at_edge = np.empty(longest + 1, dtype=np.uint64)
        words = np.empty(longest, dtype=np.uint64)
        cap = raw.size // 4 + n_docs + 16
        out = np.empty(cap, dtype=np.uint64)
        offsets = np.zeros(n_docs + 1, dtype=np.int64)
        pos = 0
        for d in range(n_docs):
            span = bounds[d + 1] - bounds[d] + 1
            doc = raw[bounds[d]:bounds[d] + span]
            for i in range(span):
                v = table[doc[i]]
                value[i] = v
                term[i] = np.uint64(v) * pw[i]
            total = np.uint64(0)
            k = 0
            prev = False
            for i in range(span):
                solid = value[i] != 0
                edge[k] = i
                at_edge[k] = total
                k += solid ^ prev
                prev = solid
                total += term[i]
            n_words = k // 2  # the span ends in a blank, so the edges pair up
            for w in range(n_words):
                s = edge[2 * w]
                words[w] = _mix64((at_edge[2 * w + 1] - at_edge[2 * w]) * inv[s] + np.uint64(edge[2 * w + 1] - s))
            if pos + n_words > cap:
                cap = max(2 * cap, pos + n_words)
                grown = np.empty(cap, dtype=np.uint64)
                grown[:pos] = out[:pos]
                out = grown
            if n_words >= n:
                m = n_words - n + 1
                keys = out[pos:pos + m]
                keys[:] = words[:m]
                for j in range(1, n):
                    q = qw[j]
                    for i in range(m):
                        keys[i] += words[i + j] * q
                length = np.uint64(n)
                for i in range(m):
                    keys[i] = _mix64(keys[i] + length)
                pos += m
            elif n_words > 0:
                key = np.uint64(0)
                for j in range(n_words):
                    key += words[j] * qw[j]
                out[pos] = _mix64(key + np.uint64(n_words))
                pos += 1
            offsets[d + 1] = pos
        return out[:pos], offsets


def shingle_hashes_numba(texts: Sequence[str], ngram: int,
                         chars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shingle_hashes` by the Numba kernel (:func:`_shingle_kernel`: one compiled call for the batch, no
    NumPy call per pass); a batch holding a NUL byte (a word byte that the kernel's table maps to 0) takes
    :func:`shingle_hashes_numpy`."""
    if ngram < 1:
        raise ValueError(f"n-gram size must be >= 1, got {ngram}")
    chars = _lengths(texts) if chars is None else chars
    raw, lens = _batch_bytes(texts, chars)
    if b"\x00" in raw:
        return shingle_hashes_numpy(texts, ngram, chars)
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens, out=bounds[1:])
    pw, inv, qw, _ = hash_powers(max(ngram, int(lens.max(initial=0)) + 1))
    return _shingle_kernel(np.frombuffer(raw, dtype=np.uint8), bounds, _WORD_OR_ZERO_ARRAY, pw, inv, qw, ngram)


def _slices(chars: np.ndarray, size: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` of the slices ``texthash.text_chunks(texts, size)`` cuts, from the texts' lengths ``chars``:
    one ``searchsorted`` per slice instead of a Python step per text."""
    cum = np.cumsum(chars)
    out, lo = [], 0
    while lo < cum.size:
        base = int(cum[lo - 1]) if lo else 0
        hi = min(int(np.searchsorted(cum, base + size, side="left")) + 1, cum.size)
        out.append((lo, hi))
        lo = hi
    return out


def _lengths(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))


def shingle_hashes(texts: Sequence[str], ngram: int, chars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``texthash.ngram_hashes(texts, ngram, mode="alnum", short="whole")``, value for value: by the Numba kernel
    where Numba is installed (:func:`shingle_hashes_numba`), else with NumPy (:func:`shingle_hashes_numpy`).
    ``chars``: the texts' lengths, if known."""
    if numba is None:
        return shingle_hashes_numpy(texts, ngram, chars)
    return shingle_hashes_numba(texts, ngram, chars)


def shingle_hashes_numpy(texts: Sequence[str], ngram: int,
                         chars: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shingle_hashes` with NumPy: the words of ``_BYTE_CHUNK`` characters at a time (:func:`_word_hashes`;
    the byte arrays stay in cache), their n-grams in one pass over all of them (fewer NumPy calls per document)."""
    chars = _lengths(texts) if chars is None else chars
    parts = [_word_hashes(texts[lo:hi], chars[lo:hi]) for lo, hi in _slices(chars, _BYTE_CHUNK)]
    if len(parts) == 1:
        return combine(*parts[0], ngram, "whole")
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    lo, base = 0, 0
    for w, off in parts:
        offsets[lo + 1:lo + off.size] = off[1:] + base
        lo, base = lo + off.size - 1, base + w.size
    words = np.concatenate([w for w, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
    return combine(words, offsets, ngram, "whole")


def signatures_from_hashes(h: np.ndarray, offsets: np.ndarray, params: MinHashParams) -> np.ndarray:
    """``(docs, bands*rows)`` uint32 signatures from shingle hashes grouped by ``offsets``; a document
    without shingles gets all values 2**32-1 (it is nobody's candidate: :func:`band_keys` marks it).

    A block of shingles at a time, a few hash functions at a time: ``a_k * s + b_k`` (mod 2**64) for every
    shingle into one buffer that stays in cache, each document's minimum by one reduceat along the shingles,
    folded into its row (a document may span blocks).  The minimum is taken over the full 64 bits and shifted
    after: the high half of the smallest value is the smallest high half."""
    a, b = params.coefficients()
    n_docs, n_hashes = offsets.size - 1, params.num_hashes
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    starts = offsets[nonempty]
    total = int(offsets[-1])
    low = np.full((n_hashes, nonempty.size), np.iinfo(np.uint64).max, dtype=np.uint64)  # per hash, per document
    buf = np.empty((_HASHES_PER_PASS, min(total, _SHINGLES_PER_BLOCK)), dtype=np.uint64)
    for lo in range(0, total, _SHINGLES_PER_BLOCK):
        hi = min(lo + _SHINGLES_PER_BLOCK, total)
        # the nonempty documents with shingles in [lo, hi): the last one starting at or before lo, up to hi
        first = max(int(np.searchsorted(starts, lo, side="right")) - 1, 0)
        stop = int(np.searchsorted(starts, hi, side="left"))
        seg = np.maximum(starts[first:stop], lo) - lo
        for k in range(0, n_hashes, _HASHES_PER_PASS):
            kk = min(k + _HASHES_PER_PASS, n_hashes)
            v = buf[:kk - k, :hi - lo]
            np.multiply(h[lo:hi], a[k:kk, None], out=v)
            v += b[k:kk, None]
            block_min = np.minimum.reduceat(v, seg, axis=1)
            np.minimum(low[k:kk, first:stop], block_min, out=low[k:kk, first:stop])
    out = np.full((n_docs, n_hashes), np.iinfo(np.uint32).max, dtype=np.uint32)
    out[nonempty] = (low >> np.uint64(32)).T
    return out


def signatures_rensa(h: np.ndarray, offsets: np.ndarray, params: MinHashParams) -> np.ndarray:
    """The same shape from rensa's R-MinHash over the same shingle hashes (its own hash family; Rust, SIMD)."""
    import rensa  # optional dependency (the `data` extra)

    row_offsets = np.asarray(offsets, dtype=np.int64).view(np.uint64)  # >= 0: the same values unsigned
    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(h, row_offsets, num_perm=params.num_hashes,
                                                           seed=params.seed)
    # the matrix comes out as Python lists of ints only: the rows are spliced into one list by C-level extends,
    # which array() reads straight from the list
    values: list = []
    list(map(values.extend, m.to_rows()))
    flat = array.array("I", values)
    out = np.frombuffer(flat, dtype=np.uint32).reshape(offsets.size - 1, params.num_hashes).copy()
    out[np.diff(offsets) == 0] = np.iinfo(np.uint32).max
    return out


BACKENDS = {"numpy": signatures_from_hashes, "rensa": signatures_rensa}


def signatures(texts: Sequence[str], params: MinHashParams, backend: str = "rensa") -> np.ndarray:
    """``(len(texts), bands*rows)`` uint32 signatures; ``backend``: ``"rensa"`` (fast) or ``"numpy"`` (this
    module's hash family, checked value for value against :func:`signature_oracle`).  Any number of texts:
    they are hashed a chunk at a time, so the hashing's arrays stay in cache."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown minhash backend {backend!r} (choose from {', '.join(BACKENDS)})")
    sign = BACKENDS[backend]
    chars = _lengths(texts)
    parts = [sign(*shingle_hashes(texts[lo:hi], params.ngram, chars[lo:hi]), params)
             for lo, hi in _slices(chars, _TEXT_CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, params.num_hashes), dtype=np.uint32)


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """``(docs, bands)`` uint64 keys: band j's ``rows`` values folded into 64 bits (band index mixed in).
    Rows of an empty document (all values 2**32-1) get key 0, which callers skip."""
    n = sigs.shape[0]
    s = sigs.reshape(n, params.bands, params.rows)
    key = np.zeros((n, params.bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(params.rows):
            key *= np.uint64(0x100000001B3)
            key += s[:, :, r]
            mix64_inplace(key)
        key ^= np.arange(1, params.bands + 1, dtype=np.uint64)
        mix64_inplace(key)
        key |= np.uint64(1)
    key[(sigs == np.iinfo(np.uint32).max).all(axis=1)] = 0
    return key


def text_band_keys(texts: Sequence[str], params: MinHashParams, backend: str = "rensa") -> np.ndarray:
    """:func:`band_keys` of :func:`signatures`: ``(len(texts), bands)`` uint64 keys, 0 for a text without words."""
    return band_keys(signatures(texts, params, backend), params)


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """``(pairs, 2)`` int64 document indices ``(i, j)``, i < j, each once: j's band key equals the key of the
    previous document (in index order) holding it in that band, so a group of k documents sharing a key gives
    k - 1 pairs that connect it.  ``keys``: :func:`band_keys`' output (the band index is mixed into every key,
    so two bands never share one); keys 0 are skipped."""
    n, bands = keys.shape
    flat = keys.ravel()
    # an unstable sort of the row-major keys, then the positions of each run of equal keys re-sorted by index:
    # the order of a stable sort wherever it matters (equal keys ordered by document)
    order = np.argsort(flat)
    k = flat[order]
    same = np.flatnonzero((k[1:] == k[:-1]) & (k[1:] != 0))
    if same.size:
        run = np.zeros(k.size, dtype=bool)
        run[same] = True
        run[same + 1] = True
        pos = np.flatnonzero(run)
        order[pos] = order[pos][np.lexsort((order[pos], k[pos]))]
    # each pair once, in (i, j) order: i * n + j is unique and sorts as (i, j) does
    code = np.unique(order[same] // bands * n + order[same + 1] // bands)
    return np.stack([code // n, code % n], axis=1)


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
