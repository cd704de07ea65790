"""Born-digital PDF -> markdown-ish text (the record format of extract_html); `openmimo extract-pdf`.

Reads PDFium's text layer (pypdfium2): every glyph with its box, baseline origin, font size and font flags.
Glyphs become lines (one baseline; smaller glyphs raised or lowered against it are super/subscripts, written
``^{..}`` / ``_{..}``), lines become columns and reading order (full-width lines cut the page into bands; in a
band the left column is read before the right), and then paragraphs (hyphenation at line ends joined).  Lines
set in a monospaced font are code: consecutive ones form a fenced block whose indentation is each line's offset
from the block's left edge in character widths.  Unicode math symbols are mapped to LaTeX, and a run of words
around a script or symbol is wrapped in ``$..$``.  Lines repeated in the top or bottom margin on most pages
(running headers, footers) and bare page numbers are dropped.  A page whose text layer is missing or garbled
(no glyphs, unmapped glyphs, mostly replacement / private-use characters) is not emitted: its number goes to
``ocr_pages`` for a later OCR pass.
"""

from __future__ import annotations

import ctypes
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from openmimo.data.html_math import SYMBOLS

MONO_FLAG = 1  # PDF font descriptor flag FixedPitch
MONO_NAMES = ("mono", "courier", "consol", "typewriter", "cmtt", "menlo", "inconsolata")  # fonts not flagged so
MARGIN = 0.07  # top/bottom share of the page height where running headers and footers live
BAD_SHARE = 0.3  # a page with more than this share of unmapped/replacement glyphs goes to OCR
_MATH_CHARS = set("=+<>±×÷≤≥≠≈∑∏∫∂∇∞√∈∉⊂⊆∪∩→⇒⇔∀∃αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ·′")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?$|^[ivxlc]{1,6}$", re.I)


@dataclass(slots=True)
class Glyph:
    ch: str
    x0: float
    x1: float
    y0: float  # bottom (PDF coordinates: y grows upwards)
    y1: float
    base: float  # baseline (origin y)
    size: float
    mono: bool


