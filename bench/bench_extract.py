"""Math- and code-preserving HTML extraction: openmimo's extractor vs the anchors, on pages with ground truth.

Page sets: ``dev`` -- the 60 real pages of ../shared/benchmarks/web (ground-truth main text; see its README for
the scoring rules implemented here), plus its MathML -> LaTeX pair; ``world`` -- the tiny world's HTML pages
(true main text with ``$tex$`` known).  Extractors: ``openmimo`` (openmimo.data.extract_html), ``resiliparse``
(extract_plain_text, main content, formatting kept), ``trafilatura`` (default settings), ``openwebmath``
(the openwebmath-text-extract package: the OpenWebMath extractor, its config's most likely choices, Chinese kept).
Anchors that are not installed are reported as such.  Scores per extractor:

- formula recall (micro: all formulas pooled; macro: mean over pages with formulas).  Output math is read as
  pandoc does (``$$..$$`` first; inline ``$`` needs a non-space after it, a non-space before its closing ``$``,
  no digit after; ``\\$`` is literal; nothing in code fences or backtick spans is math; ``\\(..\\)``,
  ``\\[..\\]`` count); formulas compare with whitespace and grouping braces removed.  Gold formulas: world pages:
  the ``$..$`` of the true text; dev pages: the TeX the pages carry in their main text (``<script
  type="math/tex">`` except StackExchange's ``\\begingroup``/``\\endgroup``, TeX annotations, MathML alttext)
  plus the MathML pair's two formulas;
- code lines exact: every non-blank ground-truth code line (dev: the indented lines of the true text on pages
  with pre/code markers; world: the lines of the program) must appear as an output line, leading whitespace
  included (inside a fence the fence's own indentation removed first);
  ``code_lines_exact_in_pre`` restricts the dev set to the ground-truth code lines that are a line of one of the
  page's own ``<pre>`` blocks (the ground truth re-indents or splits some lines: a highlighted span on a line of
  its own, four spaces added to a traceback);
- text F1: bag-of-words F1 against the true text (lower-cased, entities decoded, URLs and link targets removed,
  runs of letters/digits and single CJK characters as tokens), macro over pages (dev: the 60 pages; the
  MathML pair counts for formula recall only); no output scores 0;
- boilerplate removal: of the page's visible tokens that are not in the true text, the share the output leaves
  out (macro over pages);
- pages/s: one process over the whole set (3 passes, best), after a warm-up pass: wall-clock (``pages_per_s``)
  and per CPU-second of the process (``pages_per_cpu_s``: less sensitive to other load on a shared machine).

    python bench/bench_extract.py [--sets dev world pdf] [--extractors openmimo resiliparse trafilatura openwebmath]
                                  [--json out.json] [--passes 3] [--owm-python ENV/bin/python]

The OpenWebMath extractor breaks on resiliparse 2 (it edits the DOM during a traversal), so it runs in its own
environment: ``python -m venv ENV && ENV/bin/pip install "resiliparse==0.14.9" openwebmath-text-extract``.
"""

from __future__ import annotations

import argparse
import html as html_lib
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WEB = ROOT.parent / "shared" / "benchmarks" / "web"

FAILURES: dict[str, int] = {}  # extractor -> calls that raised (scored as empty output)
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(f"[{CJK}]|(?:(?![{CJK}])[^\\W_])+")
_URL = re.compile(r"\]\([^)]*\)|https?://\S+|www\.\S+")


def tokens(text: str) -> Counter:
    text = _URL.sub(" ", html_lib.unescape(text.lower()))
    return Counter(_TOKEN.findall(text))


def f1(out: str, gold: str) -> float:
    o, g = tokens(out), tokens(gold)
    common = sum((o & g).values())
    if not common:
        return 0.0
    p, r = common / sum(o.values()), common / sum(g.values())
    return 2 * p * r / (p + r)


