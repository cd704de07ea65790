"""URL normalisation, vectorised n-gram hashing, MinHash LSH and decontamination against slow oracles."""

import itertools
import random

import numpy as np
import pytest

from openmimo.data import minhash, texthash
from openmimo.data.decontam import Decontaminator, benchmark_items, contaminated_oracle
from openmimo.data.urls import normalize_url


@pytest.mark.parametrize("url,key", [
    # scheme and host case, https = http
    ("HTTP://Example.COM/a", "http://example.com/a"),
    ("https://example.com/a", "http://example.com/a"),
    # default ports only
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "http://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com:80/a", "http://example.com:80/a"),
    # tracking parameters, parameter order, empty query
    ("http://e.com/a?utm_source=x&utm_MEDIUM=y", "http://e.com/a"),
    ("http://e.com/a?b=2&fbclid=abc&a=1", "http://e.com/a?a=1&b=2"),
    ("http://e.com/a?gclid=1", "http://e.com/a"),
    ("http://e.com/a?", "http://e.com/a"),
    ("http://e.com/a?&&x=1", "http://e.com/a?x=1"),
    # trailing slashes and fragments
    ("http://e.com/a/b/", "http://e.com/a/b"),
    ("http://e.com/a//", "http://e.com/a"),
    ("http://e.com/", "http://e.com"),
    ("http://e.com/a#section-2", "http://e.com/a"),
    ("http://e.com/a?x=1#frag", "http://e.com/a?x=1"),
    # user info dropped; the path keeps its case
    ("http://user:pw@E.com/Path", "http://e.com/Path"),
    # not an absolute URL: itself, stripped
    ("  not a url ", "not a url"),
    ("/relative/path/", "/relative/path/"),
])
def test_url_normalisation_truth_table(url, key):
    assert normalize_url(url) == key


def _texts(seed=0, n=60):
    r = random.Random(seed)
    words = ["alpha", "Beta", "x=12", "13", "straße", "ÉCOLE", "a+b", "(1)", "tab\there", "end.", "", "...", "\u00a0nb"]
    out = [" ".join(r.choice(words) for _ in range(r.randint(0, 40))) for _ in range(n)]
    return out + ["", "   ", "one", "Hello, World! 3 + 4 = 7."]


@pytest.mark.parametrize("mode,n,short", itertools.product(texthash.MODES, (1, 2, 5, 16), ("drop", "whole")))
def test_vectorised_ngram_hashes_equal_the_python_definition(mode, n, short):
    texts = _texts()
    h, off = texthash.ngram_hashes(texts, n, mode, short)
    for i, t in enumerate(texts):
        assert h[off[i]:off[i + 1]].tolist() == texthash.ngrams_oracle(t, n, mode, short), t


def test_digits_and_signs_are_kept_and_punctuation_is_not_a_word():
    a, b, c = texthash.ngram_hashes(["x: 12 apples", "x: 13 apples", "x 12, apples!"], 3)[0]
    assert a != b and a == c
    h, off = texthash.ngram_hashes(["6x = -36 ok", "6x = 36 ok", "6x=-36 ok"], 4)
    first = h[off[:-1]]
    assert first[0] != first[1] and first[0] == first[2]


def test_numpy_signatures_equal_the_oracle_value_for_value():
    p = minhash.MinHashParams(ngram=3, bands=4, rows=3, seed=7)
    texts = _texts(1, 20)
    sigs = minhash.signatures(texts, p, backend="numpy")
    for t, s in zip(texts, sigs):
        assert s.tolist() == minhash.signature_oracle(t, p)
    keys = minhash.band_keys(sigs, p)
    empty = [i for i, t in enumerate(texts) if not texthash.ngrams_oracle(t, 1)]
    assert (keys[empty] == 0).all() and (keys[[i for i in range(len(texts)) if i not in empty]] != 0).all()


