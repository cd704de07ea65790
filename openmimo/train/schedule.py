"""Schedules as pure functions of the token count: learning rate, batch size, MTP weight, data stage."""

from __future__ import annotations

import math


def lr_at(tokens: int, lr: float, min_lr: float, warmup: int, constant: int, decay: int) -> float:
    """Linear warm-up 0 -> lr, hold lr, cosine decay lr -> min_lr, then min_lr."""
    if warmup and tokens < warmup:
        return lr * tokens / warmup
    t = tokens - warmup
    if t < constant:
        return lr
    t -= constant
    if decay <= 0 or t >= decay:
        return min_lr if decay > 0 else lr
    return _cosine(t / decay, lr, min_lr)


def _cosine(p: float, lr: float, floor: float) -> float:
    """Half a cosine from lr (p = 0) down to floor (p = 1)."""
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * p))


def batch_size_at(tokens: int, final: int, start: int, warmup_tokens: int, multiple: int = 1) -> int:
    """Linear batch-size warm-up from ``start`` to ``final`` sequences, rounded down to ``multiple``."""
    if start <= 0 or warmup_tokens <= 0 or tokens >= warmup_tokens:
        return final
    b = start + (final - start) * tokens / warmup_tokens
    return max(multiple, int(b) // multiple * multiple)


def mtp_weight_at(tokens: int, weight: float, late_weight: float, switch_tokens: int) -> float:
    return weight if tokens < switch_tokens else late_weight


def stage_at(tokens: int, stage_tokens: list[int]) -> int | None:
    """Index of the stage that the ``tokens``-th token belongs to; None when all stages are done."""
    end = 0
    for i, n in enumerate(stage_tokens):
        end += n
        if tokens < end:
            return i
    return None


def lr_at_progress(progress: float, lr: float, kind: str = "constant", min_lr_ratio: float = 0.0,
                   step: int = 0, warmup_steps: int = 0) -> float:
    """A run's learning rate at ``progress`` in [0, 1] (RL: the share of its steps or of its time budget done).

    ``kind``: constant, cosine (lr -> min_lr_ratio * lr along a half cosine) or linear (a straight line to the
    same floor; "budgeted training" anneals to the budget this way).  The first ``warmup_steps`` steps scale the
    result by (step + 1) / warmup_steps.
    """
    p = min(max(progress, 0.0), 1.0)
    floor = lr * min_lr_ratio
    if kind == "constant":
        out = lr
    elif kind == "cosine":
        out = _cosine(p, lr, floor)
    elif kind == "linear":
        out = lr - (lr - floor) * p
    else:
        raise ValueError(f"lr schedule must be constant, cosine or linear, got {kind!r}")
    if warmup_steps > 0 and step < warmup_steps:
        out *= (step + 1) / warmup_steps
    return out
