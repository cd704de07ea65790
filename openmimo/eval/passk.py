"""avg@k and the unbiased pass@k estimator (Chen et al., 2021), per problem and over a data set.

For one problem with ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n - c, k) / C(n, k)``
(the chance that at least one of ``k`` samples drawn without replacement is correct) and
``avg@n`` is the mean score of the ``n`` samples.  A data set's figure is the mean over problems.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["pass_at_k", "avg_at_k", "summarise_validation", "summarise", "comb_pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n - c, k) / C(n, k)``,
    computed as a stable product."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def comb_pass_at_k(n: int, c: int, k: int) -> float:
    """The textbook formula with binomials (the oracle in tests)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def avg_at_k(scores: Sequence[float]) -> float:
    """Mean reward over the k samples of one problem (avg@k)."""
    if not scores:
        raise ValueError("avg@k of no samples")
    return float(sum(scores)) / len(scores)


def summarise_validation(per_problem: Sequence[Sequence[float]], ks: Sequence[int] = (1,),
                         threshold: float = 1.0) -> dict:
    """Dataset-level avg@n and pass@k (a sample counts as correct when its reward >= threshold).

    ``n`` is the smallest sample count over the problems; keys: ``n_problems``, ``samples``,
    ``avg@{n}`` and ``pass@{k}`` for each ``k <= n``."""
    if not per_problem:
        return {"n_problems": 0}
    n = min(len(s) for s in per_problem)
    out = {"n_problems": len(per_problem), "samples": n,
           f"avg@{n}": sum(avg_at_k(s) for s in per_problem) / len(per_problem)}
    for k in ks:
        if k <= n:
            vals = [pass_at_k(len(s), sum(1 for x in s if x >= threshold - 1e-9), k) for s in per_problem]
            out[f"pass@{k}"] = sum(vals) / len(vals)
    return out


def summarise(per_problem: Sequence[Sequence[float]], k: int, threshold: float = 1.0) -> dict:
    """The eval table's figures for ``k`` samples per problem: ``n``, ``k``, ``avg@k`` and
    ``pass@1 .. pass@k`` (the powers of two up to k, and k itself)."""
    ks = sorted({1, k, *[2 ** i for i in range(1, k.bit_length()) if 2 ** i <= k]})
    s = summarise_validation(per_problem, ks=ks, threshold=threshold)
    out = {"n": s["n_problems"], "k": k}
    if s["n_problems"]:
        out["avg@k"] = s[f"avg@{s['samples']}"]
        out.update({f"pass@{j}": s[f"pass@{j}"] for j in ks if f"pass@{j}" in s})
    return out
