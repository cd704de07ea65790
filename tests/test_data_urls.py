"""The column-wise URL normaliser (normalize_urls, url_keys) against the per-URL oracle normalize_url."""

import random

import numpy as np
import pytest

pytest.importorskip("polars")

from openmimo.data import urls as U  # noqa: E402
from openmimo.data.texthash import hash64  # noqa: E402
from openmimo.data.urls import MIN_BATCH, TRACKING, normalize_url, normalize_urls, url_keys  # noqa: E402

TRUTH = [
    ("HTTP://Example.COM/a", "http://example.com/a"), ("https://example.com/a", "http://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"), ("https://example.com:443/a", "http://example.com/a"),
    ("http://example.com:8080/a", "http://example.com:8080/a"),
    ("https://example.com:80/a", "http://example.com:80/a"),
    ("http://e.com/a?utm_source=x&utm_MEDIUM=y", "http://e.com/a"),
    ("http://e.com/a?b=2&fbclid=abc&a=1", "http://e.com/a?a=1&b=2"),
    ("http://e.com/a?gclid=1", "http://e.com/a"), ("http://e.com/a?", "http://e.com/a"),
    ("http://e.com/a?&&x=1", "http://e.com/a?x=1"), ("http://e.com/a/b/", "http://e.com/a/b"),
    ("http://e.com/a//", "http://e.com/a"), ("http://e.com/", "http://e.com"),
    ("http://e.com/a#section-2", "http://e.com/a"),
    ("http://e.com/a?x=1#frag", "http://e.com/a?x=1"), ("http://user:pw@E.com/Path", "http://e.com/Path"),
    ("  not a url ", "not a url"), ("/relative/path/", "/relative/path/"),
]


def _case(r: random.Random, s: str) -> str:
    return "".join(c.upper() if r.random() < 0.5 else c for c in s)


def fuzz_urls(n: int, seed: int = 0) -> list[str]:
    """URLs that hit every rule of normalize_url, in random combinations (and some that are not URLs)."""
    r = random.Random(seed)
    ws = list(U.WHITESPACE) + [""] * 30
    schemes = ["http", "https", "ftp", "h2+x.y-z", "xhttps", "httpss", "HTTP", "hTtPs", "ws"]
    bad_schemes = ["1http", "ht tp", "", "+http", "é", "http:", "http:/", "-x"]
    seps = ["://"] * 12 + [":/", "//", ":///", ":"]
    users = [""] * 8 + ["user@", "u:p@", "a@b@", "@", "Ü@", "x@Y:80@"]
    hosts = ["example.com", "E.COM", "www.Site7.org", "", "a-b.c_d", "bücher.DE", "ΣΑΣ.gr", "İstanbul.tr",
             "\u212aelvin.com", "xn--bcher-kva.de", "127.0.0.1", "[::1]", "a\nb", "sp ace", "tab\t.x"]
    ports = [""] * 8 + [":80", ":443", ":8080", ":", ":080", ":800", ":4430", ":80:80", ":443:80"]
    segs = ["a", "B", "post", "é", "%20", "a b", "", "x.html", "Ω", "~u", ";p=1", "a\nb", "@"]
    names = ([t for t in TRACKING] + ["utm_source", "utm_medium", "utm_", "utm", "utmx", "xutm_a", "spmx", "ref_srcx",
             "_gax", "mscl\u212aid", "fbcl\u0130d", "\u017fpm", "a", "b", "A", "é", "", "id", "q", "k\u212a"])
    vals = ["", "1", "x", "a=b", "?", "é", "ü&", "ΣΑΣ", "/"]
    frags = ["", "", "", "#", "#frag", "#a?b=1", "#/x/", "#é", "##"]

    def param():
        p = _case(r, r.choice(names)) if r.random() < 0.7 else r.choice(names)
        v = r.random()
        return p if v < 0.2 else p + "=" + r.choice(vals).replace("&", "") if v < 0.95 else p + "=="

    def query():
        v = r.random()
        if v < 0.35:
            return ""
        if v < 0.4:
            return "?"
        k = r.choice([1, 1, 2, 2, 2, 3, 4, 6])
        parts = [param() for _ in range(k)]
        for _ in range(r.choice([0, 0, 0, 1, 2])):
            parts.insert(r.randint(0, len(parts)), "")
        return "?" + "&".join(parts)

    out = []
    for _ in range(n):
        v = r.random()
        if v < 0.05:  # not a URL
            out.append(r.choice(ws) + r.choice(["not a url", "/relative/path/", "", "mailto:x@y", "é://x", "http:/x",
                                                 "//e.com/a", "?q=1", "#x", "a" * r.randint(0, 5)]) + r.choice(ws))
            continue
        scheme = _case(r, r.choice(schemes)) if v > 0.1 else r.choice(bad_schemes)
        host = _case(r, r.choice(hosts)) if r.random() < 0.5 else r.choice(hosts)
        path = "".join("/" + r.choice(segs) for _ in range(r.randint(0, 4))) + "/" * r.choice([0, 0, 0, 1, 2, 3])
        tail = query() + r.choice(frags) if r.random() < 0.85 else r.choice(frags) + query()  # '#' before '?'
        url = scheme + r.choice(seps) + r.choice(users) + host + r.choice(ports) + path + tail
        out.append(r.choice(ws) + r.choice(ws) + url + r.choice(ws) + r.choice(ws))
    return out


