"""Group-relative advantages (MiMo-7B Eq. 2, GRPO) and the unbiased pass@k estimator.

For a group of ``n`` responses to one prompt with rewards ``r_1..r_n``::

    A_i = (r_i - mean(r)) / max(std(r), std_floor)

``std`` is the sample standard deviation (``unbiased=True``, divisor n - 1, as verl's and TRL's
GRPO compute it) or the population one (divisor n).  The floor keeps near-constant groups from
exploding; groups with exactly constant rewards get advantage 0 (and dynamic sampling drops them
anyway).  Every token of response ``i`` shares ``A_i``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def group_advantages(rewards, std_floor: float = 1e-6, unbiased: bool = True, norm_by_std: bool = True) -> torch.Tensor:
    """``rewards``: (G, n) tensor or list of equal-length lists -> (G, n) float32 advantages.

    ``norm_by_std=False`` gives Dr. GRPO's mean-centred rewards (no division).
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.dim() != 2:
        raise ValueError(f"rewards must be (groups, samples), got shape {tuple(r.shape)}")
    n = r.shape[1]
    centred = r - r.mean(dim=1, keepdim=True)
    if not norm_by_std:
        return centred.float()
    if n < 2 and unbiased:
        return torch.zeros_like(r, dtype=torch.float32)
    std = r.std(dim=1, keepdim=True, unbiased=unbiased) if n > 1 else torch.zeros(r.shape[0], 1, dtype=r.dtype)
    return (centred / std.clamp(min=std_floor)).float()


def group_advantages_ragged(groups: Sequence[Sequence[float]], **kw) -> list[list[float]]:
    """Like :func:`group_advantages` for groups of different sizes (one call per group)."""
    return [group_advantages([list(g)], **kw)[0].tolist() for g in groups]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021):
    ``1 - C(n - c, k) / C(n, k)``; computed as a stable product."""
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


def avg_at_k(scores: Sequence[float]) -> float:
    """Mean reward over the k samples of one problem (avg@k)."""
    if not scores:
        raise ValueError("avg@k of no samples")
    return float(sum(scores)) / len(scores)


def summarise_validation(per_problem: Sequence[Sequence[float]], ks: Sequence[int] = (1,),
                         threshold: float = 1.0) -> dict:
    """Dataset-level avg@n and pass@k (a sample counts as correct when its reward >= threshold)."""
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


def _comb_pass_at_k(n: int, c: int, k: int) -> float:
    """The textbook formula with binomials (the oracle in tests)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
