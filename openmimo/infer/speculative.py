"""MTP speculative decoding: the accept/reject rule (a pure function) and acceptance statistics.

The engine drafts k tokens with the model's MTP layers (depth j proposes the token j positions
after the one the main model is about to emit), runs the main model once over
``[next token, draft 1, ..., draft k]`` and calls :func:`accept_drafts`.  The rule is the standard
one (Leviathan et al. 2023; Chen et al. 2023): draft ``d_i`` drawn from ``q_i`` is accepted with
probability ``min(1, p_i(d_i) / q_i(d_i))``; at the first rejection the token is drawn from the
residual ``max(0, p_i - q_i)`` (normalised) and the rest is discarded; when all k are accepted a
bonus token is drawn from ``p_{k+1}``.  Every emitted token is then distributed exactly as plain
sampling from ``p`` (the *processed* distribution: temperature, top-k, top-p), whatever the drafts.
At temperature 0, ``p`` and ``q`` are one-hot, so the rule reduces to "accept while the draft equals
the arg-max", and the output equals plain greedy decoding.

Randomness comes from :func:`openmimo.infer.sampling.uniform_noise`, keyed by (seed, position of
the token being decided, stream), so plain and speculative decoding draw the bonus token with the
same noise and each position's decision uses fresh, independent noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from openmimo.infer.sampling import STREAM_ACCEPT, STREAM_RESIDUAL, STREAM_SAMPLE, gumbel_sample, uniform_noise


def accept_drafts(target_lp: torch.Tensor, draft_lp: torch.Tensor | None, drafts: torch.Tensor | None,
                  seed: torch.Tensor, first_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decide the tokens of one verify step.

    target_lp: (B, k+1, V) processed log-probs of the main model; row i predicts position first_pos + i.
    draft_lp: (B, k, V) processed log-probs the drafts were drawn from; drafts: (B, k).
    seed, first_pos: (B,).  Returns ``(n_accepted (B,), tokens (B, k+1))``: the emitted tokens are
    ``tokens[b, : n_accepted[b] + 1]`` (accepted drafts, then the correction or bonus token).
    """
    B, k1, _ = target_lp.shape
    k = k1 - 1
    positions = first_pos[:, None] + torch.arange(k1, device=target_lp.device)
    bonus = gumbel_sample(target_lp[:, k], seed, positions[:, k], STREAM_SAMPLE)
    if k == 0:
        return torch.zeros(B, dtype=torch.long, device=target_lp.device), bonus[:, None]
    p = target_lp[:, :k].float().exp()
    q = draft_lp.float().exp()
    p_d = p.gather(-1, drafts[..., None]).squeeze(-1)
    q_d = q.gather(-1, drafts[..., None]).squeeze(-1)
    u = uniform_noise(seed[:, None], positions[:, :k], STREAM_ACCEPT)
    accept = u * q_d <= p_d  # probability min(1, p/q); u < 1 strictly
    n_acc = accept.long().cumprod(-1).sum(-1)
    residual = (p - q).clamp(min=0)
    empty = residual.sum(-1, keepdim=True) <= 0  # p == q: a rejection cannot happen; any valid row will do
    residual = torch.where(empty, p, residual)
    res_tok = gumbel_sample(residual.log(), seed[:, None], positions[:, :k], STREAM_RESIDUAL)
    candidates = torch.cat([res_tok, bonus[:, None]], dim=1)  # the token emitted after i accepted drafts
    final = candidates.gather(1, n_acc[:, None])
    tokens = torch.cat([drafts, bonus[:, None]], dim=1).scatter(1, n_acc[:, None], final)
    return n_acc, tokens


@dataclass
class SpecStats:
    """Acceptance counters of speculative decoding (per depth, depth 1 first)."""

    k: int
    drafted: list = field(default_factory=list)  # drafts proposed at each depth
    accepted: list = field(default_factory=list)  # drafts accepted at each depth
    steps: int = 0  # verify steps, summed over sequences
    emitted: int = 0  # tokens emitted by those steps (accepted drafts + 1 each)

    def __post_init__(self):
        self.drafted = self.drafted or [0] * self.k
        self.accepted = self.accepted or [0] * self.k

    def record(self, n_accepted: list[int]) -> None:
        """Record one verify step of some sequences (their accepted-draft counts)."""
        for a in n_accepted:
            self.steps += 1
            self.emitted += a + 1
            for j in range(self.k):
                self.drafted[j] += 1
                self.accepted[j] += int(a > j)

    def acceptance_rate(self) -> list[float]:
        """accepted / drafted per depth (depth j counts as accepted only if depths < j were)."""
        return [a / d if d else 0.0 for a, d in zip(self.accepted, self.drafted)]

    def mean_accepted_length(self) -> float:
        """Mean accepted drafts per verify step (tokens per step is this + 1)."""
        return (self.emitted - self.steps) / self.steps if self.steps else 0.0

    def as_dict(self) -> dict:
        return {"k": self.k, "acceptance_rate": self.acceptance_rate(), "mean_accepted_length":
                self.mean_accepted_length(), "tokens_per_step": self.emitted / self.steps if self.steps else 0.0,
                "steps": self.steps}
