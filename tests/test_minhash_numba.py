"""The Numba shingle kernel against the NumPy path and the plain-Python definitions, value for value."""

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openmimo.data import minhash, texthash

numba = pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]
HAS_RENSA = importlib.util.find_spec("rensa") is not None

_WORDS = ["alpha", "Beta", "GAMMA", "x=12", "13", "-36", "straße", "ÉCOLE", "a+b", "(1)", "tab\there", "end.", "",
          "...", "\u00a0nb", "ΣΑΣ", "İstanbul", "ǅ", "ﬁx", "日本語", "emoji🙂", "1<2>3^4%5*6/7", "++", "x_y", "Q",
          "new\nline", "\ud800lone", "w" * 50]


def _random_texts(seed, n, max_words=60):
    r = random.Random(seed)
    out = [" ".join(r.choice(_WORDS) for _ in range(r.randint(0, max_words))) for _ in range(n)]
    return out + ["", "   ", "one", "two words", "a b c d", "Hello, World! 3 + 4 = 7.", "+-*/=^<>%", "A B C D E F"]


def _ascii_texts(seed, n):
    r = random.Random(seed)
    words = ["alpha", "Beta", "GAMMA", "w12", "13", "end.", "(1)", "tab\there", "", "...", "x_y", "Q", "ok!"]
    return [" ".join(r.choice(words) for _ in range(r.randint(0, 40))) for _ in range(n)] + ["", "z", "Y X"]


def _batches():
    return [
        _random_texts(0, 80),  # non-ASCII, operators, lone surrogates, docs shorter than the n-gram, empty docs
        _random_texts(1, 30, max_words=3),  # nearly all docs shorter than the n-gram
        _ascii_texts(2, 60),  # ASCII without operators: one join and encode
        _ascii_texts(3, 20) + ["6x=-36 ok", "a+b"],  # ASCII with operators
        ["", "", ""], ["   ", ".,;"], ["single"], [],
        ["a " * 3000, "b"],  # a word per two bytes: the kernel's output buffer grows
        ["Long" * 3000 + " tail words of a long word doc", "x " * 20 + "é" * 7000],  # words and docs past 4096 bytes
    ]


@pytest.mark.parametrize("n", (1, 2, 3, 5, 16))
def test_numba_shingle_hashes_equal_the_numpy_path_and_the_python_definition(n):
    for texts in _batches():
        h, off = minhash.shingle_hashes_numba(texts, n)
        nh, noff = minhash.shingle_hashes_numpy(texts, n)
        assert h.dtype == np.uint64 and off.dtype == np.int64 and off.shape == (len(texts) + 1,)
        assert np.array_equal(h, nh) and np.array_equal(off, noff), texts
        rh, roff = texthash.ngram_hashes(texts, n, mode="alnum", short="whole")
        assert np.array_equal(h, rh) and np.array_equal(off, roff)
        for i, t in enumerate(texts):
            want = texthash.ngrams_oracle(t, n, "alnum", "whole")
            assert h[off[i]:off[i + 1]].tolist() == want, t
            words = len([w for w in texthash.normalize_words(t) if w])
            assert off[i + 1] - off[i] == (max(words - n + 1, 1) if words else 0)


def test_numba_path_is_the_default_and_a_nul_byte_takes_the_numpy_path(monkeypatch):
    texts = ["null\x00byte Here and more words", "plain words here", "x\x00"]
    h, off = minhash.shingle_hashes(texts, 2)
    for i, t in enumerate(texts):
        assert h[off[i]:off[i + 1]].tolist() == texthash.ngrams_oracle(t, 2, "alnum", "whole")
    calls = []
    monkeypatch.setattr(minhash, "shingle_hashes_numba", lambda *a: calls.append(a) or minhash.shingle_hashes_numpy(*a))
    minhash.shingle_hashes(["a b c"], 2)
    assert len(calls) == 1
    monkeypatch.setattr(minhash, "numba", None)
    minhash.shingle_hashes(["a b c"], 2)
    assert len(calls) == 1


def test_signatures_over_many_chunks_equal_the_oracle_and_the_numpy_path(monkeypatch):
    """Batches cut into many text chunks: the Numba path's signatures equal signature_oracle (numpy backend) and
    the NumPy path's (both backends), each chunk's shingles offset in the chunk."""
    p = minhash.MinHashParams(ngram=5, bands=4, rows=3, seed=7)
    texts = _random_texts(4, 60) + _ascii_texts(5, 40) + _random_texts(6, 40, max_words=4)
    monkeypatch.setattr(minhash, "_TEXT_CHUNK", 700)
    backends = [b for b in sorted(minhash.BACKENDS) if b != "rensa" or HAS_RENSA]
    got = {b: minhash.signatures(texts, p, b) for b in backends}
    assert got["numpy"].tolist() == [minhash.signature_oracle(t, p) for t in texts]
    monkeypatch.setattr(minhash, "numba", None)
    for b in backends:
        assert np.array_equal(got[b], minhash.signatures(texts, p, b)), b
    monkeypatch.setattr(minhash, "_TEXT_CHUNK", 1 << 30)
    for b in backends:
        assert np.array_equal(got[b], minhash.signatures(texts, p, b)), b


def test_minhash_imports_and_hashes_without_numba():
    """With numba unimportable the module loads and shingle_hashes takes the NumPy path, same values."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from openmimo.data import minhash, texthash\n"
        "assert minhash.numba is None and not hasattr(minhash, '_shingle_kernel')\n"
        "t = ['Hello, World! 3 + 4 = 7.', '', 'a b', 'straße x=-1 ' * 9]\n"
        "h, off = minhash.shingle_hashes(t, 5)\n"
        "assert [h[off[i]:off[i + 1]].tolist() for i in range(len(t))] == "
        "[texthash.ngrams_oracle(x, 5, 'alnum', 'whole') for x in t]\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr

