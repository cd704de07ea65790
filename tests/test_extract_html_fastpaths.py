"""extract-html's fast paths (issue 17 speed) against the slow definitions they replace, on crafted pages and on
every world page and development page (../shared/benchmarks/web, skipped when absent)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

pytest.importorskip("resiliparse")

from resiliparse.parse.html import HTMLTree  # noqa: E402

from openmimo.data import extract_html as ex  # noqa: E402

WEB = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "web"


@functools.lru_cache(maxsize=1)
def pages() -> list[bytes]:
    from openmimo.data.world import generate

    out = [r["html"].encode() for r in generate(0, 0.25)["files"]["html/pages.jsonl"]]
    if (WEB / "groundtruth.jsonl").is_file():
        out += [(WEB / json.loads(line)["file"]).read_bytes() for line in open(WEB / "groundtruth.jsonl", encoding="utf-8")]
    return out


def markers_by_scans(lower: bytes) -> set[str]:
    """The definition ``markers`` replaces: one substring scan per marker."""
    found = {"katex"} if b"katex" in lower else set()
    if b"math" in lower:
        found |= {m for m in ex.MARKERS if m != "katex" and m.encode() in lower}
        found.add("mjx-container")  # reported whenever there is "math": it only adds a tag to the CSS query
        if b"rendermath" in lower:
            found.add("render")
    return found


CRAFTED = [b"", b"math", b"<math>", b"mathjax", b"<script type='math/tex'>", b"mwe-math-fallback", b"<!--[if mathml]>",
           b"katex", b"rendermathinelement(", b"mjx-container", b"xmathjaxmath/<math", b"mathmathmath",
           b"[if mathml", b"if mathml]", b"mwe-mat", b"render math", b"<m" + b"ath" * 3, b"katexmath/"]


@pytest.mark.parametrize("lower", CRAFTED)
def test_markers_crafted(lower):
    assert ex.markers(lower) == markers_by_scans(lower)


def test_markers_every_page():
    for raw in pages():
        assert ex.markers(raw.lower()) == markers_by_scans(raw.lower())


def test_consent_parts_match_only_pages_with_their_needle():
    """The consent-dialog selector parts are always in the query: safe because a part matches nothing on a page
    whose source lacks its needle (the scans that used to leave them out)."""
    for raw in pages():
        lower = raw.lower()
        tree = HTMLTree.parse(raw.decode("utf-8", "replace"))
        for needle, sel in ex.CONSENT_NEEDLES.items():
            if needle not in lower:
                assert tree.body.query_selector(sel) is None


def test_math_images_selector_is_the_old_list():
    old = ", ".join(f"img{a}" for a in ('[src*="latex" i]', '[src*="codecogs" i]', '[src*="mathtex" i]',
                                        '[src*="mimetex" i]', '[src*="cht=tx"]', '[class*="tex" i]',
                                        '[class*="math" i]', '[alt^="$"]'))
    imgs = ['<img src="x.LaTeX.png">', '<img src="https://latex.codecogs.com/x">', '<img src="a?cht=tx&chl=x">',
            '<img src="a?CHT=TX">', '<img class="TeX">', '<img class="wp-Math">', '<img alt="$x$">', '<img alt=" $x$">',
            '<img src="plain.png">', '<IMG SRC="MimeTeX.cgi?x">', '<span class="tex">x</span>', '<img src="mathtex.cgi">']
    html = "<html><body>" + "".join(f"<p id=p{i}>{s}</p>" for i, s in enumerate(imgs)) + "</body></html>"
    for doc in (html, "<!DOCTYPE html>" + html):  # quirks and standards mode
        body = HTMLTree.parse(doc).body
        ids = lambda sel: [n.parent.id for n in body.query_selector_all(sel)[:]]  # noqa: E731
        assert ids(ex.MATH_IMAGES) == ids(old) == ["p0", "p1", "p2", "p4", "p5", "p6", "p9", "p11"]


def test_gated_script_scan_same_output_every_page(monkeypatch):
    """Scanning for ``MathJax`` / ``renderMathInElement`` only where the byte markers allow gives the output of
    scanning every page (``exact`` False forces the scans)."""
    fast = [ex.extract_html(raw) for raw in pages()]
    decode = ex._decode
    monkeypatch.setattr(ex, "_decode", lambda data: decode(data)[:2] + (False,))
    assert [ex.extract_html(raw) for raw in pages()] == fast


MATHJAX_PAGE = ("<!DOCTYPE html><html><head><meta charset='{cs}'><script>MathJax = {{tex: {{inlineMath: [['@@', '@@']]}}}};"
                "</script><script src='/s/mj.js'></script></head><body><article><p>{filler}</p><p>So @@a^2@@ holds, "
                "caf\u00e9.</p></article></body></html>")
FILLER = "Ordinary prose that makes the page an article for the main content heuristics, long enough to count. " * 3


@pytest.mark.parametrize("kind", ["utf-8 bytes", "cp1252 bytes", "str", "private-use split"])
def test_mathjax_config_read_on_every_input_kind(kind):
    html = MATHJAX_PAGE.format(cs="utf-8" if kind != "cp1252 bytes" else "windows-1252", filler=FILLER)
    if kind == "private-use split":  # "Math<U+E000>Jax": the stripped text says MathJax, the bytes do not
        html = html.replace("MathJax = ", "Math" + ex.P_OPEN + "Jax = ")
    data = html if kind == "str" else html.encode("utf-8" if kind != "cp1252 bytes" else "cp1252")
    rec = ex.extract_html(data)
    assert "$a^2$" in rec["text"], rec["text"]
    assert rec["formulas"] == 1


def test_katex_auto_render_config_without_katex_name():
    html = ("<html><head><script>renderMathInElement(document.body, {delimiters: [{left: '%%', right: '%%', "
            f"display: false}}]}});</script></head><body><article><p>{FILLER}</p><p>Then %%x+1%% follows.</p>"
            "</article></body></html>")
    assert "$x+1$" in ex.extract_html(html.encode())["text"]


def test_boilerplate_chars_is_visible_text_left_out():
    html = (f"<html><body><nav><a href='/'>Home</a> <a href='/b'>Blog</a></nav><article><h1>Title</h1><p>{FILLER}</p>"
            "</article><script>var x = 'not visible';</script><footer>Copyright example.org</footer></body></html>")
    rec = ex.extract_html(html)
    visible = len(HTMLTree.parse(html).body.inner_text)
    assert "not visible" not in HTMLTree.parse(html).body.inner_text
    assert rec["boilerplate_chars"] == visible - len(rec["text"]) > 0