def _planted(seed=0, n_src=60):
    """Documents of ~150 words; some sources get copies with a few words changed (high Jaccard), others get
    copies with half the text replaced (low Jaccard)."""
    r = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs = []
    for _ in range(n_src):
        base = [r.choice(vocab) for _ in range(150)]
        docs.append(base)
        kind = r.random()
        if kind < 0.4:
            edit = list(base)
            for _ in range(3):
                edit[r.randrange(len(edit))] = r.choice(vocab)
            docs.append(edit)
        elif kind < 0.6:
            docs.append(base[:75] + [r.choice(vocab) for _ in range(75)])
    return [" ".join(d) for d in docs]


@pytest.mark.parametrize("backend", sorted(minhash.BACKENDS))
def test_lsh_recall_and_precision_against_exact_jaccard(backend):
    docs = _planted()
    p = minhash.MinHashParams(ngram=5, bands=14, rows=8, seed=1)
    keys = minhash.band_keys(minhash.signatures(docs, p, backend), p)
    cand = set()
    for b in range(p.bands):
        by: dict = {}
        for i, k in enumerate(keys[:, b].tolist()):
            by.setdefault(k, []).append(i)
        cand |= {(i, j) for g in by.values() for i, j in itertools.combinations(g, 2)}
    sets = [minhash.shingle_set(d, 5) for d in docs]
    truth = {(i, j) for i, j in itertools.combinations(range(len(docs)), 2)
             if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.8}
    assert len(truth) >= 15
    recall = len(cand & truth) / len(truth)
    precision = len(cand & truth) / max(1, len(cand))
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)


def test_signature_agreement_estimates_jaccard():
    docs = _planted(3, 30)
    p = minhash.MinHashParams(ngram=5, bands=16, rows=16, seed=2)
    sigs = minhash.signatures(docs, p, "numpy")
    sets = [minhash.shingle_set(d, 5) for d in docs[:11]]
    errs = [abs((sigs[i] == sigs[j]).mean() - len(sets[i] & sets[j]) / len(sets[i] | sets[j]))
            for i in range(10) for j in range(i + 1, 11)]
    assert np.mean(errs) < 0.03


def test_union_find_roots_are_the_smallest_items():
    uf = minhash.UnionFind()
    for a, b in [(5, 3), (3, 9), (7, 8), (9, 1)]:
        uf.union(a, b)
    assert uf.groups() == {1: [5, 3, 9, 1], 7: [7, 8]} or sorted(map(sorted, uf.groups().values())) == [[1, 3, 5, 9], [7, 8]]
    assert uf.find(9) == 1 and uf.find(8) == 7


PROBLEM = ("Let $f(x) = 3x + 4$ and $g(x) = x^2 - 2$. Find the value of $f(g(5))$ and express your answer as "
           "an integer in simplest form.")
SHORT = "What is 17 + 25 plus 3?"


def _dec():
    return Decontaminator({"math500": [PROBLEM, "The answer is 73."], "gsm8k": [SHORT, "45"]})


def test_decontamination_drops_planted_problems_and_keeps_near_misses():
    d = _dec()
    texts = [
        "Intro. " + PROBLEM + " Then more text follows here.",  # the whole problem: dropped
        "LET f(x)=3x+4 and g(x)=x^2-2. Find the value of f(g(5)) and express your answer as an integer",  # reformatted
        PROBLEM.replace("3x + 4", "3x + 5").replace("f(g(5))", "f(g(6))"),  # other numbers, < 16 words in a row: kept
        "Quiz: what is 17+25 plus 3? Think.",  # a short item, matched whole
        "what is 17 + 26 plus 3",  # near miss of the short item
        "what is 17 + 25 plus",  # a prefix only
        "45",  # bare answers are not checked
    ]
    hits = d.hits(texts)
    assert hits == [("math500",), ("math500",), (), ("gsm8k",), (), (), ()]
    assert d.skipped_short == 2  # "45" and "The answer is 73." are shorter than min_exact_words
    items = [PROBLEM, "The answer is 73.", SHORT, "45"]
    assert [bool(h) for h in hits] == [contaminated_oracle(t, items) for t in texts]


