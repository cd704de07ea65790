"""URL normalisation for global URL dedup: two spellings of one page get one key.

:func:`normalize_url` gives the key of one URL, and is the oracle of the column-wise versions
:func:`normalize_urls` (the keys of many URLs) and :func:`url_keys` (their 64-bit hashes, as the dedup stage
stores them), which give exactly its result for every input:

- scheme and host are lower-cased, and ``https`` counts as ``http`` (the same page served both ways);
- user info and the default port (``:80`` for http, ``:443`` for https) are dropped;
- the fragment (``#...``) is dropped;
- tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ... see :data:`TRACKING`) are removed from the query,
  the remaining parameters are sorted, and an empty query disappears;
- trailing slashes of the path are removed (``/a/b/`` is ``/a/b``; the root is the empty path).

Text that is not an absolute ``scheme://host`` URL normalises to itself stripped of surrounding whitespace
(it still dedups by exact spelling).

The column-wise path is Polars string expressions over the whole batch (no Python per URL but the final hash),
in two kernels chosen per URL.  A URL of the common shape (:data:`_COMMON`: after stripping, a lower-case
``http://`` or ``https://`` and a non-empty host of ASCII with no upper-case letter, ``@`` or ``:``) needs no
lower-casing, user-info or port rule: its key is ``"http"`` + its bytes from the ``"://"`` to the first ``?``/``#``
with trailing slashes stripped + the normalised query (:func:`_common_tails`; the ``"http"`` goes into the hash
state once, not into each string).  Every other URL takes the general kernel (:func:`_key_series`): strip, one
anchored regex for ``scheme://host``, lower-case it, cut the path and the query out of the UTF-8 bytes at the
first ``?``/``#`` and ``#`` (byte offsets from ``str.find``; every cut is at an ASCII byte), strip the path's
trailing slashes.  In both, a query of one or two parameters is filtered and ordered in place, a longer one is
split on ``&`` into one long column, filtered, sorted by (row, parameter) and gathered back per row.  They match
the per-URL function because

- :data:`WHITESPACE` is the set of characters ``str.isspace`` accepts (Rust's whitespace set is another);
- a URL whose ``scheme://host`` is not ASCII, holds user info (``@``) or ends in ``:80``/``:443`` goes to
  :func:`normalize_url` itself (rare in crawls), as does a string Polars cannot hold (a lone surrogate):
  lower-casing beyond ASCII follows the Unicode version of the runtime, and Python's and Rust's may differ; so
  do all URLs not of the common shape where a batch has fewer than :data:`MIN_BATCH` of them;
- a parameter is tracking when it matches :data:`_TRACKING_RE`, each letter of the names in either case and
  ``k`` also as the Kelvin sign (U+212A): the only characters whose ``str.lower()`` is ASCII are ASCII and that
  sign (a test checks every code point), and none lowers to ``=``, so this is exactly
  ``name.lower() in TRACKING or name.lower().startswith("utm_")`` without lower-casing anything;
- Polars compares strings by their UTF-8 bytes, which is code-point order, as Python's ``sorted``.

:func:`url_keys` below :data:`MIN_BATCH` URLs runs the per-URL function (Polars' fixed cost per call is larger).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from openmimo.data.texthash import hash64, hash64_encoded

TRACKING = ("fbclid", "gclid", "dclid", "msclkid", "yclid", "igshid", "mc_cid", "mc_eid", "_ga", "_gl", "ref_src",
            "spm", "ncid", "cmpid")
TRACKING_PREFIXES = ("utm_",)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?$", re.S)
_DEFAULT_PORT = {"http": ":80", "https": ":443"}


def _tracking(param: str) -> bool:
    name = param.split("=", 1)[0].lower()
    return name in TRACKING or name.startswith(TRACKING_PREFIXES) or not param


def normalize_url(url: str) -> str:
    """The dedup key of one URL (see the module docstring)."""
    url = url.strip()
    m = _URL.match(url)
    if not m:
        return url
    scheme, host, path, query = m.group(1).lower(), m.group(2).lower(), m.group(3), m.group(4) or ""
    host = host.rsplit("@", 1)[-1]
    port = _DEFAULT_PORT.get(scheme)
    if port and host.endswith(port):
        host = host[: -len(port)]
    if scheme == "https":
        scheme = "http"
    path = path.rstrip("/")
    params = sorted(p for p in query.split("&") if not _tracking(p))
    return f"{scheme}://{host}{path}" + ("?" + "&".join(params) if params else "")


# ---- column-wise: many URLs at once ----------------------------------------------------------------------
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())  # what str.strip() strips
_SCHEME_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*"  # _URL's groups 1 and 2, with the "://"

KELVIN = "\u212a"


def _any_case(name: str) -> str:
    """A regex of the strings whose ``str.lower()`` is ``name`` (ASCII): each letter in either case, ``k`` also as
    the Kelvin sign (U+212A), the one non-ASCII character whose lower case is ASCII (a test checks all)."""
    return "".join("[" + c + c.upper() + KELVIN * (c == "k") + "]" if c.isalpha() else re.escape(c) for c in name)


# a parameter is tracking when its name (before the first '=') lower-cased is in TRACKING or starts with a prefix
_TRACKING_RE = (r"^(?:" + "|".join(map(_any_case, TRACKING)) + r")(?:=|$)|^(?:"
                + "|".join(map(_any_case, TRACKING_PREFIXES)) + ")")
MIN_BATCH = 1024  # below this many URLs the per-URL function is faster (Polars' fixed cost is ~2 ms a call)
# the common shape: a lower-case http(s) scheme and a non-empty host of ASCII with no upper case, '@' or ':'
_COMMON = r"^https?://[^A-Z@:/?#\x80-\x{10FFFF}]+(?:[/?#]|$)"


def _column(urls: Sequence[str]):
    """``(col, bad)``: ``urls`` as a Polars String series, and the indices of those it cannot hold (a lone
    surrogate, or not a string), which hold ``""`` in ``col``."""
    import polars as pl

    try:
        return pl.Series("u", urls, dtype=pl.String, strict=True), []
    except Exception:  # a lone surrogate (or not a string): those go to the per-URL function
        bad = [i for i, u in enumerate(urls) if not isinstance(u, str) or not _encodable(u)]
        skip = set(bad)
        return pl.Series("u", ["" if i in skip else u for i, u in enumerate(urls)], dtype=pl.String), bad


def _common_tails(col):
    """``[(rows, tails), ...]``: for the URLs of the common shape (:data:`_COMMON`, after stripping) at the int64
    indices ``rows``, their keys without the leading ``"http"`` (``normalize_url(u) == "http" + tail``), a
    String series; the URLs of other shapes are in none of the parts.

    Such a URL needs no lower-casing, user-info or port rule: its key is ``"http"`` + the bytes from the
    ``"://"`` to the first ``?``/``#`` with trailing slashes stripped (the host is not empty and holds no
    ``/``, so the strip stays in the path) + the normalised query.  Those without a query (the first part)
    are done there; the query of the others (the second part) is normalised over those rows alone."""
    import polars as pl

    f = pl.col
    u = f("u")
    lf = pl.DataFrame([col.alias("u")]).lazy().with_columns(u=u.str.strip_chars(WHITESPACE))
    # k: where the "://" starts; pe: the first '?' or '#' (the end of the path); hp: the first '#' (byte offsets)
    lf = lf.with_columns(common=u.str.contains(_COMMON), k=4 + u.str.starts_with("https").cast(pl.Int64),
                         pe=u.str.find(r"[?#]"), hp=u.str.find("#", literal=True), n=u.str.len_bytes())
    raw, pe, hp = u.cast(pl.Binary), f("pe"), f("hp")
    # cut for every row (one kernel), empty where not common (there a cut may be off a character boundary)
    cut = pl.when(f("common")).then(pe.fill_null(f("n")) - f("k")).otherwise(0)
    base = raw.bin.slice(f("k"), cut).cast(pl.String).str.strip_chars_end("/")
    hq = f("common") & pe.is_not_null() & (hp.is_null() | (hp > pe))
    main = lf.select("u", "pe", "hp", "n", common=f("common"), hq=hq, base=base).collect()
    common, has_query = main["common"].to_numpy(), main["hq"].to_numpy()
    plain, queried = np.flatnonzero(common & ~has_query), np.flatnonzero(has_query)
    base = main["base"] if plain.size == main.height else main["base"].gather(plain)
    if not queried.size:
        return [(plain, base)]
    # a query of one or two parameters is filtered and ordered here (p0, p1: its parameters; a, b: those kept,
    # else null), a longer one by _long_queries
    q = f("q")
    lf = (main.lazy().filter("hq").select("base", q=raw.bin.slice(pe + 1, hp.fill_null(f("n")) - pe - 1)
                                          .cast(pl.String)).with_columns(sp=q.str.splitn("&", 2)))
    lf = lf.with_columns(p0=f("sp").struct.field("field_0"), p1=f("sp").struct.field("field_1"))
    p0, p1 = f("p0"), f("p1")
    more = p1.str.contains("&", literal=True).fill_null(False)
    lf = lf.with_columns(long=pl.when(more).then(q), a=pl.when(~more & _kept(p0)).then(p0),
                         b=pl.when(~more & _kept(p1)).then(p1))
    lo = pl.min_horizontal("a", "b")
    hi = pl.when(f("a").is_not_null() & f("b").is_not_null()).then(pl.max_horizontal("a", "b"))
    # "?" before the first kept parameter, "&" before the second (hi is null where lo is)
    tail = pl.concat_str([pl.concat_str([f("base"), lo], separator="?", ignore_nulls=True), hi], separator="&",
                         ignore_nulls=True)
    qmain = lf.select(t=tail, long=f("long")).collect()
    tails = qmain["t"]
    if qmain["long"].null_count() < qmain.height:
        tails = _long_queries(tails, qmain["long"])
    return [(plain, base), (queried, tails)]


def _key_series(col):
    """``(keys, slow)``: a Polars String series of :func:`normalize_url` of each URL of the String series
    ``col``, except at the indices ``slow`` (those the column-wise path does not handle: see the module
    docstring), whose values are not to be used."""
    import polars as pl

    f = pl.col
    lf = pl.DataFrame([col.alias("u")]).lazy().with_columns(u=f("u").str.strip_chars(WHITESPACE))
    lf = lf.with_columns(sh=f("u").str.extract(_SCHEME_HOST, 0))
    sh, u = f("sh"), f("u")
    # byte offsets: the host ends where sh does, the path at the first '?' or '#' (neither is in sh), the query at
    # the first '#'; the pieces are cut from the UTF-8 bytes (every cut is at an ASCII byte)
    lf = lf.with_columns(
        sh=sh.str.to_lowercase(), he=sh.str.len_bytes(), pe=u.str.find(r"[?#]"), hp=u.str.find("#", literal=True),
        n=u.str.len_bytes(), raw=u.cast(pl.Binary),
        # non-ASCII scheme://host, user info, a port that may be the default one: the per-URL function
        slow=sh.str.contains(r"[^\x00-\x7f]|@|:80$|:443$"))
    pe = f("pe").fill_null(f("n"))
    path = f("raw").bin.slice(f("he"), pe - f("he")).cast(pl.String).str.strip_chars_end("/")
    has_query = f("sh").is_not_null() & f("pe").is_not_null() & (f("hp").is_null() | (f("hp") > f("pe")))
    lf = lf.with_columns(path=path, q=pl.when(has_query).then(
        f("raw").bin.slice(f("pe") + 1, f("hp").fill_null(f("n")) - f("pe") - 1).cast(pl.String)))
    # a query of one or two parameters (most of them) is done here, longer ones by _long_queries: a and b are
    # its parameters where kept (else null), in order
    lf = lf.with_columns(sp=f("q").str.splitn("&", 3))
    p0, p1, more = (f("sp").struct.field(k) for k in ("field_0", "field_1", "field_2"))
    more = more.is_not_null()
    lf = lf.with_columns(long=pl.when(more).then(f("q")), a=pl.when(~more & _kept(p0)).then(p0),
                         b=pl.when(~more & _kept(p1)).then(p1))
    lo = pl.min_horizontal("a", "b")
    hi = pl.when(f("a").is_not_null() & f("b").is_not_null()).then(pl.max_horizontal("a", "b"))
    https = f("sh").str.starts_with("https://")
    key = pl.concat_str([pl.when(https).then(pl.lit("http")),
                         pl.when(https).then(f("sh").str.slice(5)).otherwise(f("sh")), f("path"),
                         pl.concat_str([pl.lit("?"), lo]), pl.concat_str([pl.lit("&"), hi])], ignore_nulls=True)
    main = lf.select(key=pl.when(f("sh").is_null()).then(f("u")).otherwise(key), slow=f("slow"),
                     long=f("long")).collect()
    keys = main["key"]
    if main["long"].null_count() < main.height:
        keys = _long_queries(keys, main["long"])
    return keys, np.flatnonzero(main["slow"].fill_null(False).to_numpy())


def _kept(p):
    """Whether a query parameter stays: not empty and not tracking (a Polars expression on a String column)."""
    return (p != "") & ~p.str.contains(_TRACKING_RE)


def _long_queries(keys, query):
    """``keys`` with ``"?" + sorted kept parameters joined by "&"`` appended where ``query`` is not null (queries
    of three or more parameters): split into one long column of parameters, filtered, sorted by (row, parameter)
    and gathered back per row."""
    import polars as pl

    f = pl.col
    tails = (pl.DataFrame([query.alias("q")]).lazy().with_row_index("i").filter(f("q").is_not_null())
             .select("i", p=f("q").str.split("&")).explode("p")
             .filter(_kept(f("p"))).sort(["i", "p"]).group_by("i").agg("p")  # a group keeps the frame's (sorted) order
             .select("i", t=pl.concat_str([pl.lit("?"), f("p").list.join("&")]))).collect()
    return keys.scatter(tails["i"], keys.gather(tails["i"]) + tails["t"])


def _encodable(u: str) -> bool:
    try:
        u.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _parts(urls: Sequence[str]):
    """The column-wise keys of ``urls``: ``(parts, slow)``, ``parts`` a list of ``(rows, keys, prefix)``: at
    the int64 indices ``rows`` the keys are ``prefix`` + ``keys`` (a String series); at the indices ``slow`` (a
    list) the per-URL function's (their values in ``parts`` are not to be used)."""
    col, bad = _column(urls)
    parts = [(rows, tails, "http") for rows, tails in _common_tails(col)]
    taken = np.zeros(len(urls), dtype=bool)
    for rows, _, _ in parts:
        taken[rows] = True
    other = np.flatnonzero(~taken)
    if other.size < MIN_BATCH:  # the per-URL function does the few others
        return parts, other.tolist()
    keys, slow = _key_series(col.gather(other) if other.size < len(urls) else col)
    parts.append((other, keys, ""))
    slow = other[slow].tolist()
    return parts, sorted(set(slow).union(bad)) if bad else slow


def normalize_urls(urls: Sequence[str]) -> list[str]:
    """``[normalize_url(u) for u in urls]``, column-wise (see the module docstring)."""
    if len(urls) < MIN_BATCH:
        return [normalize_url(u) for u in urls]
    parts, slow = _parts(urls)
    out = [""] * len(urls)
    for rows, keys, prefix in parts:
        for i, k in zip(rows.tolist(), keys.to_list()):
            out[i] = prefix + k
    for i in slow:
        out[i] = normalize_url(urls[i])
    return out


def url_keys(urls: Sequence[str]) -> np.ndarray:
    """uint64 dedup keys of ``urls``: :func:`~openmimo.data.texthash.hash64` of each :func:`normalize_url`,
    column-wise."""
    if len(urls) < MIN_BATCH:
        return np.array([hash64(normalize_url(u)) for u in urls], dtype=np.uint64)
    import polars as pl  # the data extra's; a small batch does without it

    parts, slow = _parts(urls)
    res = np.empty(len(urls), dtype=np.uint64)
    for rows, keys, prefix in parts:
        res[rows] = hash64_encoded(keys.cast(pl.Binary).to_list(), prefix=prefix.encode())
    for i in slow:
        res[i] = hash64(normalize_url(urls[i]))
    return res
