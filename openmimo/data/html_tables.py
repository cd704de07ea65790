"""Code blocks and data tables of a parsed page (Resiliparse DOM) -> verbatim code and markdown tables."""

from __future__ import annotations

import re
from typing import Callable

KNOWN_LANGUAGES = {
    "python", "py", "python3", "javascript", "js", "typescript", "ts", "java", "c", "cpp", "c++", "csharp", "cs",
    "go", "golang", "rust", "ruby", "php", "bash", "sh", "shell", "console", "zsh", "powershell", "sql", "html",
    "xml", "css", "json", "yaml", "yml", "toml", "kotlin", "swift", "scala", "haskell", "r", "matlab", "julia",
    "lua", "perl", "latex", "tex", "makefile", "dockerfile", "diff", "ini", "text", "plaintext", "vb", "vbnet",
    "objectivec", "dart", "elixir", "erlang", "clojure", "fortran", "asm", "nasm", "groovy", "ocaml", "fsharp",
}
_LANG_CLASS = re.compile(r"(?:^|\s)(?:language|lang|highlight|brush:?|source)-?\s*([A-Za-z0-9_+#-]+)", re.I)
LINE_NUMBERS = (".lineno, .linenos, .line-number, .line-numbers-rows, .hljs-ln-numbers, .gutter, .ln-num, "
                "[data-line-number], .react-syntax-highlighter-line-number")
BLOCKS_IN_CELL = "ul, ol, form, h1, h2, h3, h4, h5, h6, blockquote, dl, iframe"
MAX_CELL_CHARS = 1000
MAX_TABLE_CHARS = 30000


def code_language(node) -> str:
    """The language a code block names in a class (``language-python``, ``lang-js``, ``brush: cpp``,
    ``highlight-python``, a bare known name) or a ``data-lang`` attribute of itself, a ``<code>`` child or a near
    ancestor; ``""`` when it names none."""
    candidates = [node, node.query_selector("code")]
    parent = node.parent
    for _ in range(3):
        if parent is None or parent.tag in ("body", "html"):
            break
        candidates.append(parent)
        parent = parent.parent
    for el in candidates:
        if el is None or el.type != node.type:
            continue
        for attr in ("data-lang", "data-language", "lang"):
            val = (el.getattr(attr) or "").strip().lower()
            if val and el.tag != "html" and re.fullmatch(r"[a-z0-9_+#-]{1,20}", val) and val in KNOWN_LANGUAGES | {attr}:
                return val
        cls = el.class_name or ""
        m = _LANG_CLASS.search(cls)
        if m and m.group(1).lower() not in ("none", "plain", "nohighlight", "js-file-line"):
            lang = m.group(1).lower()
            if lang in KNOWN_LANGUAGES or el.tag in ("pre", "code"):
                return lang
        for word in cls.lower().split():
            if word in KNOWN_LANGUAGES and word not in ("text", "c", "r"):
                return word
    return ""


def code_text(tree, node) -> str:
    """The verbatim text of a code block: ``<br>`` as line breaks, line-number gutters dropped, one line per
    ``<li>`` of a line-numbered list, each line's leading whitespace (spaces, tabs) exactly as on the page."""
    for gutter in node.query_selector_all(LINE_NUMBERS)[:]:
        if gutter.parent is not None:
            gutter.parent.remove_child(gutter)
    for br in node.query_selector_all("br")[:]:
        br.parent.replace_child(tree.create_text_node("\n"), br)
    items = node.query_selector_all("ol > li, ul > li")[:]
    if items and all(li.parent.parent is node or li.parent.parent.tag == "code" for li in items):
        text = "\n".join(li.text.rstrip("\n") for li in items)
    else:
        text = node.text
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ").split("\n")
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _cell(node) -> str:
    return re.sub(r"\s+", " ", node.text).strip().replace("|", "\\|")


def table_markdown(node, is_block: Callable[[str], bool]) -> str | None:
    """A data table as a markdown table; None for a layout table (block content or long text in a cell, a
    single column) so the page's text flows as usual.  ``is_block(text)``: whether a cell's text holds a
    block placeholder (a code block), which makes the table a layout table too."""
    if len(node.text) > MAX_TABLE_CHARS or node.query_selector(BLOCKS_IN_CELL) is not None:
        return None
    rows = []
    total = 0
    for tr in node.query_selector_all("tr")[:]:
        cells = [c for c in tr.child_nodes[:] if c.type == tr.type and c.tag in ("td", "th")]
        if not cells:
            continue
        row = []
        for c in cells:
            text = _cell(c)
            if len(text) > MAX_CELL_CHARS or is_block(text):
                return None
            total += len(text)
            span = c.getattr("colspan") or "1"
            row.extend([text] + [""] * (min(int(span), 20) - 1 if span.isdigit() and int(span) > 1 else 0))
        rows.append(row)
    if not rows or total > MAX_TABLE_CHARS or max(len(r) for r in rows) < 2 or not any(any(r) for r in rows):
        return None
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)
