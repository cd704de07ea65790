"""URL normalisation for global URL dedup: two spellings of one page get one key.

:func:`normalize_url` gives the key of one URL (a column-wise Polars version measured no faster, see
docs/benchmarks.md):

- scheme and host are lower-cased, and ``https`` counts as ``http`` (the same page served both ways);
- user info and the default port (``:80`` for http, ``:443`` for https) are dropped;
- the fragment (``#...``) is dropped;
- tracking parameters (``utm_*``, ``fbclid``, ``gclid``, ... see :data:`TRACKING`) are removed from the query,
  the remaining parameters are sorted, and an empty query disappears;
- trailing slashes of the path are removed (``/a/b/`` is ``/a/b``; the root is the empty path).

Text that is not an absolute ``scheme://host`` URL normalises to itself stripped of surrounding whitespace
(it still dedups by exact spelling).
"""

from __future__ import annotations

import re

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
