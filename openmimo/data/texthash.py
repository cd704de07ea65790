"""Vectorised word and word-n-gram hashing of many documents at once (NumPy, no Python loop per word).

Dedup (MinHash shingles) and decontamination (16-gram overlap) both need the 64-bit hashes of every
word n-gram of every document.  :func:`ngram_hashes` computes them for a batch of texts:

1. each text is lower-cased (``str.lower``) and UTF-8 encoded; the batch is one byte string;
2. a byte table maps ASCII whitespace (mode ``"whitespace"``) or ASCII whitespace and punctuation other than
   the math operators ``+-*/=^<>%`` (mode ``"alnum"``, where each operator is a word of its own) to a space;
   digits and non-ASCII bytes are kept, so "x = 12" and "x = 13" differ, and so do "36" and "-36";
3. a word is a maximal run of non-space bytes; its hash is a polynomial hash mod 2**64 of its bytes,
   taken from a prefix sum (``hash(s, e) = (P[e] - P[s]) * p**-s``, p odd so it is invertible mod 2**64)
   and finished by the splitmix64 mixer;
4. n-gram hashes combine n consecutive word hashes the same way, never across documents.

The fast path spaces out the operators (``bytes.replace``; a word's hash does not depend on its position), so
every word lies between blanks and the word edges, found from a blank/solid byte mask (``bytes.translate``) in
one scan, alternate start, end, start, ...; it hashes the lower-cased bytes themselves: ``str.lower`` never
returns A-Z (a test checks every code point), so inside a word the table's lower-casing is the identity.  For lookups of many n-grams (decontamination)
:func:`word_prefix` and :func:`window_keys` give each window's polynomial part (a "key") without the length term
and the mixer; for a fixed n, equal keys are equal n-gram hashes (``hash = mix64(key + n)``, a bijection).

:func:`ngrams_oracle` is the obviously-correct Python version (``str.split`` on the same normalised
text, ``hash_words`` on each n-gram); the tests hold the two equal.  Unicode whitespace other than
ASCII's (e.g. U+00A0) is part of a word here, unlike ``str.split`` (the oracle mirrors this).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from itertools import repeat
from typing import Sequence

import numpy as np

MODES = ("alnum", "whitespace")
_P = np.uint64(0x100000001B3)  # byte-level polynomial base (odd)
_Q = np.uint64(0x9E3779B97F4A7C15)  # word-level polynomial base (odd)
_MASK = (1 << 64) - 1
OPERATORS = b"+-*/=^<>%"  # mode "alnum": math operators are words of their own (so "-36" is not "36")
_OP_SPLIT = re.compile(rb"[" + re.escape(OPERATORS) + rb"]|[^" + re.escape(OPERATORS) + rb"]+")


_BLAKE64 = hashlib.blake2b(digest_size=8)
_HASH_CHUNK = 1024  # items hashed per round of the C-level maps in hash64_encoded (their states stay in cache)


def hash64(text: str) -> int:
    """The 64-bit key of a string (dedup keys, document keys): the 8-byte BLAKE2b of its UTF-8, lone surrogates
    passed through, read little-endian."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def hash64_encoded(items, prefix: bytes = b"") -> np.ndarray:
    """uint64 array of :func:`hash64` of ``prefix`` + each string, the strings given as their UTF-8 bytes (a
    sequence of bytes-like objects).  One BLAKE2b state, fed ``prefix`` once, is copied per item; copying,
    feeding and finishing run as C-level ``map`` calls over chunks of items, no Python bytecode per item."""
    start = _BLAKE64.copy()
    start.update(prefix)
    cls = type(start)
    copy, update, digest = cls.copy, cls.update, cls.digest
    out = []
    for lo in range(0, len(items), _HASH_CHUNK):
        chunk = items[lo:lo + _HASH_CHUNK]
        states = list(map(copy, repeat(start, len(chunk))))
        deque(map(update, states, chunk), maxlen=0)
        out.append(b"".join(map(digest, states)))
    return np.frombuffer(b"".join(out), dtype="<u8").astype(np.uint64)


def _table(mode: str) -> np.ndarray:
    t = np.arange(256, dtype=np.uint8)
    t[ord("A"):ord("Z") + 1] += 32
    blank = b" \t\n\r\x0b\x0c"
    if mode == "alnum":
        blank += bytes(c for c in range(33, 127) if not chr(c).isalnum() and c not in OPERATORS)
    elif mode != "whitespace":
        raise ValueError(f"unknown normalisation mode {mode!r} (choose from {', '.join(MODES)})")
    t[list(blank)] = 32
    return t


TRANSLATE_TABLES = {m: _table(m) for m in MODES}  # mode -> the byte map of _table (minhash's shingle scan reads it)


def _solid(mode: str) -> bytes:
    """``bytes.translate`` table: 1 for a byte that is part of a word under :func:`_table` (operators too), else 0."""
    return (TRANSLATE_TABLES[mode] != 32).astype(np.uint8).tobytes()


_SOLID = {m: _solid(m) for m in MODES}
_SPACED_OPS = [(bytes([c]), b" %c " % c) for c in OPERATORS]


