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


def common_urls(n: int, seed: int = 0) -> list[str]:
    """URLs near the common shape (lower-case http(s), a plain ASCII host): most of them take that path, the
    rest leave it by one detail (an upper-case letter or '@' or ':' or a non-ASCII letter in the host, an empty
    host, another scheme, surrounding whitespace), with every path, query and fragment rule."""
    r = random.Random(seed)
    schemes = ["http://"] * 15 + ["https://"] * 15 + ["HTTP://", "Https://", "httpx://", "ftp://", "http:/", "https:",
                                                     "http:///", " http://", "xhttp://"]
    hosts = ["e.com"] * 20 + ["www.site7.org", "a-b.c_d", "x", "127.0.0.1", "a%20b", "sp ace", "tab\tx", "a\nb",
                             "~!$'()*+,;=", "E.com", "e.cOm", "u@e.com", "@", "e.com:80", "e.com:443", "e.com:8080",
                             "[::1]", "b\u00fccher.de", "\u212aelvin.com", "\u0130x.tr", ""]
    segs = ["a", "B", "post", "\u00e9", "%20", "a b", "", "x.html", "\u03a9", "~u", ";p=1", "&", "a&b", "@", ":80",
            "?"[:0]]
    names = (list(TRACKING) + ["utm_source", "UTM_Medium", "utm_", "utm", "xutm_a", "spmx", "_gax",
             "mscl\u212aid", "\u017fpm", "a", "b", "A", "\u00e9", "", "id", "q", "k\u212a"])
    vals = ["", "1", "x", "a=b", "?", "\u00e9", "/", "%26"]

    def param():
        p = _case(r, r.choice(names)) if r.random() < 0.3 else r.choice(names)
        return p if r.random() < 0.2 else p + "=" + r.choice(vals)

    def query():
        k = r.choice([0, 0, 0, 1, 1, 2, 2, 2, 3, 5])
        if k == 0:
            return r.choice(["", "", "", "?"])
        return "?" + "&".join(param() for _ in range(k)) + r.choice(["", "", "", "&"])

    out = []
    for _ in range(n):
        path = "".join("/" + r.choice(segs) for _ in range(r.randint(0, 3))) + "/" * r.choice([0, 0, 1, 1, 2])
        frag = r.choice(["", "", "", "#", "#frag", "#a&b=1", "#x?y=1&z", "##", "#\u00e9"])
        tail = query() + frag if r.random() < 0.85 else frag + query()  # '#' before '?'
        ws = r.choice([""] * 12 + [" ", "\n", "\u3000", "\x1c"])
        out.append(r.choice(schemes) + r.choice(hosts) + path + tail + ws)
    return out


COMMON = [  # (url, whether it takes the common shape's path)
    ("http://e.com/a/", True), ("https://e.com", True), ("https://e.com/?", True), ("http://e.com//#x?y", True),
    ("http://e.com/a&b?c=1&d", True), ("https://e.com/p?b=2&a=1", True), ("https://e.com/p?a=1&b=2&c", True),
    ("http://e.com/p?utm_x=1&&", True), ("http://sp ace/", True), ("http://e.com/a\u00e9?\u00e9=1", True),
    ("https://e.com/a \n", True),  # stripped first
    ("http://E.com/a", False), ("HTTP://e.com", False), ("http://u@e.com", False), ("http://e.com:8080/", False),
    ("http://b\u00fccher.de/", False), ("http:///a", False), ("http:/e.com", False), ("httpx://e.com", False),
    ("\u212a://e.com", False), ("http://\u212a.com", False),
]


def _common_rows(urls) -> set:
    parts, _ = U._parts(urls)
    return {i for rows, _, prefix in parts if prefix == "http" for i in rows.tolist()}


def test_common_shape_path_is_taken_exactly_where_it_applies():
    urls = [u for u, _ in COMMON] * (2 * MIN_BATCH // len(COMMON) + 1)
    common = _common_rows(urls)
    assert [i in common for i in range(len(COMMON))] == [c for _, c in COMMON]
    assert normalize_urls(urls) == [normalize_url(u) for u in urls]


def test_batches_of_one_shape():
    """A batch all of the common shape without a query (one part), and one with no URL of that shape."""
    plain = [f"https://e{i % 7}.com/p/{i}//" for i in range(3000)]
    parts, slow = U._parts(plain)
    assert len(parts) == 1 and parts[0][0].size == len(plain) and not slow
    other = [f"HTTP://E{i % 7}.com/p/{i}/?b=1&a=2&utm_x=3" for i in range(3000)]
    parts, slow = U._parts(other)
    assert [prefix for rows, _, prefix in parts if rows.size] == [""]
    for urls in (plain, other, plain + other):
        assert normalize_urls(urls) == [normalize_url(u) for u in urls]
        assert np.array_equal(url_keys(urls), np.array([hash64(normalize_url(u)) for u in urls], dtype=np.uint64))


@pytest.mark.parametrize("seed", [0, 1])
def test_common_shape_path_equals_per_url_function(seed):
    urls = common_urls(30_000, seed)
    expected = [normalize_url(u) for u in urls]
    got = normalize_urls(urls)
    bad = [(u, g, e) for u, g, e in zip(urls, got, expected) if g != e]
    assert not bad, bad[:5]
    assert np.array_equal(url_keys(urls), np.array([hash64(e) for e in expected], dtype=np.uint64))
    parts, slow = U._parts(urls)
    common = sum(rows.size for rows, _, prefix in parts if prefix == "http")
    assert len(urls) * 0.5 < common < len(urls) * 0.9  # both paths take part of the corpus
    assert sum(rows.size for rows, _, _ in parts) + len(slow) >= len(urls)


def test_common_shape_batch_with_few_others():
    """Fewer than MIN_BATCH URLs of other shapes: those go to the per-URL function, no general column pass."""
    urls = common_urls(6000, 5)
    common = _common_rows(urls)
    others = [i for i in range(len(urls)) if i not in common]
    drop = set(others[40:])
    urls = [u for i, u in enumerate(urls) if i not in drop]
    parts, slow = U._parts(urls)
    assert all(prefix == "http" for _, _, prefix in parts) and len(slow) == 40
    assert normalize_urls(urls) == [normalize_url(u) for u in urls]
    assert np.array_equal(url_keys(urls), np.array([hash64(normalize_url(u)) for u in urls], dtype=np.uint64))


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
    keys, slow = U._key_series(U._column(urls)[0])
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
    assert hash64_encoded([b"://e.com/a"], prefix=b"http").tolist() == [600893629769916925]


def test_hash64_encoded_over_chunks():
    from openmimo.data import texthash
    from openmimo.data.texthash import hash64_encoded

    items = [f"http://e.com/{i}".encode() * (i % 5) for i in range(3 * texthash._HASH_CHUNK + 7)]
    assert hash64_encoded(items).tolist() == [hash64(b.decode()) for b in items]
    assert hash64_encoded(items, prefix=b"x:").tolist() == [hash64("x:" + b.decode()) for b in items]
    assert hash64_encoded([]).shape == (0,)