def norm_tex(tex: str) -> str:
    tex = html_lib.unescape(tex).replace("\\{", "\x01").replace("\\}", "\x02")
    return re.sub(r"[\s{}]", "", tex).replace("\x01", "\\{").replace("\x02", "\\}")


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[^\n]*\n(.*?)^ {0,3}\2[`~]*[ \t]*$", re.M | re.S)


def strip_code(text: str) -> str:
    """The text without fenced code blocks and backtick spans (no math is read inside them)."""
    text = _FENCE.sub("\n", text)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", " ", text, flags=re.S)


def output_formulas(text: str) -> list[str]:
    """Normalised formulas delimited in ``text``, read as pandoc reads markdown math."""
    text = strip_code(text).replace("\\$", "\x00")
    found = []
    for pat in (r"\$\$(.+?)\$\$", r"\\\[(.+?)\\\]", r"\\\((.+?)\\\)"):
        def keep(m, found=found):
            found.append(norm_tex(m.group(1)))
            return " "
        text = re.sub(pat, keep, text, flags=re.S)
    for m in re.finditer(r"\$(?!\s)([^$]+?)(?<!\s)\$(?!\d)", text):
        found.append(norm_tex(m.group(1)))
    return [f for f in found if f]


def formula_hits(out: str, gold: list[str]) -> int:
    have = Counter(output_formulas(out))
    need = Counter(norm_tex(g) for g in gold)
    return sum(min(n, have[f]) for f, n in need.items())


def output_lines(text: str) -> Counter:
    """Output lines (trailing whitespace stripped); fenced lines lose the fence's own indentation."""
    lines: Counter = Counter()
    fence_indent, fence = None, None
    for line in text.split("\n"):
        m = re.match(r"^( {0,3})(`{3,}|~{3,})", line)
        if m and fence is None:
            fence_indent, fence = len(m.group(1)), m.group(2)
            continue
        if fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = None
            continue
        if fence is not None and fence_indent:
            cut = len(line) - len(line.lstrip(" "))
            line = line[min(cut, fence_indent):]
        if line.strip():
            lines[line.rstrip()] += 1
    return lines


def code_hits(out: str, gold_lines: list[str]) -> int:
    have, need = output_lines(out), Counter(gold_lines)
    return sum(min(n, have[line]) for line, n in need.items())


# ---- page sets ------------------------------------------------------------------------------------------------
def _dev_formulas(raw: str, gold_text: str) -> list[str]:
    """TeX the page carries (script math/tex, TeX annotations, MathML alttext) whose symbols the true text shows."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(raw)
    out = []
    for node in tree.document.query_selector_all('script[type^="math/tex"]')[:]:
        tex = node.text.strip()
        if tex and not re.fullmatch(r"\\(begin|end)group", tex):
            out.append(tex)
    for node in tree.document.query_selector_all('annotation[encoding="application/x-tex"]')[:]:
        out.append(node.text.strip())
    for node in tree.document.query_selector_all("math[alttext]")[:]:
        out.append(node.getattr("alttext").strip())
    gold_tokens = tokens(gold_text)
    return [t for t in out if t and all(gold_tokens[w] for w in tokens(re.sub(r"\\[a-zA-Z]+", " ", t)))]


def _pre_lines(raw: bytes) -> Counter:
    """Lines (trailing whitespace stripped) of the page's own ``<pre>`` blocks, as the DOM holds them."""
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse_from_bytes(raw, "utf-8")
    return Counter(ln.rstrip() for pre in tree.document.query_selector_all("pre")[:] for ln in pre.text.split("\n"))


