"""Group-relative advantages (MiMo-7B Eq. 2, GRPO); pass@k lives in :mod:`openmimo.eval.passk`.

For a group of ``n`` responses to one prompt with rewards ``r_1..r_n``::

    A_i = (r_i - mean(r)) / max(std(r), std_floor)

``std`` is the sample standard deviation (``unbiased=True``, divisor n - 1, as verl's and TRL's
GRPO compute it) or the population one (divisor n).  The floor keeps near-constant groups from
exploding; groups with exactly constant rewards get advantage 0 (and dynamic sampling drops them
anyway).  Every token of response ``i`` shares ``A_i``.
"""

from __future__ import annotations

from typing import Sequence

import torch

# pass@k and avg@k live in openmimo.eval.passk; re-exported for RL's callers
from openmimo.eval.passk import avg_at_k, pass_at_k, summarise_validation  # noqa: F401


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
