"""Math in web pages -> LaTeX: MathML conversion, MathJax configuration, TeX carried by images.

:func:`mathml_to_latex` converts a ``<math>`` element of a parsed page (Resiliparse DOM) to LaTeX, preferring
what the page already carries: a TeX ``<annotation>``, then the ``alttext`` attribute, else a conversion of the
presentation markup.  :func:`mathjax_delimiters` reads the inline/display delimiters a page's MathJax (v2 or v3)
configuration declares; :func:`image_tex` finds LaTeX in an image's ``alt`` or in a LaTeX-rendering URL
(codecogs, ``latex.php?latex=``, Google charts ``cht=tx``, WordPress ``s0.wp.com/latex.php``).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import parse_qs, unquote, urlsplit

from resiliparse.parse.html import NodeType

TEX_ENCODINGS = ("application/x-tex", "tex", "latex", "application/x-latex", "text/x-tex")

SYMBOLS = {
    "×": r"\times", "÷": r"\div", "±": r"\pm", "∓": r"\mp", "·": r"\cdot", "⋅": r"\cdot", "∗": "*", "−": "-",
    "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim", "≅": r"\cong",
    "∝": r"\propto", "→": r"\to", "←": r"\leftarrow", "↔": r"\leftrightarrow", "⇒": r"\Rightarrow",
    "⇐": r"\Leftarrow", "⇔": r"\Leftrightarrow", "↦": r"\mapsto", "∞": r"\infty", "∑": r"\sum", "∏": r"\prod",
    "∫": r"\int", "∬": r"\iint", "∮": r"\oint", "∂": r"\partial", "∇": r"\nabla", "√": r"\sqrt", "∈": r"\in",
    "∉": r"\notin", "∋": r"\ni", "⊂": r"\subset", "⊃": r"\supset", "⊆": r"\subseteq", "⊇": r"\supseteq",
    "∪": r"\cup", "∩": r"\cap", "∅": r"\emptyset", "∀": r"\forall", "∃": r"\exists", "¬": r"\neg",
    "∧": r"\wedge", "∨": r"\vee", "⊕": r"\oplus", "⊗": r"\otimes", "∘": r"\circ", "°": r"^\circ",
    "…": r"\ldots", "⋯": r"\cdots", "⋮": r"\vdots", "⋱": r"\ddots", "′": "'", "″": "''", "ℝ": r"\mathbb{R}",
    "ℕ": r"\mathbb{N}", "ℤ": r"\mathbb{Z}", "ℚ": r"\mathbb{Q}", "ℂ": r"\mathbb{C}", "ℏ": r"\hbar", "ℓ": r"\ell",
    "⟨": r"\langle", "⟩": r"\rangle", "⌊": r"\lfloor", "⌋": r"\rfloor", "⌈": r"\lceil", "⌉": r"\rceil",
    "∣": r"\mid", "∥": r"\parallel", "⊥": r"\perp", "∠": r"\angle", "△": r"\triangle", "\u2061": "", "\u2062": "",
    "\u2063": ",", "\u2064": "+", "\u00a0": " ", "\u200b": "",
}
GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho varsigma sigma tau upsilon phi chi psi omega".split()
for _i, _name in enumerate(GREEK):
    SYMBOLS[chr(0x3B1 + _i)] = "" if _name == "omicron" else "\\" + _name
    if _name not in ("varsigma", "omicron"):
        _cap = _name.capitalize()
        SYMBOLS[chr(0x391 + _i)] = ("\\" + _cap) if _cap in ("Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi",
                                                             "Sigma", "Upsilon", "Phi", "Psi", "Omega") else _cap[0]
SYMBOLS.update({"ϕ": r"\phi", "ε": r"\varepsilon", "ϑ": r"\vartheta", "ϖ": r"\varpi", "ϱ": r"\varrho"})
SYMBOLS["ο"] = "o"
FUNCTIONS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "lim", "max", "min", "sup", "inf",
             "det", "arg", "deg", "dim", "gcd", "hom", "ker", "sinh", "cosh", "tanh", "arcsin", "arccos", "arctan",
             "Pr", "liminf", "limsup"}
VARIANTS = {"double-struck": r"\mathbb", "bold": r"\mathbf", "fraktur": r"\mathfrak", "script": r"\mathcal",
            "sans-serif": r"\mathsf", "monospace": r"\mathtt", "normal": r"\mathrm", "bold-italic": r"\boldsymbol"}
ACCENTS = {"^": r"\hat", "ˆ": r"\hat", "~": r"\tilde", "˜": r"\tilde", "¯": r"\bar", "‾": r"\overline",
           "→": r"\vec", "⃗": r"\vec", "˙": r"\dot", "¨": r"\ddot", "⏞": r"\overbrace", "⏟": r"\underbrace",
           "_": r"\underline"}
BIG = {r"\sum", r"\prod", r"\int", r"\lim", r"\bigcup", r"\bigcap", r"\max", r"\min"}


def _symbol(ch: str) -> str:
    if ch in SYMBOLS:
        return SYMBOLS[ch]
    if ord(ch) >= 0x1D400 and ch.isprintable():  # Mathematical Alphanumeric Symbols: italic x, bold R, ...
        name = unicodedata.name(ch, "")
        base = unicodedata.normalize("NFKC", ch)
        if base != ch:
            tex = SYMBOLS.get(base, base)
            if "PARTIAL" in name or "NABLA" in name:
                return r"\mathit{%s}" % tex
            if "DOUBLE-STRUCK" in name:
                return r"\mathbb{%s}" % tex
            if "BOLD" in name:
                return r"\mathbf{%s}" % tex
            if "FRAKTUR" in name:
                return r"\mathfrak{%s}" % tex
            if "SCRIPT" in name:
                return r"\mathcal{%s}" % tex
            return tex
    return ch


def _tokens(text: str) -> str:
    out = []
    for ch in text:
        t = _symbol(ch)
        out.append(t + " " if t.startswith("\\") and t[-1].isalpha() else t)
    return "".join(out).strip()


def _local(node) -> str:
    return node.tag.rsplit(":", 1)[-1].lower()


def _kids(node) -> list:
    return [c for c in node.child_nodes[:] if c.type == NodeType.ELEMENT]


def _cat(parts: list[str]) -> str:
    """Concatenate LaTeX pieces, keeping a space where a command name would run into a letter (``\\nabla f``)."""
    out = ""
    for p in parts:
        if out and p and re.search(r"\\[A-Za-z]+$", out) and p[0].isalpha():
            out += " "
        out += p
    return out


def _group(s: str) -> str:
    return s if len(s) == 1 or re.fullmatch(r"\\[A-Za-z]+\s*", s) else "{" + s + "}"


def _convert(node) -> str:
    tag = _local(node)
    kids = _kids(node)
    if tag in ("mi", "mn", "mo", "mtext", "ms"):
        raw = node.text.strip()
        if tag == "mtext":
            return r"\text{%s}" % raw if raw.strip() else "~"
        if tag == "mi":
            variant = node.getattr("mathvariant") or ""
            if raw in FUNCTIONS:
                return "\\" + raw + " "
            tex = _tokens(raw)
            if len(raw) > 1 and not variant:
                return r"\mathrm{%s}" % tex
            if variant in VARIANTS and variant != "italic":
                return r"%s{%s}" % (VARIANTS[variant], tex)
            return tex
        return _tokens(raw)
    if tag in ("annotation", "annotation-xml", "mphantom"):
        return ""
    # empty MathML elements written <mspace/> are not void in HTML: the parser nests what follows inside them
    if tag in ("mspace", "none", "mprescripts", "maligngroup", "malignmark"):
        return _cat([_convert(k) for k in kids])
    if tag == "semantics":
        return _convert(kids[0]) if kids else ""
    args = [_convert(k) for k in kids]
    if tag == "msup" and len(args) == 2:
        return f"{_group(args[0])}^{{{args[1]}}}"
    if tag == "msub" and len(args) == 2:
        return f"{_group(args[0])}_{{{args[1]}}}"
    if tag == "msubsup" and len(args) == 3:
        return f"{_group(args[0])}_{{{args[1]}}}^{{{args[2]}}}"
    if tag == "mfrac" and len(args) == 2:
        cmd = r"\binom" if (node.getattr("linethickness") or "").strip() in ("0", "0px") else r"\frac"
        return f"{cmd}{{{args[0]}}}{{{args[1]}}}"
    if tag == "msqrt":
        return r"\sqrt{%s}" % " ".join(args)
    if tag == "mroot" and len(args) == 2:
        return r"\sqrt[%s]{%s}" % (args[1], args[0])
    if tag in ("mover", "munder", "munderover") and len(args) >= 2:
        base, marks = args[0], args[1:]
        if tag != "munderover" and marks[0].strip() in ACCENTS.values() | set(ACCENTS):
            acc = ACCENTS.get(marks[0].strip(), marks[0].strip())
            return f"{acc}{{{base}}}"
        if tag == "mover":
            return f"{_group(base)}^{{{marks[0]}}}" if base.strip() in BIG else rf"\overset{{{marks[0]}}}{{{base}}}"
        if tag == "munder":
            return f"{_group(base)}_{{{marks[0]}}}" if base.strip() in BIG else rf"\underset{{{marks[0]}}}{{{base}}}"
        return f"{_group(base)}_{{{marks[0]}}}^{{{marks[1]}}}" if len(marks) > 1 else base
    if tag == "mfenced":
        open_, close = node.getattr("open"), node.getattr("close")
        sep = node.getattr("separators")
        inner = (sep.strip()[:1] if sep is not None else ",").join(args) if len(args) > 1 else _cat(args)
        return rf"\left{_fence(open_ if open_ is not None else '(')}{inner}\right{_fence(close if close is not None else ')')}"
    if tag == "menclose":
        notation = node.getattr("notation") or "longdiv"
        body = " ".join(args)
        if "box" in notation or "roundedbox" in notation:
            return r"\boxed{%s}" % body
        if "updiagonalstrike" in notation or "horizontalstrike" in notation:
            return r"\cancel{%s}" % body
        return body
    if tag == "mtable":
        rows = [r for r in kids if _local(r) in ("mtr", "mlabeledtr")]
        cells = [[_convert(c) for c in _kids(r) if _local(c) == "mtd"] for r in rows]
        ncols = max((len(r) for r in cells), default=1)
        body = r" \\ ".join(" & ".join(r) for r in cells)
        return r"\begin{array}{%s}%s\end{array}" % ("c" * ncols, body)
    if tag == "mmultiscripts" and args:
        return f"{_group(args[0])}" + "".join(
            f"_{{{args[i]}}}^{{{args[i + 1] if i + 1 < len(args) else ''}}}" for i in range(1, len(args), 2))
    return _cat(args)  # math, mrow, mstyle, mpadded, merror, mtd ...


def _fence(ch: str) -> str:
    ch = ch.strip()
    if not ch:
        return "."
    return {"{": r"\{", "}": r"\}", "⟨": r"\langle", "⟩": r"\rangle", "‖": r"\|", "|": "|"}.get(ch, ch)


def _annotation(node) -> str | None:
    for ann in node.query_selector_all("annotation")[:]:
        if (ann.getattr("encoding") or "").strip().lower() in TEX_ENCODINGS:
            return ann.text.strip()
    return None


def strip_displaystyle(tex: str) -> str:
    r"""``{\displaystyle x}`` (Wikipedia's alttext) -> ``x``."""
    tex = tex.strip()
    m = re.fullmatch(r"\{\\(?:display|text)style\s*(.*)\}", tex, re.S)
    return m.group(1).strip() if m else tex


def mathml_to_latex(node) -> tuple[str, bool]:
    """``(tex, display)`` of a ``<math>`` element (annotation, else alttext, else converted markup)."""
    display = (node.getattr("display") or node.getattr("mode") or "").lower() in ("block", "display")
    tex = _annotation(node)
    if not tex:
        tex = (node.getattr("alttext") or "").strip()
    if not tex:
        tex = re.sub(r"\s+", " ", _convert(node)).strip()
    return strip_displaystyle(tex), display


# ---- MathJax configuration ------------------------------------------------------------------------------------
_PAIR = re.compile(r"\s*\[\s*(['\"])((?:\\.|(?!\1).)*)\1\s*,\s*(['\"])((?:\\.|(?!\3).)*)\3\s*\]")


def _pairs(src: str, key: str) -> list[tuple[str, str]] | None:
    """The ``[[left, right], ...]`` string pairs of ``key`` in a JavaScript configuration, else None."""
    m = re.search(key + r"""\s*['"]?\s*[:=]\s*\[""", src)
    if not m:
        return None
    pairs, pos = [], m.end()
    while True:
        p = _PAIR.match(src, pos)
        if not p:
            break
        pairs.append((_js_unescape(p[2]), _js_unescape(p[4])))
        sep = re.compile(r"\s*,?\s*").match(src, p.end())
        pos = sep.end()
    return pairs


def _js_unescape(s: str) -> str:
    r"""The value of a JavaScript string literal's body (``\\(`` -> ``\(``)."""
    return re.sub(r"\\(.)", r"\1", s)


def mathjax_delimiters(script_texts: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    """``(inline, display, asciimath)`` declared by the page's MathJax/KaTeX-auto-render configuration scripts.

    Pages without a configuration get MathJax's defaults (``\\(..\\)``; ``$$..$$`` and ``\\[..\\]``)."""
    inline: list[tuple[str, str]] | None = None
    display: list[tuple[str, str]] | None = None
    ascii_math = False
    for src in script_texts:
        if "inlineMath" in src or "displayMath" in src or "delimiters" in src:
            inline = _pairs(src, "inlineMath") or inline
            display = _pairs(src, "displayMath") or display
            for left, right, disp in re.findall(
                    r"left\s*:\s*['\"]((?:\\.|[^'\"])*)['\"]\s*,\s*right\s*:\s*['\"]((?:\\.|[^'\"])*)['\"]\s*,"
                    r"\s*display\s*:\s*(true|false)", src):  # KaTeX auto-render's delimiters option
                pair = (_js_unescape(left), _js_unescape(right))
                if disp == "true":
                    display = (display or []) + [pair]
                else:
                    inline = (inline or []) + [pair]
        if "AsciiMath" in src or "asciimath" in src:
            ascii_math = True
    return (inline if inline is not None else [("\\(", "\\)")],
            display if display is not None else [("$$", "$$"), ("\\[", "\\]")], ascii_math)


# ---- images ---------------------------------------------------------------------------------------------------
_TEX_URL_HOSTS = ("codecogs.com", "latex.php", "mathtex.cgi", "chart.apis.google.com", "chart.googleapis.com",
                  "latex.artofproblemsolving.com", "/latex/", "mimetex.cgi", "quicklatex.com")
_TEX_HINT = re.compile(r"\\[a-zA-Z]+|[\^_]\{|[\^_][A-Za-z0-9]")


def image_tex(src: str, alt: str, cls: str) -> str | None:
    """LaTeX carried by an ``<img>`` (alt text of a math image, or the formula in a rendering URL), else None."""
    src = src or ""
    cls = (cls or "").lower()
    alt = (alt or "").strip()
    is_math_img = any(h in src for h in _TEX_URL_HOSTS) or any(
        k in cls for k in ("latex", "tex", "math", "wp-latex", "mwe-math-fallback"))
    if alt and is_math_img:
        alt = alt.strip("$").strip() if alt.startswith("$") and alt.endswith("$") else alt
        return strip_displaystyle(alt)
    if not is_math_img:
        if alt.startswith("$") and alt.endswith("$") and len(alt) > 2 and _TEX_HINT.search(alt):
            return alt.strip("$").strip()
        return None
    parts = urlsplit(src)
    query = parse_qs(parts.query)
    for key in ("latex", "chl", "tex", "formula"):
        if key in query:
            return query[key][0].strip()
    if "codecogs.com" in src and "?" in src:
        return re.sub(r"^\\(?:dpi|bg|fg|inline)\{?[\w.]*\}?\s*", "", unquote(src.split("?", 1)[1])).strip()
    return None


# ---- AsciiMath --------------------------------------------------------------------------------------------------
ASCII_SYMBOLS = {
    "xx": r"\times", "**": r"\ast", "-:": r"\div", "+-": r"\pm", "<=": r"\leq", ">=": r"\geq", "!=": r"\neq",
    "->": r"\to", "=>": r"\Rightarrow", "<=>": r"\Leftrightarrow", "oo": r"\infty", "sum": r"\sum",
    "prod": r"\prod", "int": r"\int", "oint": r"\oint", "del": r"\partial", "grad": r"\nabla", "in": r"\in",
    "!in": r"\notin", "sub": r"\subset", "sup": r"\supset", "sube": r"\subseteq", "supe": r"\supseteq",
    "uu": r"\cup", "nn": r"\cap", "AA": r"\forall", "EE": r"\exists", "O/": r"\emptyset", "cdots": r"\cdots",
    "...": r"\ldots", "~~": r"\approx", "-=": r"\equiv", "|->": r"\mapsto", "lim": r"\lim", "RR": r"\mathbb{R}",
    "NN": r"\mathbb{N}", "ZZ": r"\mathbb{Z}", "QQ": r"\mathbb{Q}", "CC": r"\mathbb{C}", "*": r"\cdot",
    "(:": r"\langle", ":)": r"\rangle",
}
_ASCII_TOKEN = re.compile(r"\s*(<=>|\|->|\.\.\.|[<>!]=|->|=>|\*\*|-:|\+-|~~|-=|!in|O/|\(:|:\)|[A-Za-z]+|\d+(?:\.\d+)?|\S)")


def asciimath_to_latex(src: str) -> str:
    """A small AsciiMath -> LaTeX conversion (symbols, Greek and function names, ``sqrt``, ``a/b``, ``^``/``_``
    groups in parentheses); what it does not know it keeps as written."""
    toks = _ASCII_TOKEN.findall(src.strip())
    pos = 0

    def atom() -> str:
        nonlocal pos
        if pos >= len(toks):
            return ""
        t = toks[pos]
        pos += 1
        if t in "([{":
            close = {"(": ")", "[": "]", "{": "}"}[t]
            inner = []
            while pos < len(toks) and toks[pos] != close:
                inner.append(expr_item())
            pos += 1
            return "\x00" + " ".join(inner)  # a parenthesised group: brackets dropped when it is an argument
        if t in ("sqrt", "text", "bb", "bbb", "cc", "hat", "bar", "vec", "abs"):
            arg = ungroup(atom())
            return {"sqrt": r"\sqrt{%s}", "text": r"\text{%s}", "bb": r"\mathbf{%s}", "bbb": r"\mathbb{%s}",
                    "cc": r"\mathcal{%s}", "hat": r"\hat{%s}", "bar": r"\overline{%s}", "vec": r"\vec{%s}",
                    "abs": r"\left|%s\right|"}[t] % arg
        if t in ("frac", "root"):
            a, b = ungroup(atom()), ungroup(atom())
            return r"\frac{%s}{%s}" % (a, b) if t == "frac" else r"\sqrt[%s]{%s}" % (a, b)
        if t in ASCII_SYMBOLS:
            return ASCII_SYMBOLS[t]
        if t in GREEK or t.lower() in GREEK and t[0].isupper():
            return "\\" + t
        if t in FUNCTIONS:
            return "\\" + t
        return t

    def ungroup(a: str) -> str:
        return a[1:] if a.startswith("\x00") else a

    def shown(a: str) -> str:
        return "(" + a[1:] + ")" if a.startswith("\x00") else a

    def expr_item() -> str:
        nonlocal pos
        a = atom()
        out = shown(a)
        while pos < len(toks) and toks[pos] in ("^", "_"):
            op = toks[pos]
            pos += 1
            out += op + "{" + ungroup(atom()) + "}"
        if pos < len(toks) and toks[pos] == "/":
            pos += 1
            b = atom()
            return r"\frac{%s}{%s}" % (ungroup(a) if out == shown(a) else out, ungroup(b))
        return out

    parts = []
    while pos < len(toks):
        parts.append(expr_item())
    return " ".join(p for p in parts if p)