def dev_pages() -> list[dict]:
    pages = []
    for line in open(WEB / "groundtruth.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        raw = (WEB / rec["file"]).read_bytes()
        markers = set(rec["html_markers"])
        code = [ln.rstrip() for ln in rec["text"].split("\n") if ln[:1] in (" ", "\t") and ln.strip()] \
            if markers & {"pre", "code"} else []
        in_pre = _pre_lines(raw)
        pages.append({"id": rec["id"], "raw": raw, "text": rec["text"], "code": code,
                      "code_in_page": [ln for ln in code if in_pre[ln]],
                      "formulas": _dev_formulas(raw.decode("utf-8", "replace"), rec["text"])})
    src = (WEB / "mathml2latex_input.md").read_text(encoding="utf-8")
    gold = (WEB / "mathml2latex_output.md").read_text(encoding="utf-8")
    body = "".join(f"<p>{p}</p>" for p in src.split("\n") if p.strip())
    pages.append({"id": "mathml2latex", "raw": f"<html><body><article>{body}</article></body></html>".encode(),
                  "text": "", "code": [], "formulas": output_formulas(gold),  # scored for its formulas only
                  "formulas_raw": True})
    return pages


def world_pages(seed: int = 0, scale: float = 0.25) -> list[dict]:
    from openmimo.data.world import generate

    pages = []
    for i, rec in enumerate(generate(seed, scale)["files"]["html/pages.jsonl"]):
        text = rec["main_text"]
        code = []
        if rec["has_code"] and "Here is a complete solution:\n" in text:
            code = [ln.rstrip() for ln in text.split("Here is a complete solution:\n", 1)[1].split("\n") if ln.strip()]
        pages.append({"id": f"world_{i:04d}", "raw": rec["html"].encode(), "text": text if rec["kind"] != "spam" else "",
                      "code": code, "formulas": [f for f in output_formulas(text)],
                      "formulas_raw": True, "kind": rec["kind"]})
    return pages


# ---- extractors -----------------------------------------------------------------------------------------------
def extractors(names: list[str]) -> dict:
    out = {}
    for name in names:
        try:
            if name == "openmimo":
                from openmimo.data.extract_html import extract_html
                out[name] = lambda raw: extract_html(raw)["text"]
            elif name == "resiliparse":
                from resiliparse.extract.html2text import extract_plain_text
                from resiliparse.parse.encoding import detect_encoding
                from resiliparse.parse.html import HTMLTree
                out[name] = lambda raw: extract_plain_text(HTMLTree.parse_from_bytes(raw, detect_encoding(raw)),
                                                           main_content=True, preserve_formatting=True)
            elif name == "trafilatura":
                import trafilatura
                out[name] = lambda raw: trafilatura.extract(raw) or ""
            elif name == "openwebmath":
                from text_extract.extract import extract_text  # noqa: F401  (installed?)
                out[name] = owm_extract
        except ImportError as e:
            print(f"{name}: not installed ({e.name})", file=sys.stderr)
    return out


OWM_CONFIG = {"markdown_headings": True, "markdown_code": True, "remove_buttons": True, "remove_image_figures": True,
              "remove_link_clusters": True, "remove_chinese": False, "remove_edit_buttons": True, "extract_latex": True,
              "table_config": {"min_rows": 2, "min_cols": 3, "format": "plain"},
              "boilerplate_config": {"ratio_threshold": 0.18, "absolute_threshold": 10, "end_threshold": 15,
                                     "enable": True}}


def rate(fn, items: list, passes: int) -> tuple[float, float]:
    """Best ``(items per wall second, items per CPU second)`` of ``passes`` runs of ``fn`` over ``items``."""
    wall = cpu = 0.0
    for _ in range(passes):
        t0, c0 = time.perf_counter(), time.process_time()
        for x in items:
            fn(x)
        wall = max(wall, len(items) / (time.perf_counter() - t0))
        cpu = max(cpu, len(items) / max(time.process_time() - c0, 1e-9))
    return wall, cpu


def owm_extract(raw: bytes) -> str:
    from text_extract.extract import extract_text

    try:
        res = extract_text(raw.decode("utf-8", "replace"), OWM_CONFIG, fast=True)
    except Exception:  # noqa: BLE001  with resiliparse 2: "DOM document modified during traversal"
        FAILURES["openwebmath"] = FAILURES.get("openwebmath", 0) + 1
        return ""
    return (res[0] if isinstance(res, tuple) else res) or ""


def owm_worker(folder: str, passes: int) -> None:
    """``--owm-worker``: run inside an environment where the OpenWebMath extractor works (it needs resiliparse
    < 1: 2.x refuses its DOM edits during traversal); pages and results pass through ``folder``."""
    meta = json.loads((Path(folder) / "pages.json").read_text())
    raws = [(Path(folder) / f"{i:05d}.html").read_bytes() for i in range(meta["n"])]
    outputs = [owm_extract(r) for r in raws]
    failed = FAILURES.get("openwebmath", 0)
    wall, cpu = rate(owm_extract, [raws[i] for i in meta["speed"]], passes)
    (Path(folder) / "result.json").write_text(json.dumps({"outputs": outputs, "pages_per_s": wall,
                                                          "pages_per_cpu_s": cpu, "failed": failed}))


def owm_in_env(python: str, pages: list[dict], speed: list[int], passes: int) -> tuple[list[str], dict]:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(pages):
            (Path(tmp) / f"{i:05d}.html").write_bytes(p["raw"])
        (Path(tmp) / "pages.json").write_text(json.dumps({"n": len(pages), "speed": speed}))
        subprocess.run([python, __file__, "--owm-worker", tmp, "--passes", str(passes)], check=True)
        res = json.loads((Path(tmp) / "result.json").read_text())
    return res.pop("outputs"), res


def visible_text(raw: bytes) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse_from_bytes(raw, "utf-8"), main_content=False)


def score(pages: list[dict], outputs: list[str]) -> dict:
    f_need = f_hit = 0
    macro_f, f1s, boiler = [], [], []
    c_need = c_hit = v_need = v_hit = 0
    for page, out in zip(pages, outputs):
        if page.get("code_in_page"):
            v_need += len(page["code_in_page"])
            v_hit += code_hits(out, page["code_in_page"])
        if page["formulas"]:
            hits = formula_hits(out, page["formulas"])
            f_need += len(page["formulas"])
            f_hit += hits
            macro_f.append(hits / len(page["formulas"]))
        if page["code"]:
            c_need += len(page["code"])
            c_hit += code_hits(out, page["code"])
        if page["text"]:
            f1s.append(f1(out, page["text"]))
        extra = tokens(visible_text(page["raw"])) - tokens(page["text"])
        if extra and page["text"]:  # spam pages (no true text) are the quality stage's to drop
            boiler.append(1 - sum((tokens(out) & extra).values()) / sum(extra.values()))
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"formula_recall_micro": f_hit / f_need if f_need else float("nan"), "formula_recall_macro": mean(macro_f),
            "formulas": f_need, "code_lines_exact": c_hit / c_need if c_need else float("nan"), "code_lines": c_need,
            "code_lines_exact_in_pre": v_hit / v_need if v_need else float("nan"), "code_lines_in_pre": v_need,
            "text_f1": mean(f1s), "boilerplate_removed": mean(boiler)}