def test_decontamination_fast_path_equals_the_oracle_on_random_text():
    r = random.Random(5)
    vocab = ["a", "b", "c", "1", "2", "x."]
    items = [" ".join(r.choice(vocab) for _ in range(r.randint(1, 20))) for _ in range(30)]
    texts = [" ".join(r.choice(vocab) for _ in range(r.randint(0, 60))) for _ in range(200)]
    d = Decontaminator({"t": items}, ngram=8, min_exact_words=3)
    assert [bool(h) for h in d.hits(texts)] == [contaminated_oracle(t, items, 8, "alnum", 3) for t in texts]


def test_benchmark_items_skip_a_missing_folder_and_read_task_files(tmp_path):
    assert benchmark_items(tmp_path / "absent") == {}
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "math_500_test.jsonl").write_text(
        '{"problem": "P1 text", "solution": "S1", "answer": "1", "subject": "x", "level": 1, "unique_id": "u1"}\n')
    items = benchmark_items(tmp_path)
    assert list(items) == ["math500"] and "P1 text" in items["math500"]


def test_newest_url_priority_orders_dates_and_puts_undated_last():
    from openmimo.data.pipeline_dedup import NO_DATE, date_priority

    newer, older = date_priority("2024-05-01T00:00:00Z"), date_priority("2019-01-01")
    assert newer < older < NO_DATE and date_priority(None) == date_priority("not a date") == NO_DATE


def test_candidate_pairs_connect_exactly_the_documents_that_share_a_band_key():
    """The fast pair finder (one stable sort) against every pair that shares a key in some band, by brute force:
    the same groups (union-find components), each pair i < j at most once, keys 0 never pair."""
    rng = np.random.default_rng(3)
    vals = rng.integers(0, 6, size=(40, 3))  # few distinct values: many collisions, some zeros
    # band_keys mixes the band index in, so two bands never share a key: here the band is the low bits
    keys = np.where(vals == 0, 0, vals * 4 + np.arange(1, 4)).astype(np.uint64)
    pairs = minhash.candidate_pairs(keys)
    assert all(i < j for i, j in pairs.tolist()) and len({tuple(p) for p in pairs.tolist()}) == len(pairs)

    def groups(edges):
        uf = minhash.UnionFind()
        for d in range(len(keys)):
            uf.find(d)
        for i, j in edges:
            uf.union(i, j)
        return sorted(sorted(g) for g in uf.groups().values())

    brute = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))
             if any(keys[i, b] == keys[j, b] != 0 for b in range(keys.shape[1]))]
    assert brute and groups(pairs.tolist()) == groups(brute)
    assert all(any(keys[i, b] == keys[j, b] != 0 for b in range(keys.shape[1])) for i, j in pairs.tolist())


def _ascii_texts(seed=0, n=80):
    r = random.Random(seed)
    words = ["alpha", "Beta", "GAMMA", "w12", "13", "end.", "(1)", "tab\there", "", "...", "x_y", "Q"]
    out = [" ".join(r.choice(words) for _ in range(r.randint(0, 40))) for _ in range(n)]
    return out + ["", "   ", "one", "A B C D E F"]


@pytest.mark.parametrize("n", (1, 2, 5, 16))
def test_minhash_shingle_hashes_equal_ngram_hashes_and_the_python_definition(n):
    batches = [
        _texts(),  # non-ASCII and operators
        _ascii_texts(),  # ASCII without operators: one join and encode, A-Z lower-cased by the translate table
        _ascii_texts(1) + ["x=12", "a+b", "6x=-36 ok", "1<2>3^4%5*6/7"],  # ASCII with operators
        ["null\x00byte Here", "plain words here", "x\x00"],  # a NUL byte: the texthash path
        ["", "   ", ""], ["Hello, World! 3 + 4 = 7."], ["ΣΑΣ ΟΔΟΣ", "İstanbul ǅ ﬁx"], [],
    ]
    for texts in batches:
        h, off = minhash.shingle_hashes(texts, n)
        rh, roff = texthash.ngram_hashes(texts, n, mode="alnum", short="whole")
        assert h.dtype == rh.dtype and off.dtype == roff.dtype
        assert np.array_equal(h, rh) and np.array_equal(off, roff), texts
        for i, t in enumerate(texts):
            assert h[off[i]:off[i + 1]].tolist() == texthash.ngrams_oracle(t, n, "alnum", "whole"), t


