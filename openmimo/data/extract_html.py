"""HTML -> markdown-ish text that keeps math (as LaTeX) and code (indentation exact); `openmimo extract-html`.

:func:`extract_html` parses a page with Resiliparse, replaces every math element (MathJax ``<script
type="math/tex">``, KaTeX's TeX annotation, MathML, LaTeX images, AsciiMath), every ``<pre>`` code block, inline
``<code>``, data table and heading by a placeholder token, removes the rendered copies of formulas and the
boilerplate Resiliparse's main-content heuristics miss (cookie banners, share bars, related-post lists), lets
Resiliparse's C++ extractor select the main content and lay out the blocks, and finally turns the page's TeX
delimiters into ``$..$`` / ``$$..$$`` and the placeholders back into ``$tex$``, ``$$tex$$``, fenced code,
backtick spans and markdown tables.  So the expensive walk runs in C++ and Python touches only the elements that
need it.  Runs of short text blocks (menus, widgets, user panels that main-content selection kept) are dropped
from the laid-out text; code, formulas and tables never are.  The record (:func:`extract_html` returns it) carries
per-page counters; the CLI reads directories, files, JSONL page dumps (the tiny world's ``html/pages.jsonl``) and
WARC files (see :mod:`openmimo.data.extract_io`).
"""

from __future__ import annotations

import re

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree, NodeType

from openmimo.data.html_math import asciimath_to_latex, image_tex, mathjax_delimiters, mathml_to_latex
from openmimo.data.html_tables import code_language, code_text, table_markdown

# Private-use characters: never in real text, kept verbatim by Resiliparse.  Their low bytes are not 0: a str
# scan for such a code point would stop at the high byte of every ASCII character.
P_OPEN, P_CLOSE = "\ue0fe", "\ue0fb"
_PLACEHOLDER = re.compile(P_OPEN + r"(\d+)" + P_CLOSE)
_WS = re.compile(r"\s+")

# rendered copies of formulas (the TeX source is read elsewhere) and furniture main-content heuristics keep
RENDERED_MATH = (".MathJax_Preview, .MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_SVG_Display, .MathJax_CHTML, "
                 ".MJX_Assistive_MathML, .katex-html, .mwe-math-fallback-image-inline, .mwe-math-fallback-image-display")
BOILERPLATE_CLASSES = ("share shares sharing share-buttons share-bar share-links social social-share social-links "
                       "social-icons socials related related-posts related-articles related-content subscribe ad ads "
                       "advert advertisement sponsored promo comment-form comment-respond skip-link signup "
                       "paywall").split()
_NOT_ROOT = ":not(html):not(body):not(main):not(article)"
# Skipped by Resiliparse's C++ walk itself: whole class names (a substring match would hit "selectionShareable"
# paragraphs), a few unambiguous substrings, the pop-up widget classes of the common UI kits (popovers, dropdown
# menus, tooltips: hidden until a click or hover, so never the page's text) and anchors that run a script instead
# of pointing somewhere (vote, reply, report and pay buttons).
SKIP = [f'[class~="{c}" i]{_NOT_ROOT}' for c in BOILERPLATE_CLASSES] + [
    f"{sel}{_NOT_ROOT}" for sel in ('[class*="newsletter" i]', '[class*="breadcrumb" i]', '[class*="addthis" i]',
                                    '[class*="sharedaddy" i]', '[id="related" i]', '[id="respond" i]',
                                    '[class*="popover" i]', '[class*="dropdown" i]', '[class*="tooltip" i]',
                                    'a[href^="javascript:" i]')]
# Consent dialogs: matched by substrings that also name page wrappers (<div class="has-cookie-bar">), so they are
# removed in Python, only below a size (CONSENT_MAX_CHARS) and only on pages whose source has a needle.
CONSENT_NEEDLES = {b"cookie": '[id*="cookie" i], [class*="cookie" i]', b"consent": '[id*="consent" i], [class*="consent" i]',
                   b"gdpr": '[class*="gdpr" i]', b"onetrust": '[id*="onetrust" i], [class*="onetrust" i]'}