def pdf_bench(pages: int = 40, passes: int = 3) -> dict:
    """A text-dense two-column PDF written with fpdf2 (prose, a code listing and a formula per page) through
    extract_pdf: pages/s (best of ``passes``), text F1, code lines exact and formulas found against what was
    written."""
    import random
    import tempfile

    import fpdf

    from openmimo.data.extract_pdf import extract_pdf
    from openmimo.data.world_web import prose

    rng = random.Random(0)
    pdf = fpdf.FPDF()
    pdf.set_auto_page_break(False)
    truth, code_lines, formulas = [], [], []
    for p in range(pages):
        pdf.add_page()
        for col, x in enumerate((10, 110)):
            _, text = prose(rng)
            text = text.replace("\n\n", " ")[:1400]
            pdf.set_font("Helvetica", size=9)
            pdf.set_xy(x, 15)
            pdf.multi_cell(88, 4.2, text)
            truth.append(text)
        code = f"def step_{p}(xs):\n    out = []\n    for x in xs:\n        if x % {p + 2} == 0:\n            out.append(x)\n    return out"
        pdf.set_font("Courier", size=8)
        pdf.set_xy(10, 230)
        pdf.multi_cell(190, 3.8, code)
        code_lines += [ln for ln in code.split("\n") if ln.strip()]
        truth.append(code)
        pdf.set_font("Helvetica", size=9)
        pdf.set_xy(10, 265)
        pdf.write(4, "so a = b")
        pdf.char_vpos = "SUP"
        pdf.write(4, f"{p + 2}")
        pdf.char_vpos = "LINE"
        pdf.write(4, " holds.")
        formulas.append(f"a = b^{{{p + 2}}}")
        truth.append(f"so a = b {p + 2} holds.")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pdf"
        pdf.output(str(path))
        rec = extract_pdf(path)
        wall, cpu = rate(extract_pdf, [path], passes)
    return {"pages": pages, "pages_per_s": wall * pages, "pages_per_cpu_s": cpu * pages, "text_f1": f1(rec["text"], "\n".join(truth)),
            "code_lines_exact": code_hits(rec["text"], code_lines) / len(code_lines),
            "formula_recall_micro": formula_hits(rec["text"], formulas) / len(formulas), "ocr_pages": len(rec["ocr_pages"])}


def report(results: dict, key: str, res: dict) -> None:
    results[key] = res
    set_name, name = key.split("/")
    print(f"{set_name:5s} {name:12s} " + " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=["dev", "world", "pdf"], choices=["dev", "world", "pdf"])
    ap.add_argument("--extractors", nargs="+", default=["openmimo", "resiliparse", "trafilatura", "openwebmath"])
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--owm-python", default=None,
                    help="run the openwebmath anchor with this interpreter (an environment with resiliparse<1 and "
                         "openwebmath-text-extract)")
    ap.add_argument("--owm-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.owm_worker:
        owm_worker(args.owm_worker, args.passes)
        return 0
    names = [n for n in args.extractors if not (n == "openwebmath" and args.owm_python)]
    fns = extractors(names)
    results = {}
    for set_name in args.sets:
        if set_name == "pdf":
            report(results, "pdf/openmimo", pdf_bench(passes=args.passes))
            continue
        if set_name == "dev" and not WEB.is_dir():
            print(f"dev set not found at {WEB}; skipped", file=sys.stderr)
            continue
        pages = dev_pages() if set_name == "dev" else world_pages()
        speed_pages = [p for p in pages if p["id"] != "mathml2latex"]
        for name, fn in fns.items():
            FAILURES.pop(name, None)
            outputs = [fn(p["raw"]) for p in pages]  # also the warm-up pass
            failed = FAILURES.get(name, 0)
            wall, cpu = rate(fn, [p["raw"] for p in speed_pages], args.passes)
            res = {**score(pages, outputs), "pages_per_s": wall, "pages_per_cpu_s": cpu, "pages": len(pages),
                   "failed": failed}
            report(results, f"{set_name}/{name}", res)
        if args.owm_python and "openwebmath" in args.extractors:
            speed = [i for i, p in enumerate(pages) if p["id"] != "mathml2latex"]
            outputs, timing = owm_in_env(args.owm_python, pages, speed, args.passes)
            report(results, f"{set_name}/openwebmath", {**score(pages, outputs), **timing, "pages": len(pages)})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
