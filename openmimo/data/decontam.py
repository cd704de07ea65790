"""Decontamination: drop training text that shares a word n-gram (16 by default) with an evaluation item.

One module for pre-training, SFT and RL data alike.  :class:`Decontaminator` is built from evaluation
items grouped by task (``{"math_500": [problem, solution, ...], ...}``):

- an item of at least ``ngram`` words contributes all its n-grams; a training text is contaminated when
  any of its n-grams is among them;
- a shorter item of at least ``min_exact_words`` words is matched exactly: a training text is contaminated
  when it contains the item's whole word sequence (so "What is 7 + 5?" is caught in any page quoting it;
  looked up by its first ``min_exact_words`` words, then checked whole);
- shorter items still (a bare answer such as "12") are not checked; :attr:`Decontaminator.skipped_short`
  counts them.

Words are normalised by :mod:`openmimo.data.texthash` (``mode="alnum"``: lower-cased, ASCII punctuation
dropped, digits kept, so "2 + 3 = 5" and "2 + 3 = 6" are different text; ``"whitespace"`` keeps
punctuation, as the embedded world's splits are defined).  n-grams are 64-bit keys (the n-gram hash before
its mixer, :func:`openmimo.data.texthash.window_keys`: one subtraction and one product per window from a
prefix sum of the word hashes), vectorised over a batch of texts: every window of the batch, across documents
too, is tested against a bitmap prefilter (about 64 bits per key); the few that pass and lie inside one
document are looked up exactly in a sorted array.  :func:`contaminated_oracle` is the plain-Python definition
on word tuples that the tests compare against.

:func:`eval_items` gathers the evaluation items: every task of :mod:`openmimo.eval.tasks` whose file is under
the benchmarks folder (``../shared/benchmarks``; none when it is absent) and the embedded world's held-out splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from openmimo.data.texthash import normalize_words, span_keys, text_chunks, window_keys, word_hashes, word_prefix
from openmimo.jsonl import read_jsonl

_TEXT_CHUNK = 1 << 17  # characters hashed at once (texthash.text_chunks)


class _Prefilter:
    """A bitmap over keys: the top bits of a key pick a byte, its low 3 bits the bit in it.  Sized at
    about 64 bits per key (false positive rate ~1.5%), from 2**10 to 2**25 bits (4 MB): a random read per
    window of text, so it is kept small enough for the cache and the TLB."""

    def __init__(self, keys: np.ndarray):
        bits = min(25, max(10, (64 * max(1, keys.size) - 1).bit_length()))
        self.shift = np.uint64(64 - bits + 3)
        slots = np.zeros((1 << (bits - 3), 8), dtype=bool)
        slots[(keys >> self.shift).astype(np.int64), (keys & np.uint64(7)).astype(np.int64)] = True
        self.bytes = np.packbits(slots, axis=1, bitorder="little").ravel()

    def candidates(self, keys: np.ndarray) -> np.ndarray:
        """Positions in ``keys`` that may be in the set (all of those that are)."""
        b = self.bytes.take((keys >> self.shift).view(np.int64))  # < 2**22: the same bits as int64
        b >>= (keys & np.uint64(7)).astype(np.uint8)
        b &= 1
        return np.flatnonzero(b)


def _inside(offsets: np.ndarray, i: np.ndarray, n: int) -> np.ndarray:
    """Which windows ``words[i:i + n]`` lie inside one document (``offsets`` as word_hashes gives them)."""
    doc = np.searchsorted(offsets, i, side="right") - 1
    return i + n <= offsets[doc + 1]


class Decontaminator:
    def __init__(self, items: Mapping[str, Iterable[str]], ngram: int = 16, mode: str = "alnum",
                 min_exact_words: int | None = 6):
        if ngram < 1:
            raise ValueError(f"decontamination ngram must be >= 1, got {ngram}")
        if min_exact_words is not None and not 1 <= min_exact_words <= ngram:
            raise ValueError(f"min_exact_words must be between 1 and ngram ({ngram}), got {min_exact_words}")
        self.ngram, self.mode, self.min_exact_words = ngram, mode, min_exact_words
        self.tasks = sorted(items)
        self.items_per_task = {t: 0 for t in self.tasks}
        self.skipped_short = 0
        grams, gram_task = [], []  # n-gram keys of long items
        short = []  # (prefix key, length, whole-item key, task) of short items
        for ti, task in enumerate(self.tasks):
            texts = [t for t in items[task] if isinstance(t, str) and t.strip()]
            self.items_per_task[task] = len(texts)
            if not texts:
                continue
            w, off = word_hashes(texts, mode)
            prefix = word_prefix(w)
            k = window_keys(prefix, ngram)
            k = k[_inside(off, np.arange(k.size), ngram)]  # short items give no n-grams here
            grams.append(k)
            gram_task.append(np.full(k.size, ti, dtype=np.int32))
            counts = np.diff(off)
            for i in np.flatnonzero((counts < ngram) & (counts > 0)):
                n = int(counts[i])
                if min_exact_words is None or n < min_exact_words:
                    self.skipped_short += 1
                    continue
                s0 = off[i:i + 1]
                short.append((int(span_keys(prefix, s0, s0 + min_exact_words)[0]), n,
                              int(span_keys(prefix, s0, s0 + n)[0]), ti))
        k = np.concatenate(grams) if grams else np.zeros(0, np.uint64)
        t = np.concatenate(gram_task) if gram_task else np.zeros(0, np.int32)
        order = np.lexsort((t, k))
        self.grams, self.gram_task = k[order], t[order]
        short.sort()
        self.short_prefix = np.array([x[0] for x in short], dtype=np.uint64)
        self.short_len = np.array([x[1] for x in short], dtype=np.int64)
        self.short_key = np.array([x[2] for x in short], dtype=np.uint64)
        self.short_task = np.array([x[3] for x in short], dtype=np.int32)
        self._filters = (_Prefilter(self.grams), _Prefilter(self.short_prefix))
        self.dropped: dict[str, int] = {}  # corpus -> texts refused by clean()

    @property
    def num_grams(self) -> int:
        return int(self.grams.size + self.short_prefix.size)

    @staticmethod
    def _lookup(table: np.ndarray, filt: _Prefilter, keys: np.ndarray, offsets: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray]:
        """Windows (start positions in ``keys``) inside one document whose key is in sorted ``table``, and
        the first table index of each."""
        cand = filt.candidates(keys)
        cand = cand[_inside(offsets, cand, n)]
        if cand.size == 0 or table.size == 0:
            return cand[:0], cand[:0]
        k = keys[cand]
        pos = np.minimum(np.searchsorted(table, k), table.size - 1)
        ok = table[pos] == k
        return cand[ok], pos[ok]

    def hits(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """For each text, the evaluation tasks it overlaps (empty tuple: clean)."""
        if not texts or self.num_grams == 0:
            return [()] * len(texts)
        return [h for chunk in text_chunks(texts, _TEXT_CHUNK) for h in self._hits(chunk)]

    def _hits(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        out: list[set] = [set() for _ in texts]
        w, off = word_hashes(texts, self.mode)
        prefix = word_prefix(w)
        if self.grams.size:
            found = self._lookup(self.grams, self._filters[0], window_keys(prefix, self.ngram), off, self.ngram)
            for i, p in zip(*found):
                d = int(np.searchsorted(off, i, side="right")) - 1
                key = self.grams[p]
                while p < self.grams.size and self.grams[p] == key:
                    out[d].add(self.tasks[self.gram_task[p]])
                    p += 1
        if self.short_prefix.size:
            n = self.min_exact_words
            found = self._lookup(self.short_prefix, self._filters[1], window_keys(prefix, n), off, n)
            for i, p in zip(*found):
                d = int(np.searchsorted(off, i, side="right")) - 1
                key = self.short_prefix[p]
                while p < self.short_prefix.size and self.short_prefix[p] == key:
                    end = i + int(self.short_len[p])
                    if end <= off[d + 1] and span_keys(prefix, i, end) == self.short_key[p]:
                        out[d].add(self.tasks[self.short_task[p]])
                    p += 1
        return [tuple(sorted(x)) for x in out]

    def clean(self, text: str, corpus: str) -> bool:
        """True if ``text`` may be used for training; counts a drop under ``corpus`` otherwise."""
        if not self.hits([text])[0]:
            return True
        self.dropped[corpus] = self.dropped.get(corpus, 0) + 1
        return False


def contaminated_oracle(text: str, items: Iterable[str], ngram: int = 16, mode: str = "alnum",
                        min_exact_words: int | None = 6) -> bool:
    """The definition: word tuples and Python sets (slow)."""
    words = [x for x in normalize_words(text, mode) if x]
    grams = {}
    for item in items:
        iw = [x for x in normalize_words(item, mode) if x]
        k = len(iw) if len(iw) < ngram else ngram
        if k == 0 or (len(iw) < ngram and (min_exact_words is None or k < min_exact_words)):
            continue
        grams.setdefault(k, set()).update(tuple(iw[i:i + k]) for i in range(len(iw) - k + 1))
    return any(tuple(words[i:i + k]) in g for k, g in grams.items() for i in range(len(words) - k + 1))


# ---- evaluation items -----------------------------------------------------------------------------------
def benchmark_items(benchmarks_dir: str | Path) -> dict[str, list[str]]:
    """``{task: texts}`` of every evaluation task (:mod:`openmimo.eval.tasks`) whose file is under
    ``benchmarks_dir``; ``{}`` when the folder is absent.  The world's tasks are read by :func:`world_items`."""
    from openmimo.eval.tasks import TASKS, iter_texts  # the task registry (rewards, prompts) only loads when asked

    root = Path(benchmarks_dir)
    if not root.is_dir():
        return {}
    return {name: list(iter_texts(name, data_dir=root)) for name, task in TASKS.items()
            if not name.startswith("world") and task.default_path(root).is_file()}


def world_items(world_dir: str | Path) -> dict[str, list[str]]:
    """The embedded world's held-out splits (math and code val/test), as ``world.eval_ngram_text`` defines them."""
    from openmimo.data.world import eval_ngram_text  # the world generator is only needed when a world is given

    root = Path(world_dir)
    out = {}
    for kind in ("math", "code"):
        for split in ("val", "test"):
            p = root / kind / f"{split}.jsonl"
            if p.is_file():
                out[f"world_{kind}_{split}"] = [eval_ngram_text(r) for r in read_jsonl(p)]
    return out


def eval_items(benchmarks_dir: str | Path | None = None, world_dir: str | Path | None = None) -> dict[str, list[str]]:
    items = benchmark_items(benchmarks_dir) if benchmarks_dir else {}
    if world_dir:
        items.update(world_items(world_dir))
    return items