CONSENT = ", ".join(CONSENT_NEEDLES.values())
RENDERED_CLASSES = {c.strip()[1:] for c in RENDERED_MATH.split(",")}
KEEP_TAGS = {"html", "body", "main", "article"}
CONSENT_MAX_CHARS = 20000  # a consent dialog (vendor lists run long); a matched element with more text is content


class Page:
    """Placeholders of one page: ``add`` returns the token for a rendered replacement."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (kind, text) with kind in inline/display/code/icode/table

    def add(self, kind: str, text: str) -> str:
        self.items.append((kind, text))
        return f"{P_OPEN}{len(self.items) - 1}{P_CLOSE}"

    def holds_block(self, text: str) -> bool:
        """Whether ``text`` holds the token of a code block, display formula or table."""
        return any(self.items[int(i)][0] in ("code", "display", "table") for i in _PLACEHOLDER.findall(text))


def decode(data: bytes | str) -> tuple[str, str]:
    """``(text, encoding)``: UTF-8 when the bytes are UTF-8, else the detected (or declared) encoding, errors
    replaced.  The encoding is ``"utf-8"`` for str input."""
    return _decode(data)[:2]


def _decode(data: bytes | str) -> tuple[str, str, bool]:
    """``decode`` and whether the text is the bytes read as UTF-8 (or str input): then each ASCII character of
    the text is the same byte of the source, so a scan of the lower-cased bytes finds every ASCII needle."""
    if isinstance(data, str):
        return data, "utf-8", True
    try:
        return data.decode("utf-8"), "utf-8", True
    except UnicodeDecodeError:
        enc = detect_encoding(data)
        return bytes_to_str(data, enc, errors="replace"), enc, False


def _replace(tree: HTMLTree, node, token: str) -> None:
    node.parent.replace_child(tree.create_text_node(token), node)


MATH_IMAGES = ('img:is([src*="latex" i], [src*="codecogs" i], [src*="mathtex" i], [src*="mimetex" i], [src*="cht=tx"], '
               '[class*="tex" i], [class*="math" i], [alt^="$"])')  # one tag test per element, not eight
STRUCTURE = "pre, code, table, h1, h2, h3, h4, h5, h6, article"
GUTTER = ".gutter, .linenos, .lineno, .line-numbers"


MARKERS = ("mathjax", "katex", "mwe-math", "math/", "mjx-container", "<math", "[if mathml]")


def markers(lower: bytes) -> set[str]:
    """Which kinds of math markup (``MARKERS``) the lower-cased page source mentions, plus ``"render"`` when some
    ``math`` follows ``render`` (KaTeX's ``renderMathInElement``).  Every marker but KaTeX's holds "math", so the
    source is scanned twice: once for ``katex``, once for ``math``, whose occurrences (few on most pages) are
    classified by the bytes around them.  ``mjx-container`` is reported whenever the source holds ``math``: it
    only adds the tag to the CSS query, which matches only where the source has the tag (MathJax 3's rendered
    ``<mjx-math>`` also holds "math")."""
    found = {"katex"} if b"katex" in lower else set()
    i = lower.find(b"math")
    if i < 0:
        return found
    found.add("mjx-container")
    while i >= 0:
        after = lower[i + 4:i + 7]
        if after == b"jax":
            found.add("mathjax")
        elif after[:1] == b"/":
            found.add("math/")
        before = lower[max(0, i - 6):i]
        if before.endswith(b"<"):
            found.add("<math")
        elif before.endswith(b"mwe-"):
            found.add("mwe-math")
        elif before.endswith(b"[if ") and after == b"ml]":
            found.add("[if mathml]")
        elif before == b"render":
            found.add("render")
        i = lower.find(b"math", i + 4)
    return found


def _selector(found: set[str]) -> str:
    """One CSS selector for every element this page needs touched (each query walks the whole DOM, so there is
    one); parts for math kinds the page source never mentions are left out.  The consent-dialog parts are always
    in: each matches only where the source holds its needle, and scanning for the needles cost more than the
    parts cost the query."""
    parts = [STRUCTURE, MATH_IMAGES, CONSENT]
    if found & {"mathjax", "katex", "mwe-math"}:
        parts.append(RENDERED_MATH)
    if "math/" in found:
        parts.append('script[type^="math/" i]')
    if "katex" in found:
        parts.append(".katex")
    if "mjx-container" in found:
        parts.append("mjx-container")
    if "<math" in found:
        parts.append("math")
    return ", ".join(parts)


def _prepare(tree: HTMLTree, body, page: Page, found: set[str], ascii_math: bool) -> None:
    """Every formula, code block, inline code span and data table -> a placeholder; rendered formula copies and
    boilerplate removed; headings marked.  Code goes first (math markup inside code is code), tables last (their
    cells then hold formula placeholders)."""
    nodes = body.query_selector_all(_selector(found))[:]  # a slice: one evaluation (indexing re-runs the query)
    buckets: dict[str, list] = {k: [] for k in ("rendered", "pre", "code", "math", "table", "heading", "boiler", "article")}
    for node in nodes:
        tag = node.tag
        classes = (node.class_name or "").split()
        if RENDERED_CLASSES.intersection(classes):  # exact, case-sensitive (quirks-mode CSS matching is not)
            buckets["rendered"].append(node)
        elif tag in ("pre", "code"):
            buckets[tag].append(node)
        elif tag in ("script", "mjx-container", "math", "img") or "katex" in classes:
            buckets["math"].append(node)
        elif tag == "table":
            buckets["table"].append(node)
        elif tag == "article":
            buckets["article"].append(node)
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            buckets["heading"].append(node)
        elif node.matches(CONSENT):  # not only a case-insensitive near miss of a rendered-math class
            buckets["boiler"].append(node)
    for node in buckets["rendered"]:
        _detach(node)
    for node in buckets["pre"]:
        _pre(tree, node, page)
    for node in buckets["code"]:
        if _attached(body, node):
            text = node.text
            if "\n" in text.strip():
                _replace(tree, node, page.add("code", f"{code_language(node)}\n{code_text(tree, node)}"))
            elif text.strip():
                _replace(tree, node, page.add("icode", _WS.sub(" ", text.strip())))
    for node in buckets["math"]:
        if _attached(body, node):
            _formula(tree, node, page, ascii_math)
    for node in buckets["table"]:
        if _attached(body, node) and node.query_selector("table") is None:
            md = table_markdown(node, page.holds_block)
            if md is not None:
                _replace(tree, node, page.add("table", md))
    if len(buckets["article"]) > 1:
        for node in buckets["article"]:
            _unwrap(tree, node)
    marks: dict[str, object] = {}  # one "## " text node per level, cloned per heading (half a create's cost)
    for node in buckets["heading"]:
        mark = marks.get(node.tag)
        if mark is None:
            mark = marks[node.tag] = tree.create_text_node("#" * int(node.tag[1]) + " ")
            node.prepend(mark)
        else:
            node.prepend(mark.clone_node())
    for node in buckets["boiler"]:
        if node.tag not in KEEP_TAGS and _attached(body, node) and node.query_selector("article, main") is None \
                and len(node.text) <= CONSENT_MAX_CHARS:
            _detach(node)


def _unwrap(tree: HTMLTree, node) -> None:
    """``node`` becomes a plain ``<div>`` with the same children."""
    if node.parent is None:
        return
    div = tree.create_element("div")
    for child in node.child_nodes[:]:
        div.append_child(child)
    node.parent.replace_child(div, node)


def _attached(body, node) -> bool:
    return node.parent is not None and body.contains(node)


def _detach(node) -> None:
    if node.parent is not None:
        node.parent.remove_child(node)


def _formula(tree: HTMLTree, node, page: Page, ascii_math: bool) -> None:
    tag = node.tag
    if tag == "script":
        kind = (node.getattr("type") or "").lower().replace(" ", "")
        tex = node.text.strip()
        if kind.startswith("math/tex"):
            if re.fullmatch(r"\\(begin|end)group", tex):  # StackExchange's per-post macro scope, no formula
                _detach(node)
            else:
                _replace(tree, node, page.add("display" if "mode=display" in kind else "inline", tex))
        elif kind.startswith("math/asciimath") and ascii_math:
            _replace(tree, node, page.add("inline", asciimath_to_latex(tex)))
        return
    if tag == "img":
        tex = image_tex(node.getattr("src") or "", node.getattr("alt") or "", node.class_name or "")
        if tex:
            _replace(tree, node, page.add("inline", tex))
        return
    if tag == "math":
        tex, display = mathml_to_latex(node)
    else:  # KaTeX span or MathJax 3 container: the MathML inside (KaTeX: its TeX annotation)
        math = node.query_selector("math")
        if math is None or ("katex" in (node.class_name or "") and math.query_selector("annotation") is None):
            return
        tex, display = mathml_to_latex(math)
        parent_classes = (node.parent.class_name or "").split()
        display = display or node.getattr("display") == "true" or "katex-display" in parent_classes
        if "katex-display" in parent_classes:
            node = node.parent
    if tex:
        _replace(tree, node, page.add("display" if display else "inline", tex))


def _pre(tree: HTMLTree, node, page: Page) -> None:
    if node.parent is None or node.parent.closest("pre") is not None:
        return  # a <pre> nested in a <pre> is part of the outer block
    text = code_text(tree, node)
    if not text.strip():
        _detach(node)
        return
    holder = node
    gutter_table = node.closest("table")
    if gutter_table is not None and gutter_table.query_selector(GUTTER) is not None:
        if node.closest(GUTTER) is not None:
            return  # the line numbers' own <pre>: the table goes with the code cell's block
        holder = gutter_table  # highlighter tables: numbers in one cell, the code in the next
    if holder.parent is None:
        return
    _replace(tree, holder, page.add("code", f"{code_language(node)}\n{text}"))


def _conditional_mathml(tree: HTMLTree, body, page: Page) -> None:
    """MathML inside ``<!--[if mathML]>...<![endif]-->`` comments (Word exports) becomes a formula."""
    stack = [body]
    while stack:
        node = stack.pop()
        for child in node.child_nodes[:]:  # a slice: iterating the live list re-reads it per item
            if child.type == NodeType.ELEMENT:
                stack.append(child)
            elif child.type == NodeType.COMMENT and child.text.startswith("[if mathML]>"):
                inner = HTMLTree.parse(f"<html><body>{child.text[len('[if mathML]>'):]}</body></html>")
                math = inner.body.query_selector("math") if inner.body is not None else None
                if math is None:
                    math = next((n for n in inner.body.query_selector_all("*")[:] if n.tag.endswith(":math")), None)
                if math is not None:
                    tex, display = mathml_to_latex(math)
                    _replace(tree, child, page.add("display" if display else "inline", tex))


def _delimited(text: str, inline: list[tuple[str, str]], display: list[tuple[str, str]], dollar: bool) -> tuple[str, int]:
    """The page's own TeX delimiters -> ``$..$`` / ``$$..$$``; literal ``$`` escaped where ``$`` is not math."""
    pairs = [(a, b, True) for a, b in display] + [(a, b, False) for a, b in inline]
    pairs.sort(key=lambda p: -len(p[0]))
    alts = "|".join(
        f"{re.escape(a)}(?P<g{i}>(?:(?!{re.escape(b)}).){{1,4000}}?){re.escape(b)}" for i, (a, b, _) in enumerate(pairs))
    pattern = re.compile(alts, re.S)
    out, pos, n = [], 0, 0
    for m in pattern.finditer(text):
        i = int(m.lastgroup[1:])
        tex = m.group(m.lastgroup).strip()
        is_display = pairs[i][2]
        if not tex or (pairs[i][0] == "$" and (m.group(m.lastgroup)[0].isspace() or text[m.end():m.end() + 1].isdigit())):
            continue
        plain = text[pos:m.start()]
        out.append(plain if dollar else plain.replace("$", "\\$"))
        out.append(f"\n$${tex}$$\n" if is_display else f"${tex}$")
        n += 1
        pos = m.end()
    rest = text[pos:]
    out.append(rest if dollar else rest.replace("$", "\\$"))
    return "".join(out), n


def _fill(text: str, page: Page, counts: dict) -> str:
    def sub(m: re.Match) -> str:
        kind, value = page.items[int(m.group(1))]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "inline":
            return "$" + _WS.sub(" ", value).strip() + "$" if value.strip() else ""
        if kind == "display":
            return f"\n$${value.strip()}$$\n" if value else ""
        if kind == "code":
            lang, code = value.split("\n", 1)
            fence = "```" if "```" not in code else "~~~~"
            return f"\n{fence}{lang}\n{code}\n{fence}\n"
        if kind == "icode":
            ticks = "`" * (max((len(t) for t in re.findall("`+", value)), default=0) + 1)
            return f"{ticks}{value}{ticks}"
        return "\n" + _PLACEHOLDER.sub(sub, value) + "\n"  # a table: its cells hold placeholders too
    return _PLACEHOLDER.sub(sub, text)


def _tidy(text: str) -> str:
    """Strip prose lines (never code lines), bullets as ``- ``, at most one blank line in a row outside code, runs
    of short blocks dropped (:func:`_drop_short_runs`)."""
    lines: list[str] = []
    fixed: list[bool] = []  # per line: code, a fence, a formula, inline code or a table row: never a short block
    fence = None
    for line in text.split("\n"):
        mark = line.strip()
        if fence is None and mark.startswith(("```", "~~~~")):
            fence = mark[:3] if mark.startswith("```") else mark[:4]
            lines.append(mark)
            fixed.append(True)
            continue
        if fence is not None:
            if mark == fence:
                fence = None
                lines.append(mark)
            else:
                lines.append(line)
            fixed.append(True)
            continue
        if mark.startswith("\u2022 "):
            mark = "- " + mark[2:]
        if mark or (lines and lines[-1]):
            lines.append(mark)
            fixed.append(mark.startswith("|") or "`" in mark or "$" in mark or "\\(" in mark or "\\[" in mark)
    return "\n".join(_after_lead(_drop_short_runs(lines, fixed))).strip("\n")


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
LEAD_WORDS = 30  # a line this long (words + CJK characters) before the title is content, not page furniture
SHORT_WORDS = 8  # a text block with fewer words (+ CJK characters) is short: a link, label, menu item or counter
SHORT_RUN = 4  # this many short blocks in a row, with nothing but blank lines between them, are page furniture
_RUN = re.compile("s[sb]*")  # over one code per line: s a short block, b a blank line, x anything else
_CJK_AT_LEAST = [re.compile(f"(?:[^{_CJK.pattern[1:-1]}]*{_CJK.pattern}){{{k}}}") for k in range(SHORT_WORDS + 1)]


def _is_short(line: str) -> bool:
    """Whether ``line`` has fewer than ``SHORT_WORDS`` words + CJK characters (scans stop at the threshold)."""
    ascii = line.isascii()
    if ascii and line.count(" ") < SHORT_WORDS - 1 and "\t" not in line:
        return True
    words = len(line.split())
    return words < SHORT_WORDS and (ascii or _CJK_AT_LEAST[SHORT_WORDS - words].match(line) is None)


def _drop_short_runs(lines: list[str], fixed: list[bool]) -> list[str]:
    """Drop every run of at least ``SHORT_RUN`` consecutive short blocks (lines of fewer than ``SHORT_WORDS``
    words + CJK characters, blank lines between them allowed), the shallow text feature of boilerpipe's and
    jusText's block classifiers: menus, language pickers, user panels, vote and share widgets and option lists
    lay out as runs of short blocks, prose as longer ones.  A fixed line (code, fence, formula, inline code, table
    row) ends a run and is never dropped, and so do a block of ``SHORT_WORDS`` or more and the page's first ``# ``
    title.  A run of list items between two prose lines stays (:func:`_list_in_prose`)."""
    codes = ["x" if f else "s" if line and _is_short(line) else "x" if line else "b" for line, f in zip(lines, fixed)]
    title = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if title is not None:
        codes[title] = "x"
    runs = [m.span() for m in _RUN.finditer("".join(codes))
            if m.group().count("s") >= SHORT_RUN and not _list_in_prose(lines, codes, fixed, *m.span())]
    if not runs:
        return lines
    out: list[str] = []  # a run takes its trailing blank lines along, so no two blank lines meet
    pos = 0
    for start, end in runs:
        out += lines[pos:start]
        pos = end
    out += lines[pos:]
    return out


_LIST_ITEM = re.compile(r"(?:- |\d{1,3}[.)] )")


def _list_in_prose(lines: list[str], codes: list[str], fixed: list[bool], start: int, end: int) -> bool:
    """Whether the short blocks ``lines[start:end]`` are all list items (``- `` or ``1. ``) with a prose line
    (long, not a heading, code or formula) right before and right after them, blank lines aside: a list inside the
    text, kept as jusText keeps short blocks between good ones."""
    if not all(_LIST_ITEM.match(lines[i]) for i in range(start, end) if codes[i] == "s"):
        return False
    before = next((i for i in range(start - 1, -1, -1) if lines[i]), None)
    after = next((i for i in range(end, len(lines)) if lines[i]), None)
    return all(i is not None and codes[i] == "x" and not fixed[i] and not lines[i].startswith("#")
               for i in (before, after))


def _after_lead(lines: list[str]) -> list[str]:
    """Drop what comes before the page's first ``# `` title when all of it is short lines without math or code
    (menus, tickers, "skip to content" links that main-content selection kept)."""
    first = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if not first:
        return lines
    for line in lines[:first]:
        if "$" in line or line.startswith(("```", "~~~~", "|")) or len(line.split()) + len(_CJK.findall(line)) >= LEAD_WORDS:
            return lines
    return lines[first:]


def extract_html(data: bytes | str, page_id: str = "", url: str | None = None) -> dict:
    """One page -> ``{"id", "url", "text", "formulas", "code_blocks", "chars", "boilerplate_chars", "encoding"}``.

    ``boilerplate_chars`` counts the visible characters of the page that the main text leaves out: the length of
    the body's rendered text (its DOM ``innerText`` before any placeholder or removal: no scripts, styles or alt
    texts, line breaks between blocks as in ``text``) less the length of ``text``, at least 0."""
    text_in, encoding, exact = _decode(data)
    if P_OPEN in text_in or P_CLOSE in text_in:  # the page's own private-use characters would read as placeholders
        text_in = text_in.replace(P_OPEN, "").replace(P_CLOSE, "")
        exact = isinstance(data, str)  # the bytes still hold them
    rec = {"id": page_id, "url": url, "text": "", "formulas": 0, "code_blocks": 0, "chars": 0,
           "boilerplate_chars": 0, "encoding": encoding}
    tree = HTMLTree.parse(text_in)
    body = tree.body
    if body is None:
        return rec
    lower = (data if isinstance(data, bytes) else text_in.encode("utf-8", "replace")).lower()  # bytes: ~20x faster
    found = markers(lower)
    scripts = []
    if (("mathjax" in found or not exact) and "MathJax" in text_in) or \
            (("render" in found or not exact) and "renderMathInElement" in text_in):  # scans only where they can hit
        scripts = [s.text for s in tree.document.query_selector_all("script:not([src])")[:]
                   if "MathJax" in s.text or "renderMathInElement" in s.text]
    inline, display, ascii_math = mathjax_delimiters(scripts)
    has_math_engine = bool(scripts) or bool(found & {"mathjax", "katex"})
    dollar = any(a == "$" for a, _ in inline) or not has_math_engine
    page = Page()
    if "[if mathml]" in found:
        _conditional_mathml(tree, body, page)
    full_chars = len(body.inner_text)  # the visible text, before placeholders and removals
    _prepare(tree, body, page, found, ascii_math)
    text = extract_plain_text(tree, preserve_formatting=True, main_content=True, alt_texts=False, links=False,
                              list_bullets=True, comments=True, post_meta=False, skip_elements=SKIP)
    n_delim = 0
    if has_math_engine:
        text, n_delim = _delimited(text, inline, display, dollar)
    counts: dict[str, int] = {}
    text = _tidy(_fill(text, page, counts))
    rec.update(text=text, formulas=counts.get("inline", 0) + counts.get("display", 0) + n_delim,
               code_blocks=counts.get("code", 0), chars=len(text),
               boilerplate_chars=max(0, full_chars - len(text)))
    return rec


def add_arguments(parser) -> None:
    from openmimo.data.extract_io import add_io_arguments

    add_io_arguments(parser, "HTML pages: files, folders (*.html, *.htm), JSONL dumps with an 'html' field, "
                             "WARC files (.warc, .warc.gz)")


def run(args) -> int:
    from openmimo.data.extract_io import run_extraction

    return run_extraction(args, "html")
