"""THE training step, shared by pre-training, SFT and the RL update.

An *objective* turns micro-batches into a loss.  It has two parts:

- ``objective.denominators(micro_batches) -> 1-D float64 tensor``: the counts a loss is normalised
  by (e.g. valid targets per loss term).  The loop sums them over every micro-batch and every
  data-parallel rank *before* any forward pass, so the gradient is that of the global-batch mean,
  whatever the micro-batch split or the number of ranks (token-level normalisation).
- ``objective(model, micro_batch, denominators) -> (loss, stats)``: the micro-batch's share of
  the global loss (its sums divided by the global denominators) and a dict of summable floats.

The loop does gradient accumulation (FSDP2 gradient sync only on the last micro-batch),
autocast, clipping, the optimizer step and the all-reduce of the stats.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn

from openmimo.runtime import Runtime


def build_optimizer(model: nn.Module, lr: float, betas, eps: float, weight_decay: float,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases or other vectors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kw)


def _total_norm(x) -> float:
    if hasattr(x, "full_tensor"):
        x = x.full_tensor()
    return float(x)


class Trainer:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, rt: Runtime, grad_clip: float = 1.0):
        self.model, self.optimizer, self.rt, self.grad_clip = model, optimizer, rt, grad_clip

    def step(self, micro_batches: list[dict], objective, lr: float) -> dict:
        """One optimizer step over ``micro_batches`` (this rank's share of the global batch)."""
        t0 = time.perf_counter()
        rt = self.rt
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        denoms = objective.denominators(micro_batches).to(torch.float64)
        if rt.distributed:
            denoms = denoms.to(rt.device)
            dist.all_reduce(denoms)
        denoms = denoms.cpu()
        stats: dict[str, float] = defaultdict(float)
        fsdp = hasattr(self.model, "set_requires_gradient_sync")
        self.model.train()
        for i, mb in enumerate(micro_batches):
            if fsdp:  # one rank (CPU offload) has no reduction to skip: its gradients go to the CPU every micro-batch
                self.model.set_requires_gradient_sync(i == len(micro_batches) - 1 or not rt.distributed)
            mb = {k: (v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in mb.items()}
            with rt.autocast():
                loss, st = objective(self.model, mb, denoms)
            # FSDP averages gradients over ranks; the loss is already a global mean, so undo it.
            (loss * rt.world_size).backward()
            for k, v in st.items():
                stats[k] += float(v)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip > 0:
            grad_norm = _total_norm(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        else:
            grad_norm = _total_norm(torch.nn.utils.clip_grad_norm_(params, float("inf")))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if rt.distributed and stats:
            keys = sorted(stats)
            vec = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=rt.device)
            dist.all_reduce(vec)
            stats = dict(zip(keys, vec.tolist()))
        stats = dict(stats)
        stats["grad_norm"] = grad_norm
        stats["step_time_s"] = time.perf_counter() - t0
        return stats
