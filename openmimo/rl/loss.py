"""MiMo's policy objective (paper Eq. 1): clipped ratio with clip-higher, token-level normalisation.

Per response token t of response i with advantage A_i, new log-prob ``logp`` and rollout
(behaviour) log-prob ``old``::

    ratio    = exp(logp - old)
    loss_t   = max(-A_i * ratio, -A_i * clip(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high))
    loss     = sum over every response token of the global batch of loss_t / (number of those tokens)

("token-mean", verl's ``loss_agg_mode``; DAPO/MiMo).  ``"seq-mean-token-mean"`` (GRPO's original:
per-sequence mean, then mean over sequences) and ``"seq-mean-token-sum"`` are offered for
ablations.  The denominators are global: :class:`RLObjective` plugs into
:class:`openmimo.train.loop.Trainer`, which sums ``denominators`` over all micro-batches and ranks
before the first forward, so the gradient does not depend on the micro-batch split.

KL: none by default (``kl_coef = 0``, and then no reference model exists).  With ``kl_coef > 0``
the micro-batches must carry ``ref_logprobs`` and the ``low_var_kl`` (k3) estimator
``exp(ref - logp) - (ref - logp) - 1`` is added per token, aggregated like the policy loss.

Clip fractions follow verl: ``clip_high`` = share of tokens with A > 0 and ratio > 1 + eps_high
(their gradient is cut), ``clip_low`` = share with A < 0 and ratio < 1 - eps_low.
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, V) logits, (…) targets -> log p(target) and the entropy of each distribution (float32)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok = lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ent = -(lp.exp() * lp).sum(-1)
    return tok, ent


def low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || ref) per token: exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = (ref_logp - logp).clamp(-20, 20)
    return d.exp() - d - 1


def clipped_token_loss(logp, old_logp, advantages, clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.28):
    """Per-token clipped surrogate loss and masks of tokens clipped low / high (no reduction).

    ``advantages`` broadcasts against ``logp`` (pass (B, 1) for per-sequence advantages).
    """
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))
    adv = advantages.to(logp.dtype)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    loss = torch.maximum(pg1, pg2)
    clipped_high = (adv > 0) & (ratio > 1 + clip_ratio_high)
    clipped_low = (adv < 0) & (ratio < 1 - clip_ratio_low)
    return loss, ratio, clipped_low, clipped_high


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, denom: float) -> torch.Tensor:
    """This micro-batch's share of the global aggregate: a sum divided by the *global* ``denom``
    (response tokens for token-mean, sequences for the seq-mean modes)."""
    m = mask.to(per_token.dtype)
    if mode == "token-mean":
        return (per_token * m).sum() / denom
    seq_sum = (per_token * m).sum(-1)
    if mode == "seq-mean-token-sum":
        return seq_sum.sum() / denom
    if mode == "seq-mean-token-mean":
        return (seq_sum / m.sum(-1).clamp(min=1)).sum() / denom
    raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES}, got {mode!r}")


class RLObjective:
    """The RL objective for :meth:`Trainer.step`.

    Micro-batch keys (right-padded, aligned so that position t holds token t):
    ``input_ids`` (B, T), ``response_mask`` (B, T) 1 on response tokens, ``old_logprobs`` (B, T) the
    behaviour log-prob of token t, ``advantages`` (B,), optionally ``ref_logprobs`` (B, T).

    Stats are sums (the loop adds them over micro-batches and ranks); ``ratio_min`` / ``ratio_max``
    of the last step are kept on the object (``self.extrema``) because they do not add.
    """

    def __init__(self, clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.28, loss_agg_mode: str = "token-mean",
                 kl_coef: float = 0.0, entropy_coeff: float = 0.0):
        if loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES}, got {loss_agg_mode!r}")
        self.clip_ratio_low, self.clip_ratio_high = clip_ratio_low, clip_ratio_high
        self.loss_agg_mode, self.kl_coef, self.entropy_coeff = loss_agg_mode, kl_coef, entropy_coeff
        self.extrema = {"ratio_min": float("inf"), "ratio_max": float("-inf")}

    def denominators(self, micro_batches) -> torch.Tensor:
        """[response tokens, sequences with at least one response token] over these micro-batches."""
        tokens = sum(float(mb["response_mask"][:, 1:].sum()) for mb in micro_batches)
        seqs = sum(float((mb["response_mask"][:, 1:].sum(-1) > 0).sum()) for mb in micro_batches)
        return torch.tensor([tokens, seqs], dtype=torch.float64)

    def __call__(self, model, mb, denoms):
        ids = mb["input_ids"]
        logits = model(ids[:, :-1]).logits  # right padding: causal attention never sees the pads
        targets = ids[:, 1:]
        mask = mb["response_mask"][:, 1:].to(torch.float32)
        logp, ent = token_logprobs_and_entropy(logits, targets)
        old = mb["old_logprobs"][:, 1:].to(torch.float32)
        adv = mb["advantages"].to(torch.float32)[:, None]
        loss_t, ratio, c_low, c_high = clipped_token_loss(logp, old, adv, self.clip_ratio_low, self.clip_ratio_high)
        per_tok = loss_t
        kl = None
        if self.kl_coef:
            kl = low_var_kl(logp, mb["ref_logprobs"][:, 1:].to(torch.float32))
            per_tok = per_tok + self.kl_coef * kl
        if self.entropy_coeff:
            per_tok = per_tok - self.entropy_coeff * ent
        denom = float(denoms[0] if self.loss_agg_mode == "token-mean" else denoms[1])
        loss = aggregate(per_tok, mask, self.loss_agg_mode, max(denom, 1.0))
        with torch.no_grad():
            b = mask > 0
            n = float(b.sum())
            stats = {"n_tokens": n, "n_seqs": float((mask.sum(-1) > 0).sum()),
                     "pg_loss_sum": float((loss_t * mask).sum()), "entropy_sum": float((ent * mask).sum()),
                     "ratio_sum": float((ratio * mask).sum()), "clip_low": float((c_low & b).sum()),
                     "clip_high": float((c_high & b).sum()),
                     "logp_diff_abs_sum": float(((logp - old).abs() * mask).sum())}
            if kl is not None:
                stats["kl_sum"] = float((kl * mask).sum())
            if n:
                self.extrema["ratio_min"] = min(self.extrema["ratio_min"], float(ratio[b].min()))
                self.extrema["ratio_max"] = max(self.extrema["ratio_max"], float(ratio[b].max()))
        return loss, stats

    def reset_extrema(self) -> None:
        self.extrema = {"ratio_min": float("inf"), "ratio_max": float("-inf")}


def summarise_step(stats: dict, extrema: dict | None = None) -> dict:
    """Per-token means from the summed stats of one or more steps."""
    n = max(stats.get("n_tokens", 0.0), 1.0)
    out = {"pg_loss": stats.get("pg_loss_sum", 0.0) / n, "entropy": stats.get("entropy_sum", 0.0) / n,
           "ratio_mean": stats.get("ratio_sum", 0.0) / n, "clip_frac_low": stats.get("clip_low", 0.0) / n,
           "clip_frac_high": stats.get("clip_high", 0.0) / n,
           "clip_frac": (stats.get("clip_low", 0.0) + stats.get("clip_high", 0.0)) / n}
    if "kl_sum" in stats:
        out["kl"] = stats["kl_sum"] / n
    if extrema:
        out.update(extrema)
    return out