def test_batch_equals_truth_table():
    urls = [u for u, _ in TRUTH] * (MIN_BATCH // len(TRUTH) + 1)  # enough for the column-wise path
    assert normalize_urls(urls) == [k for _, k in TRUTH] * (MIN_BATCH // len(TRUTH) + 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_equals_per_url_function_on_fuzz_corpus(seed):
    urls = fuzz_urls(30_000, seed)
    expected = [normalize_url(u) for u in urls]
    got = normalize_urls(urls)
    bad = [(u, g, e) for u, g, e in zip(urls, got, expected) if g != e]
    assert not bad, bad[:5]
    # the corpus really exercises the rules: most URLs change
    assert sum(g != u for u, g in zip(urls, got)) > len(urls) // 2
    keys, slow = U._key_series(urls)
    # user info, a ':80'/':443' ending and non-ASCII hosts (frequent here) go to the per-URL function
    assert len(slow) < len(urls) * 0.6


def test_url_keys_are_the_pipelines_hash_of_the_normalised_url():
    urls = fuzz_urls(5_000, 7) + ["http://e.com/\ud800x", "\udfff", "http://Ü.com/?b&a"]  # lone surrogates too
    expected = np.array([hash64(normalize_url(u)) for u in urls], dtype=np.uint64)
    assert url_keys(urls).dtype == np.uint64
    assert np.array_equal(url_keys(urls), expected)
    assert np.array_equal(url_keys(urls[:10]), expected[:10])  # the small-batch (per-URL) path
    assert url_keys([]).shape == (0,)
    assert normalize_urls(urls)[-3:] == [normalize_url(u) for u in urls[-3:]]


def test_only_ascii_and_the_kelvin_sign_lower_case_to_ascii():
    """The tracking-parameter regex relies on it (see the module docstring)."""
    lowers_to_ascii = [c for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).lower().isascii()]
    assert lowers_to_ascii == [ord(U.KELVIN)]
    assert all(not chr(c).isspace() for c in range(0x110000) if chr(c) not in U.WHITESPACE)


def test_query_of_every_length_and_order():
    r = random.Random(3)
    pool = ["a=1", "b=2", "utm_x=1", "", "B=0", "a=1", "é=1", "fbclid=2", "z"]
    urls = ["http://e.com/p?" + "&".join(r.choice(pool) for _ in range(r.randint(0, 9))) for _ in range(4000)]
    assert normalize_urls(urls) == [normalize_url(u) for u in urls]


def test_prepare_docs_url_keys_equal_the_per_url_keys(tmp_path, monkeypatch):
    """The dedup stage's URL records, keyed many batches at once (in chunks of URL_BATCH URLs), hold exactly
    hash64(normalize_url(url)) of each document that has a URL, in order."""
    from datatrove.data import Document

    from openmimo.data import pipeline_dedup as PD
    from openmimo.data.pipeline_config import DataPipelineConfig, DedupConfig, SourceConfig

    monkeypatch.setattr(PD, "URL_BATCH", 1500)
    cfg = DataPipelineConfig(sources=[SourceConfig(name="web", paths=["x"])], tasks=1, buckets=1,
                             dedup=DedupConfig(exact=False, minhash=False))
    urls = fuzz_urls(4000, 11)
    docs = [Document(text=f"text {i}", id=str(i), metadata={"source": "web", **({"url": u} if i % 7 else {})})
            for i, u in enumerate(urls)]
    PD.PrepareDocs(cfg, str(tmp_path)).run(docs, rank=0, world_size=1)
    keys = np.load(tmp_path / "keys" / "00000" / "00000.npy")
    url = keys[keys["kind"] == 0]
    want = [(i, hash64(normalize_url(u))) for i, u in enumerate(urls) if i % 7 and u]
    assert url["idx"].tolist() == [i for i, _ in want]
    assert url["key"].tolist() == [k for _, k in want]


def test_hash64_values_are_pinned():
    """Dedup keys are saved per task and read back by --resume: the hash of a string never changes (hand-computed
    BLAKE2b, 8 bytes, little-endian, lone surrogates passed through), for the per-string and the encoded paths."""
    from openmimo.data.texthash import hash64_encoded

    assert hash64("http://e.com/a") == 600893629769916925
    assert hash64("a\udc80b") == 17564911657457786530
    assert hash64_encoded([b"http://e.com/a"]).tolist() == [600893629769916925]