def _inverse(a: int) -> int:
    return pow(a, -1, 1 << 64)


MIX_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's finaliser (minhash's kernel uses them too)


def mix64_inplace(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array, in place (returns it)."""
    t = x >> np.uint64(30)
    x ^= t
    x *= np.uint64(MIX_MULTIPLIERS[0])
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= np.uint64(MIX_MULTIPLIERS[1])
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrapping arithmetic)."""
    return mix64_inplace(np.array(x, dtype=np.uint64))


def _powers(base: np.uint64, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``base**i`` and ``base**-i`` mod 2**64 for i in [0, n]."""
    pw = np.full(n + 1, base, dtype=np.uint64)
    pw[0] = 1
    inv = np.full(n + 1, np.uint64(_inverse(int(base))), dtype=np.uint64)
    inv[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(pw, dtype=np.uint64), np.cumprod(inv, dtype=np.uint64)


_POW_CACHE: list = [np.ones(1, np.uint64)] * 4


def hash_powers(n: int):
    """Byte-level and word-level powers for arrays up to ``n`` long (cached; grown to the next power of two)."""
    if _POW_CACHE[0].size <= n:
        size = 1 << max(12, (n + 1).bit_length())
        _POW_CACHE[:] = (*_powers(_P, size), *_powers(_Q, size))
    return _POW_CACHE


def _segment_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, pw: np.ndarray,
                    inv: np.ndarray) -> np.ndarray:
    """Polynomial hash of ``values[s:e]`` for each (s, e), then mixed (uint64)."""
    with np.errstate(over="ignore"):
        prefix = np.zeros(values.size + 1, dtype=np.uint64)
        np.cumsum(values.astype(np.uint64) * pw[:values.size], out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * inv[starts]
        return mix64(h + (ends - starts).astype(np.uint64))


def word_hashes(texts: Sequence[str], mode: str = "alnum") -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, offsets)``: uint64 hashes of all words of all ``texts`` in order, and int64 ``offsets``
    (len(texts) + 1) so that document i's words are ``hashes[offsets[i]:offsets[i+1]]``."""
    enc = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    if mode == "alnum":
        # an operator is a word of its own: spaced out, every word lies between blanks (a word's hash does not
        # depend on where it lies)
        joined = b" ".join(enc)
        for op, sp in _SPACED_OPS:
            if op in joined:
                enc = [e.replace(op, sp) for e in enc]
    # a blank before the first and after the last text: every word lies between blanks of the batch
    raw = b" ".join([b"", *enc, b""])
    lens = np.fromiter((len(e) + 1 for e in enc), dtype=np.int64, count=len(enc))
    buf = np.frombuffer(raw, dtype=np.uint8)
    solid = np.frombuffer(raw.translate(_SOLID[mode]), dtype=np.uint8)
    # the edges alternate: byte edge[2k] + 1 starts a word and byte edge[2k + 1] + 1 is the blank after it
    edge = np.flatnonzero(solid[1:] != solid[:-1])
    hashes, starts = edge_word_hashes(buf, edge)
    doc_ends = np.cumsum(lens)  # each document's first word starts after the previous one's last separator
    offsets = np.empty(len(enc) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = np.searchsorted(starts, doc_ends, side="left")
    return hashes, offsets


def edge_word_hashes(values: np.ndarray, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mixed hashes of the words of ``values`` (uint8, the batch's bytes) that ``edge`` bounds: byte edge[2k] + 1
    starts word k and byte edge[2k + 1] + 1 is the blank after it.  The word of bytes s..e-1 hashes as its byte
    polynomial over p, scaled by p**-s, plus its length; returns (hashes, word starts - 1)."""
    starts = np.ascontiguousarray(edge[0::2])  # read by a take here and by the caller's searchsorted
    pw, inv, _, _ = hash_powers(values.size)
    with np.errstate(over="ignore"):
        # prefix[i]: the polynomial of bytes 0..i, so the word of bytes s..e-1 is (prefix[e-1] - prefix[s-1]) * p**-s
        prefix = np.empty(values.size, dtype=np.uint64)
        prefix[:] = values  # widen first: a uint8 * uint64 product would cast through a buffer
        prefix *= pw[:values.size]
        np.cumsum(prefix, out=prefix)
        at = prefix.take(edge)
        hashes = np.subtract(at[1::2], at[0::2])
        hashes *= inv[1:].take(starts)
        hashes += (edge[1::2] - starts).view(np.uint64)
    mix64_inplace(hashes)
    return hashes, starts


def combine(words: np.ndarray, offsets: np.ndarray, n: int, short: str = "drop") -> tuple[np.ndarray, np.ndarray]:
    """n-gram hashes from word hashes: ``(hashes, offsets)`` like :func:`word_hashes`.

    ``short``: what a document of fewer than ``n`` (but at least one) words gives — ``"drop"``: nothing;
    ``"whole"``: one hash of all its words (MinHash's rule, so a short page still has a signature).

    Every window of the batch gets its key (:func:`window_keys`: one subtraction and product each); the windows
    that cross a document's end — the last ``n - 1`` starts before it — are dropped, then the rest are mixed.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    if short not in ("drop", "whole"):
        raise ValueError(f"short must be 'drop' or 'whole', got {short!r}")
    counts = np.diff(offsets)
    per_doc = np.maximum(counts - n + 1, 0)
    prefix = word_prefix(words)
    keys = window_keys(prefix, n)
    if n > 1 and counts.size > 1:
        # starts e - n + 1 .. e - 1 before each inner document end e, from the document's own start on
        cross = offsets[1:-1, None] - np.arange(1, n)
        cross = cross[cross >= offsets[:-2, None]]
        keep = np.ones(keys.size, dtype=bool)
        keep[cross[cross < keys.size]] = False
        keys = keys[keep]
    with np.errstate(over="ignore"):
        keys += np.uint64(n)
    if short == "whole":
        few = np.flatnonzero((counts > 0) & (counts < n))
        if few.size:
            first = np.zeros(counts.size + 1, dtype=np.int64)
            np.cumsum(per_doc, out=first[1:])
            with np.errstate(over="ignore"):
                whole = span_keys(prefix, offsets[few], offsets[few + 1]) + counts[few].view(np.uint64)
            keys = np.insert(keys, first[few], whole)
            per_doc[few] = 1
    out_offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(per_doc, out=out_offsets[1:])
    return mix64_inplace(keys), out_offsets


def span_hashes(words: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The n-gram hash (as :func:`combine` computes it) of ``words[s:e]`` for each (s, e)."""
    _, _, qw, qinv = hash_powers(words.size)
    return _segment_hashes(words, starts, ends, qw, qinv)


def text_chunks(texts: Sequence[str], chars: int):
    """Consecutive slices of ``texts`` of about ``chars`` characters each (at least one text a slice): hashed a
    slice at a time, the arrays stay in cache and NumPy's per-call overhead stays small."""
    lo, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= chars:
            yield texts[lo:i + 1]
            lo, size = i + 1, 0
    if lo < len(texts):
        yield texts[lo:]


def word_prefix(words: np.ndarray) -> np.ndarray:
    """Prefix sums (``len(words) + 1``) of the word-level polynomial, for :func:`window_keys` and :func:`span_keys`."""
    _, _, qw, _ = hash_powers(words.size)
    prefix = np.empty(words.size + 1, dtype=np.uint64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        np.multiply(words, qw[:words.size], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
    return prefix


def window_keys(prefix: np.ndarray, n: int) -> np.ndarray:
    """Key of every window ``words[i:i + n]``, i in [0, len(words) - n], across documents too: the n-gram
    hash before its length term and mixer (:func:`combine`'s hash of the window is ``mix64(key + n)``)."""
    m = prefix.size - n
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    _, _, _, qinv = hash_powers(prefix.size)
    with np.errstate(over="ignore"):
        keys = np.subtract(prefix[n:], prefix[:m])
        keys *= qinv[:m]
    return keys


def span_keys(prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Key (as :func:`window_keys`) of ``words[s:e]`` for each (s, e)."""
    _, _, _, qinv = hash_powers(prefix.size)
    with np.errstate(over="ignore"):
        return (prefix[ends] - prefix[starts]) * qinv[starts]


def ngram_hashes(texts: Sequence[str], n: int, mode: str = "alnum", short: str = "drop"):
    """``(hashes, offsets)`` of the word n-grams of each text (see the module docstring)."""
    w, off = word_hashes(texts, mode)
    return combine(w, off, n, short)


# ---- the slow, obviously-correct version -----------------------------------------------------------------
def normalize_words(text: str, mode: str = "alnum") -> list[bytes]:
    """The words of ``text`` as the fast path sees them (lower-cased, UTF-8, split at the table's spaces;
    in mode ``"alnum"`` each operator character is a word of its own)."""
    words = TRANSLATE_TABLES[mode][np.frombuffer(text.lower().encode("utf-8", "surrogatepass"), dtype=np.uint8)].tobytes().split(b" ")
    if mode == "alnum":
        words = [part for w in words for part in _OP_SPLIT.findall(w)]
    return words


def _poly(values: Sequence[int], base: int) -> int:
    return sum(v * pow(base, i, 1 << 64) for i, v in enumerate(values)) & _MASK


def _mix(x: int) -> int:
    return int(mix64(np.array([x & _MASK], dtype=np.uint64))[0])


def ngrams_oracle(text: str, n: int, mode: str = "alnum", short: str = "drop") -> list[int]:
    """Python loops over the same definition as :func:`ngram_hashes` (one document)."""
    words = [w for w in normalize_words(text, mode) if w]
    wh = [_mix(_poly(list(w), int(_P)) + len(w)) for w in words]
    if len(words) < n:
        spans = [(0, len(wh))] if short == "whole" and wh else []
    else:
        spans = [(i, i + n) for i in range(len(wh) - n + 1)]
    return [_mix(_poly(wh[s:e], int(_Q)) + (e - s)) for s, e in spans]
