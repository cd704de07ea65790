"""extract-pdf on PDFs written by the tests (fpdf2): two-column reading order, code indentation, scripts, running
headers/footers and page numbers, hyphenation, pages flagged for OCR, the CLI with a broken file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pypdfium2")
fpdf = pytest.importorskip("fpdf")

from openmimo.data.extract_pdf import extract_pdf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LEFT = ("The left column opens the page and is read first, from its top line down to its last line, before the "
        "reader moves on to the right column of the same band.")
RIGHT = "The right column is read second, although its first line is level with the first line of the left column."
CODE = "def f(x):\n    if x > 0:\n        return x\n\n    return -x"


class Paper(fpdf.FPDF):
    furniture = True

    def header(self):
        if not self.furniture:
            return
        self.set_font("Helvetica", size=8)
        self.set_xy(10, 6)
        self.cell(0, 4, "Journal of Tiny Results, volume 3")

    def footer(self):
        if not self.furniture:
            return
        self.set_font("Helvetica", size=8)
        self.set_xy(100, 287)
        self.cell(10, 4, str(self.page_no()))


def write_paper(path: Path, pages: int = 2, blank_page: bool = False) -> None:
    pdf = Paper()
    pdf.set_auto_page_break(False)
    for p in range(pages):
        pdf.add_page()
        pdf.set_font("Helvetica", size=10)
        pdf.set_xy(10, 20)
        pdf.multi_cell(190, 5, f"Title line {p} spans the whole width of the page above both of the two columns here")
        pdf.set_xy(10, 35)
        pdf.multi_cell(85, 5, f"{LEFT} Page {p} left.")
        pdf.set_xy(110, 35)
        pdf.multi_cell(85, 5, f"{RIGHT} Page {p} right.")
    pdf.set_font("Courier", size=9)
    pdf.set_xy(10, 120)
    pdf.multi_cell(190, 4.5, CODE)
    pdf.set_font("Helvetica", size=10)
    pdf.set_xy(10, 160)
    pdf.write(5, "Einstein wrote E = mc")
    pdf.char_vpos = "SUP"
    pdf.write(5, "2")
    pdf.char_vpos = "LINE"
    pdf.write(5, " and the sequence x")
    pdf.char_vpos = "SUB"
    pdf.write(5, "n")
    pdf.char_vpos = "LINE"
    pdf.write(5, " converges.")
    pdf.set_xy(10, 180)
    pdf.multi_cell(60, 5, "A hyphen-\nated word is joined again.")
    if blank_page:
        from PIL import Image

        pdf.furniture = False
        pdf.add_page()  # a scanned page: one picture, no text layer
        pdf.image(Image.new("L", (200, 280), 200), x=10, y=10, w=190)
        pdf.add_page()  # an empty page: nothing to recover, nothing to flag
    pdf.output(str(path))


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("pdf") / "paper.pdf"
    write_paper(path, blank_page=True)
    return extract_pdf(path, "paper")


def test_two_column_reading_order(paper):
    text = paper["text"]
    order = [text.index(s) for s in ("Title line 0", "Page 0 left.", "The right column", "Page 0 right.",
                                     "Title line 1", "Page 1 left.", "Page 1 right.")]
    assert order == sorted(order)
    assert LEFT + " Page 0 left." in text  # wrapped lines joined into one paragraph


def test_code_listing_keeps_indentation_and_blank_line(paper):
    assert f"```\n{CODE}\n```" in paper["text"]
    assert paper["code_blocks"] == 1


def test_superscript_and_subscript_from_glyph_positions(paper):
    assert "$E = mc^{2}$" in paper["text"]
    assert "$x_{n}$ converges." in paper["text"]
    assert paper["formulas"] == 2


def test_running_header_footer_page_numbers_removed_and_hyphenation_joined(paper):
    text = paper["text"]
    assert "Journal of Tiny Results" not in text
    assert all(line.strip() not in ("1", "2", "3") for line in text.split("\n"))
    assert "A hyphenated word is joined again." in text
    assert paper["boilerplate_chars"] > 0


def test_page_without_text_layer_is_flagged_for_ocr(paper):
    assert paper["pages"] == 4 and paper["ocr_pages"] == [3]


@pytest.mark.skipif(not DEJAVU.exists(), reason="needs the DejaVu Sans font for Unicode math glyphs")
def test_unicode_math_mapped_to_latex(tmp_path):
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.add_font("DejaVu", "", str(DEJAVU))
    pdf.set_font("DejaVu", size=11)
    pdf.set_xy(10, 20)
    pdf.multi_cell(190, 6, "For every ε > 0 we have α ≤ β and ∑ a ≠ ∞ in this line of ordinary text.")
    pdf.set_xy(10, 60)
    pdf.multi_cell(190, 6, "Η γλώσσα του κειμένου είναι ελληνική.")  # Greek prose stays Greek
    pdf.output(str(tmp_path / "u.pdf"))
    text = extract_pdf(tmp_path / "u.pdf")["text"]
    assert "Η γλώσσα του κειμένου είναι ελληνική." in text
    assert "$\\alpha \\leq \\beta$" in text.replace("\\leq\\beta", "\\leq \\beta")
    assert "\\varepsilon" in text and "\\neq" in text and "\\infty" in text


def test_cli_counts_a_broken_pdf_and_resumes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_paper(src / "a.pdf", pages=1)
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "openmimo", "extract-pdf", "--input", str(src), "--output", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in recs] == ["a"] and "Page 0 left." in recs[0]["text"]
    stats = json.loads(Path(str(out) + ".stats.json").read_text())
    assert stats["kept"] == 1 and sum(v for k, v in stats.items() if k.startswith("dropped_error")) == 1
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and len(out.read_text().splitlines()) == 1
    assert json.loads(Path(str(out) + ".stats.json").read_text())["skipped_done"] == 1