@dataclass
class Line:
    """Glyphs on one baseline; the properties are computed once, after the line is built."""

    glyphs: list[Glyph] = field(default_factory=list)

    @cached_property
    def x0(self) -> float:
        return min(g.x0 for g in self.glyphs if not g.ch.isspace()) if self.visible else self.glyphs[0].x0

    @cached_property
    def x1(self) -> float:
        return max(g.x1 for g in self.glyphs)

    @cached_property
    def visible(self) -> bool:
        return any(not g.ch.isspace() for g in self.glyphs)

    @cached_property
    def size(self) -> float:
        sizes = Counter(round(g.size, 1) for g in self.glyphs if not g.ch.isspace())
        return sizes.most_common(1)[0][0] if sizes else self.glyphs[0].size

    @cached_property
    def base(self) -> float:
        size = self.size
        bases = [g.base for g in self.glyphs if abs(g.size - size) < 0.15 * size and not g.ch.isspace()]
        return sorted(bases)[len(bases) // 2] if bases else self.glyphs[0].base

    @cached_property
    def mono(self) -> bool:
        vis = [g for g in self.glyphs if not g.ch.isspace()]
        return bool(vis) and sum(g.mono for g in vis) >= 0.8 * len(vis)


class _Calls:
    """PDFium's per-glyph text functions re-declared with plain ``c_void_p`` handles: pypdfium2's own prototypes
    check and convert every argument, which costs more than the call itself at tens of thousands of glyphs a page."""

    def __init__(self, raw) -> None:
        vp, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
        pd = ctypes.POINTER(d)

        def proto(fn, restype, *args):
            return ctypes.CFUNCTYPE(restype, *args)(ctypes.cast(fn, vp).value)

        self.unicode = proto(raw.FPDFText_GetUnicode, ctypes.c_uint, vp, i)
        self.map_error = proto(raw.FPDFText_HasUnicodeMapError, i, vp, i)
        self.loose_box = proto(raw.FPDFText_GetLooseCharBox, i, vp, i, ctypes.POINTER(raw.FS_RECTF))
        self.origin = proto(raw.FPDFText_GetCharOrigin, i, vp, i, pd, pd)
        self.size = proto(raw.FPDFText_GetFontSize, d, vp, i)
        self.text_object = proto(raw.FPDFText_GetTextObject, vp, vp, i)


_CALLS: list[_Calls] = []  # built on first use (pypdfium2 is imported lazily)


def _glyphs(textpage, raw) -> tuple[list[Glyph], int]:
    """Glyphs of a page in content order (PDFium's generated line breaks dropped, generated spaces kept) and the
    number of glyphs without a Unicode mapping."""
    if not _CALLS:
        _CALLS.append(_Calls(raw))
    c = _CALLS[0]
    tp = ctypes.cast(textpage, ctypes.c_void_p)
    n = raw.FPDFText_CountChars(textpage)
    box = raw.FS_RECTF()
    pbox = ctypes.byref(box)
    ox, oy = ctypes.c_double(), ctypes.c_double()
    pox, poy = ctypes.byref(ox), ctypes.byref(oy)
    buf = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    out, bad = [], 0
    font_cache: dict[int, bool] = {}
    units = (ctypes.c_ushort * (n + 1))()
    got = raw.FPDFText_GetText(textpage, 0, n, units)
    codes = list(units[:max(0, got - 1)])  # UTF-16 units, one per glyph unless a glyph is outside the BMP
    if len(codes) != n or any(0xD800 <= u <= 0xDFFF for u in codes):
        codes = [c.unicode(tp, i) for i in range(n)]
    for i, code in enumerate(codes):
        if code in (10, 13):
            continue
        # PDFium marks a line-end hyphen as 2 (GetUnicode) or U+FFFE (GetText)
        ch = "-" if code in (2, 0xFFFE) else chr(code) if code else "\ufffd"
        if code == 0 or code == 0xFFFD or 0xE000 <= code <= 0xF8FF:
            bad += 1
        elif i % 4 == 0 and c.map_error(tp, i) == 1:
            bad += 4  # PDFium's map-error flag, sampled on every 4th glyph: stands for its stride
        c.loose_box(tp, i, pbox)  # advance-wide box: gaps between boxes are real spaces
        c.origin(tp, i, pox, poy)
        size = c.size(tp, i)
        key = c.text_object(tp, i) or 0
        mono = font_cache.get(key)
        if mono is None:
            raw.FPDFText_GetFontInfo(textpage, i, buf, len(buf), ctypes.byref(flags))
            name = buf.value.decode("latin-1", "replace").lower()
            mono = bool(flags.value & MONO_FLAG) or any(k in name for k in MONO_NAMES)
            font_cache[key] = mono
        x0, x1 = box.left, box.right
        if ch == " " and x1 <= x0:  # a generated space has no box: put it right after the previous glyph
            x0 = x1 = out[-1].x1 if out else ox.value
        out.append(Glyph(ch, x0, x1, box.bottom, box.top, oy.value, size or 10.0, mono))
    return out, bad


def _lines(glyphs: list[Glyph]) -> list[Line]:
    """Glyphs in content order -> lines: a glyph joins the current line when its baseline is within half a line
    height of it (raised/lowered smaller glyphs included) and it does not jump back to the left."""
    lines: list[Line] = []
    cur = Line()
    ref_base, ref_size, last_x1 = None, None, None
    for g in glyphs:
        if ref_base is None:
            cur.glyphs.append(g)
            ref_base, ref_size, last_x1 = g.base, g.size, g.x1
            continue
        same = abs(g.base - ref_base) <= 0.5 * max(ref_size, g.size) and g.x0 >= last_x1 - 0.5 * ref_size
        if same:
            cur.glyphs.append(g)
            if g.size >= ref_size * 0.95 and not g.ch.isspace():
                if g.size > ref_size * 1.05 or abs(g.base - ref_base) > 0.1 * ref_size and g.size >= ref_size:
                    ref_base, ref_size = g.base, g.size
            last_x1 = max(last_x1, g.x1)
        else:
            lines.append(cur)
            cur = Line([g])
            ref_base, ref_size, last_x1 = g.base, g.size, g.x1
    if cur.glyphs:
        lines.append(cur)
    return [ln for ln in lines if ln.visible]


def _math_token(tok: str) -> bool:
    return bool(re.search(r"[\^_]\{|\\[A-Za-z]", tok)) or tok in ("=", "+", "-", "<", ">", "(", ")") or \
        bool(re.fullmatch(r"[A-Za-z]|\d+|[A-Za-z]\(\w\)|\(?[A-Za-z0-9]+[=+\-*/][A-Za-z0-9]+\)?", tok))


def _render(line: Line) -> tuple[str, bool]:
    """A line's text, super/subscripts as ``^{..}`` / ``_{..}`` and math symbols as LaTeX; ``(text, has_math)``."""
    size, base = line.size, line.base
    parts: list[str] = []
    script = None  # "^" or "_" while inside a script run
    prev: Glyph | None = None
    has_math = False
    letters = [g.ch for g in line.glyphs if g.ch.isalpha()]
    greek_text = sum("\u0370" <= ch <= "\u03ff" for ch in letters) > 0.3 * max(1, len(letters))  # Greek prose
    for g in line.glyphs:
        if prev is not None and not g.ch.isspace() and not prev.ch.isspace() and \
                g.x0 - prev.x1 > 0.12 * size and not line.mono:
            parts.append(" ")
        kind = None
        if not g.ch.isspace() and g.size < 0.85 * size:
            if g.base > base + 0.15 * size:
                kind = "^"
            elif g.base < base - 0.08 * size:
                kind = "_"
        if kind != script:
            if script:
                parts.append("}")
            if kind:
                parts.append(kind + "{")
                has_math = True
            script = kind
        ch = g.ch
        if ch in SYMBOLS and ch not in ("\u00a0", "·", "−") and ord(ch) > 127 and \
                not (greek_text and "\u0370" <= ch <= "\u03ff"):
            tex = SYMBOLS[ch]
            if tex.startswith("\\"):
                has_math = True
                ch = tex + " " if tex[-1].isalpha() else tex
        elif ch == "−":
            ch = "-"
        elif ch == "\u00a0":
            ch = " "
        if script and ch == " ":
            continue
        parts.append(ch)
        prev = g
    if script:
        parts.append("}")
    text = "".join(parts)
    text = re.sub(r"(\\[A-Za-z]+) (?=[^A-Za-z])", r"\1", text) if not line.mono else text
    return text.rstrip(), has_math


def _wrap_math(text: str) -> tuple[str, int]:
    """Wrap each run of math-looking words that holds a script or a LaTeX command in ``$..$``."""
    toks = text.split(" ")
    out, run, n = [], [], 0

    def flush() -> None:
        nonlocal n
        if run and any(re.search(r"[\^_]\{|\\[A-Za-z]", t) for t in run):
            core = " ".join(run)
            trail = re.search(r"[.,;:]+$", core)
            tail = trail.group(0) if trail else ""
            core = core[: len(core) - len(tail)] if tail else core
            out.append(f"${core}${tail}")
            n += 1
        else:
            out.extend(run)
        run.clear()

    for tok in toks:
        if tok and _math_token(tok.rstrip(".,;:")):
            run.append(tok)
        else:
            flush()
            out.append(tok)
    flush()
    return " ".join(out), n


# ---- page layout ----------------------------------------------------------------------------------------------
def _columns(lines: list[Line], width: float) -> list[Line]:
    """Reading order: full-width lines cut the page into bands; in a band with two columns (a vertical gap near
    the middle that no line crosses) the left column is read top to bottom before the right one."""
    mid = width / 2
    ordered: list[Line] = []
    band: list[Line] = []

    def flush() -> None:
        left = [ln for ln in band if ln.x1 <= mid + 0.02 * width]
        right = [ln for ln in band if ln.x0 >= mid - 0.02 * width and ln not in left]
        rest = [ln for ln in band if ln not in left and ln not in right]
        if left and right and not rest:
            ordered.extend(sorted(left, key=lambda ln: -ln.base))
            ordered.extend(sorted(right, key=lambda ln: -ln.base))
        else:
            ordered.extend(band)
        band.clear()

    two_col = sum(1 for ln in lines if ln.x1 <= mid + 0.02 * width) >= 3 and \
        sum(1 for ln in lines if ln.x0 >= mid - 0.02 * width) >= 3
    if not two_col:
        return lines
    for ln in sorted(lines, key=lambda ln: -ln.base):
        if ln.x0 < mid - 0.02 * width and ln.x1 > mid + 0.02 * width:
            flush()
            ordered.append(ln)
        else:
            band.append(ln)
    flush()
    return ordered


def _margin_key(text: str) -> str:
    return re.sub(r"\d+", "#", text.strip().lower())


def _furniture(pages: list[tuple[list[Line], float]]) -> set[tuple[int, int]]:
    """``(page, line index)`` of running headers/footers (the same text, digits aside, in the top or bottom
    margin of at least half the pages, two at least) and of bare page numbers in the margins."""
    keys: Counter = Counter()
    marg: list[list[tuple[int, str]]] = []
    for lines, height in pages:
        here = []
        for i, ln in enumerate(lines):
            if ln.base > height * (1 - MARGIN) or ln.base < height * MARGIN:
                here.append((i, _margin_key(_render(ln)[0])))
        marg.append(here)
        keys.update({k for _, k in here})
    drop = set()
    need = max(2, (len(pages) + 1) // 2)
    for p, here in enumerate(marg):
        for i, key in here:
            if keys[key] >= need or _PAGE_NUMBER.match(key.replace("#", "1")):
                drop.add((p, i))
    return drop


def _code_block(lines: list[Line]) -> str:
    """Monospaced lines -> code with each line's indentation in character widths from the block's left edge."""
    widths = [g.x1 - g.x0 for ln in lines for g in ln.glyphs if not g.ch.isspace() and g.x1 > g.x0]
    advances = []
    for ln in lines:
        vis = [g for g in ln.glyphs if not g.ch.isspace()]
        advances += [b.x0 - a.x0 for a, b in zip(vis, vis[1:]) if 0 < b.x0 - a.x0 < 2 * ln.size]
    cw = sorted(advances)[len(advances) // 2] if advances else (sorted(widths)[len(widths) // 2] if widths else 6.0)
    left = min(ln.x0 for ln in lines)
    out = []
    prev_base = None
    for ln in lines:
        if prev_base is not None:
            gap = round((prev_base - ln.base) / (ln.size * 1.15)) - 1
            out.extend([""] * max(0, min(gap, 3)))  # blank lines inside a listing
        prev_base = ln.base
        indent = max(0, round((ln.x0 - left) / cw))
        vis = "".join(g.ch for g in ln.glyphs).strip()
        text = _spaced(ln, cw)
        out.append(" " * indent + (text if text else vis))
    return "\n".join(out)


def _spaced(line: Line, cw: float) -> str:
    """A monospaced line's text from its first visible glyph, gaps between glyphs filled with spaces."""
    vis = [g for g in line.glyphs if not g.ch.isspace()]
    if not vis:
        return ""
    out, x = [], vis[0].x0
    for g in vis:
        gap = round((g.x0 - x) / cw)
        out.append(" " * max(0, gap) + g.ch)
        x = g.x0 + cw
    return "".join(out)


def _paragraphs(lines: list[Line]) -> tuple[list[str], int, int]:
    """Lines in reading order -> blocks (paragraphs, fenced code); ``(blocks, formulas, code blocks)``."""
    blocks: list[str] = []
    para: list[str] = []
    code: list[Line] = []
    n_math = n_code = 0
    prev: Line | None = None

    def end_para() -> None:
        if para:
            blocks.append(" ".join(para))
            para.clear()

    def end_code() -> None:
        nonlocal n_code
        if code:
            blocks.append("```\n" + _code_block(code) + "\n```")
            n_code += 1
            code.clear()

    for ln in lines:
        if ln.mono:
            end_para()
            code.append(ln)
            prev = ln
            continue
        end_code()
        text, has_math = _render(ln)
        if has_math:
            text, k = _wrap_math(text)
            n_math += k
        new_para = prev is None or prev.mono or prev.base - ln.base > 1.8 * ln.size or prev.base < ln.base \
            or abs(ln.size - prev.size) > 0.15 * ln.size
        if new_para:
            end_para()
        if para and re.search(r"[A-Za-z][-\u00ad]$", para[-1]) and text[:1].islower():
            para[-1] = para[-1][:-1] + text  # hyphenation at the line end
        else:
            para.append(text)
        prev = ln
    end_para()
    end_code()
    return blocks, n_math, n_code


def _images(page, raw) -> int:
    handle = page.raw
    return sum(raw.FPDFPageObj_GetType(raw.FPDFPage_GetObject(handle, i)) == raw.FPDF_PAGEOBJ_IMAGE
               for i in range(raw.FPDFPage_CountObjects(handle)))


def _garbled(glyphs: list[Glyph], bad: int, images: int) -> bool:
    """Whether a page's text is not recoverable from its text layer: pictures but (almost) no text (a scan), or
    many glyphs without a Unicode mapping, replacement, private-use or control characters."""
    vis = [g for g in glyphs if not g.ch.isspace()]
    if len(vis) < 20:
        return images > 0
    odd = bad + sum(1 for g in vis if unicodedata.category(g.ch).startswith("C"))
    return odd > BAD_SHARE * len(vis)


def extract_pdf(path, doc_id: str = "") -> dict:
    """One PDF file -> ``{"id", "url", "text", "pages", "ocr_pages", "formulas", "code_blocks", "chars",
    "boilerplate_chars"}``; ``ocr_pages`` lists (1-based) the pages left out because their text layer is
    missing or garbled."""
    import pypdfium2 as pdfium  # heavy optional dependency (the data extra)
    import pypdfium2.raw as raw

    doc = pdfium.PdfDocument(str(path))
    pages: list[tuple[list[Line], float]] = []
    ocr = []
    try:
        for p in range(len(doc)):
            page = doc[p]
            width, height = page.get_size()
            textpage = page.get_textpage()
            glyphs, bad = _glyphs(textpage.raw, raw)
            images = _images(page, raw) if len(glyphs) < 40 else 0
            textpage.close()
            page.close()
            if _garbled(glyphs, bad, images):
                ocr.append(p + 1)
                pages.append(([], height))
                continue
            pages.append((_columns(_lines(glyphs), width), height))
    finally:
        doc.close()
    drop = _furniture(pages)
    kept: list[Line] = []
    dropped_chars = 0
    for p, (lines, _) in enumerate(pages):
        for i, ln in enumerate(lines):
            if (p, i) in drop:
                dropped_chars += len(ln.glyphs)
            else:
                kept.append(ln)
    blocks, n_math, n_code = _paragraphs(kept)
    text = "\n\n".join(blocks)
    return {"id": doc_id, "url": None, "text": text, "pages": len(pages), "ocr_pages": ocr, "formulas": n_math,
            "code_blocks": n_code, "chars": len(text), "boilerplate_chars": dropped_chars}


def add_arguments(parser) -> None:
    from openmimo.data.extract_io import add_io_arguments

    add_io_arguments(parser, "PDF files or folders (searched recursively for *.pdf)")


def run(args) -> int:
    from openmimo.data.extract_io import run_extraction

    return run_extraction(args, "pdf")
