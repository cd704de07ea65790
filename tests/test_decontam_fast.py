"""Decontamination's fast path (window keys, bitmap prefilter, chunked batches) against the slow definitions."""

import random
import sys

import numpy as np
import pytest

from openmimo.data import decontam, texthash
from openmimo.data.decontam import Decontaminator, contaminated_oracle


def test_str_lower_never_returns_ascii_capitals():
    # word_hashes hashes the lower-cased bytes as they are: the byte table's A-Z mapping must be a no-op there
    caps = {chr(c) for c in range(ord("A"), ord("Z") + 1)}
    assert not [c for c in range(sys.maxunicode + 1) if caps & set(chr(c).lower())]


def _words(r, n):
    vocab = ["a", "B", "c", "1", "2", "x.", "-3", "é", "Σ", "ΑΣ", "=", "x+y", "İ", "\u00a0", "\t", "(z)"]
    return " ".join(r.choice(vocab) for _ in range(n))


@pytest.mark.parametrize("mode", texthash.MODES)
@pytest.mark.parametrize("n", (1, 3, 6, 16))
def test_window_and_span_keys_give_the_ngram_hashes(mode, n):
    r = random.Random(n)
    texts = [_words(r, r.randint(0, 40)) for _ in range(50)]
    w, off = texthash.word_hashes(texts, mode)
    prefix = texthash.word_prefix(w)
    keys = texthash.window_keys(prefix, n)
    h, hoff = texthash.combine(w, off, n)
    for d in range(len(texts)):
        i = np.arange(off[d], off[d + 1] - n + 1)
        want = h[hoff[d]:hoff[d + 1]].tolist()
        assert texthash.mix64(keys[i] + np.uint64(n)).tolist() == want
        assert texthash.mix64(texthash.span_keys(prefix, i, i + n) + np.uint64(n)).tolist() == want
    assert texthash.window_keys(texthash.word_prefix(w[:n - 1]), n).size == 0


@pytest.mark.parametrize("mode", texthash.MODES)
@pytest.mark.parametrize("chunk", (1, 50, 1 << 17))
def test_hits_per_task_equal_the_oracle(mode, chunk, monkeypatch):
    monkeypatch.setattr(decontam, "_TEXT_CHUNK", chunk)  # chunk boundaries anywhere in the batch
    r = random.Random(7)
    tasks = {t: [_words(r, r.randint(1, 20)) for _ in range(15)] for t in ("p", "q", "r")}
    tasks["q"].append(tasks["p"][0])  # an item in two tasks
    texts = [_words(r, r.randint(0, 60)) for _ in range(150)]
    texts += [f"{_words(r, 3)} {r.choice(tasks[t])} {_words(r, 3)}" for t in tasks for _ in range(5)]
    d = Decontaminator(tasks, ngram=8, mode=mode, min_exact_words=3)
    want = [tuple(t for t in sorted(tasks) if contaminated_oracle(x, tasks[t], 8, mode, 3)) for x in texts]
    assert d.hits(texts) == want
    assert sum(map(bool, want)) >= 15
    assert d.hits([]) == [] and d.hits([""]) == [()]
