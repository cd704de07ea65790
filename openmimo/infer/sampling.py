"""Sampling as pure functions over a batch of logits (no host sync, per-row parameters)."""

from __future__ import annotations

import torch


def process_logits(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                   top_k: torch.Tensor) -> torch.Tensor:
    """Log-probabilities after temperature, top-k and top-p filtering, per row.

    logits: (B, V); temperature/top_p/top_k: (B,).  Rows with temperature 0 are greedy: only
    the arg-max keeps probability 1.  top_k <= 0 and top_p >= 1 disable those filters.
    """
    logits = logits.float()
    greedy = temperature <= 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    scaled = logits / t[:, None]
    V = logits.shape[-1]
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    ranks = torch.arange(V, device=logits.device)[None]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, V))
    remove = ranks >= k[:, None]
    probs = torch.softmax(sorted_logits, dim=-1)
    cum_before = torch.cumsum(probs, dim=-1) - probs
    remove = remove | (cum_before >= top_p[:, None].float())
    remove[:, 0] = False  # always keep the most likely token
    remove = remove | (greedy[:, None] & (ranks > 0))
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    filtered = torch.empty_like(scaled).scatter_(-1, order, sorted_logits)
    return torch.log_softmax(filtered, dim=-1)


def sample(logprobs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from log-probabilities (B, V) -> (B,)."""
    probs = logprobs.exp()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
