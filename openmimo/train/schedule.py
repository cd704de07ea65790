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
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / decay))


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
