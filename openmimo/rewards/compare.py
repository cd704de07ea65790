"""Output comparisons of the code judge: pure functions, run in the judge's own process.

The sandboxed zygote returns what a test produced (its stdout, its return value as JSON); the
expected values never enter the sandbox, and these functions decide, outside it, whether the
produced value is right.
"""

from __future__ import annotations

import math


def _lines(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tok_equal(a: str, b: str, tol: float | None) -> bool:
    if a == b:
        return True
    if tol is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)


def stdout_matches(got: str, expected: str, tol: float | None = None) -> bool:
    """Line-by-line comparison after stripping trailing whitespace; optional numeric tolerance."""
    g, e = _lines(got), _lines(expected)
    if len(g) != len(e):
        return False
    if tol is None:
        return g == e
    for gl, el in zip(g, e):
        gt, et = gl.split(), el.split()
        if len(gt) != len(et) or not all(_tok_equal(x, y, tol) for x, y in zip(gt, et)):
            return False
    return True


def value_matches(got, expected, tol: float | None = None) -> bool:
    """Return-value comparison: tuples and lists alike, floats within ``tol`` when given."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return got is expected or got == expected and type(got) is type(expected)
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        if tol is not None:
            return math.isclose(got, expected, rel_tol=tol, abs_tol=tol)
        return got == expected
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(value_matches(a, b, tol) for a, b in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(value_matches(got[k], expected[k], tol) for k in got)
    return got == expected