def test_rensa_signatures_equal_the_digest_rows():
    rensa = pytest.importorskip("rensa")
    p = minhash.MinHashParams(ngram=3, bands=4, rows=3, seed=7)
    texts = _texts(2, 30)
    h, off = texthash.ngram_hashes(texts, p.ngram, mode="alnum", short="whole")
    rows = rensa.RMinHash.digest_matrix_from_flat_token_hashes(h, off.astype(np.uint64), num_perm=p.num_hashes,
                                                              seed=p.seed).to_rows()
    sigs = minhash.signatures(texts, p, "rensa")
    assert sigs.dtype == np.uint32 and sigs.shape == (len(texts), p.num_hashes)
    for i, t in enumerate(texts):
        want = rows[i] if off[i + 1] > off[i] else [(1 << 32) - 1] * p.num_hashes
        assert sigs[i].tolist() == want, t


def test_candidate_pairs_equal_the_stable_sort_definition():
    """Each pair (i, j): j's key equals the previous document's (in index order) holding it, from a stable sort."""
    rng = np.random.default_rng(5)
    for docs, bands, distinct in ((1, 3, 4), (50, 4, 6), (300, 14, 40), (2000, 14, 5000)):
        vals = rng.integers(0, distinct, size=(docs, bands))
        keys = np.where(vals == 0, 0, vals * 16 + np.arange(1, bands + 1)).astype(np.uint64)
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        k = flat[order]
        same = np.flatnonzero((k[1:] == k[:-1]) & (k[1:] != 0))
        want = np.stack([order[same] // bands, order[same + 1] // bands], axis=1)
        want = np.unique(want, axis=0) if want.size else want
        got = minhash.candidate_pairs(keys)
        assert got.shape == want.shape and np.array_equal(got, want)


def test_minhash_shingle_hashes_of_a_batch_of_many_byte_chunks(monkeypatch):
    """Texts over several byte chunks (one with a NUL byte, so the texthash path): the words of each chunk joined,
    the n-grams over all of them, as ngram_hashes of the whole batch gives them."""
    monkeypatch.setattr(minhash, "_BYTE_CHUNK", 300)
    texts = _ascii_texts(3, 40) + _texts(4, 20) + ["a\x00b c d e f g"] + _ascii_texts(5, 30)
    h, off = minhash.shingle_hashes(texts, 5)
    rh, roff = texthash.ngram_hashes(texts, 5, mode="alnum", short="whole")
    assert np.array_equal(h, rh) and np.array_equal(off, roff)
    p = minhash.MinHashParams(ngram=5, bands=4, rows=3, seed=7)
    for backend in sorted(minhash.BACKENDS):
        monkeypatch.setattr(minhash, "_TEXT_CHUNK", 1000)
        sigs = minhash.signatures(texts, p, backend)
        monkeypatch.setattr(minhash, "_TEXT_CHUNK", 1 << 30)
        monkeypatch.setattr(minhash, "_BYTE_CHUNK", 1 << 30)
        assert np.array_equal(sigs, minhash.signatures(texts, p, backend))
        monkeypatch.setattr(minhash, "_BYTE_CHUNK", 300)
    assert (minhash.signatures(texts, p, "numpy") == [minhash.signature_oracle(t, p) for t in texts]).all()


def test_minhash_slices_cut_where_text_chunks_cuts():
    r = random.Random(6)
    for size in (1, 5, 40, 1000):
        for _ in range(30):
            texts = ["x" * r.choice([0, 0, 1, 3, 7, 20, 60]) for _ in range(r.randint(0, 25))]
            chars = np.array([len(t) for t in texts], dtype=np.int64)
            want = [len(c) for c in texthash.text_chunks(texts, size)]
            got = [hi - lo for lo, hi in minhash._slices(chars, size)]
            assert got == want and sum(got) == len(texts)
