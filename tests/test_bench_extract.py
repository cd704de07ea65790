"""bench/bench_extract.py's scorer (the oracle behind the reported extraction figures): pandoc's reading of
markdown math, fence-aware code lines, the README's tokenisation; attacked with outputs that game each rule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_extract", ROOT / "bench" / "bench_extract.py")
B = importlib.util.module_from_spec(spec)
spec.loader.exec_module(B)


@pytest.mark.parametrize("text, formulas", [
    ("Let $x^2$ and $$\\frac{a}{b}$$ be.", ["x^2", "\\fracab"]),
    ("It costs $5 and $10 today.", []),                 # closing $ followed by a digit / opening $ before a space
    ("$ x$ and $y $ are not math", []),
    ("\\$5 and \\$x\\$ are literal", []),
    ("inline \\(a+b\\) and display \\[c\\]", ["a+b", "c"]),
    ("```\n$x$ in code\n```\nand `$y$` too, but $z$", ["z"]),
    ("  ```python\n  $q$\n  ```", []),                     # an indented fence still hides its math
])
def test_output_formulas_follow_pandoc(text, formulas):
    assert sorted(B.output_formulas(text)) == sorted(formulas)


def test_formula_hits_count_multiplicity_and_ignore_spacing_and_braces():
    assert B.formula_hits("$x^{2}$ and $x ^ 2$", ["x^2", "x^2", "x^2"]) == 2
    assert B.formula_hits("x^2 written without delimiters", ["x^2"]) == 0
    assert B.formula_hits("$\\{a\\}$", ["\\{ a \\}"]) == 1 and B.formula_hits("$a$", ["\\{a\\}"]) == 0


def test_code_lines_exact_leading_whitespace_and_fence_indent():
    out = "  ```\n  def f():\n      return 1\n  ```\n\treturn 2"
    assert B.code_hits(out, ["def f():", "    return 1", "\treturn 2"]) == 3
    assert B.code_hits("return 1", ["    return 1"]) == 0  # indentation lost scores nothing
    assert B.code_hits("    x = 1", ["    x = 1", "    x = 1"]) == 1  # a line given twice needs two


def test_tokens_and_f1():
    assert B.tokens("See [the docs](https://x.example/a) at https://y.example 中文 AB-12") == \
        {"see": 1, "the": 1, "docs": 1, "at": 1, "中": 1, "文": 1, "ab": 1, "12": 1}
    assert B.f1("", "gold text") == 0.0 and B.f1("# Gold *text*", "gold text") == 1.0
    assert abs(B.f1("a b", "a c") - 0.5) < 1e-9
