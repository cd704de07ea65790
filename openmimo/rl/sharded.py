"""RL on several ranks (torchrun): the actor sharded with FSDP2, one colocated engine per rank.

Data-parallel RL, the colocated layout of verl's hybrid engine scaled to what torchrun gives: every rank holds
a rollout engine (full weights, its own requests) and one FSDP2 shard of the actor.  A step is

1. rollout: each rank collects ``batch_groups / world`` groups from its own sampler stream (its own prompts);
2. :func:`equalize`: every rank keeps the same number of groups (the smallest count over ranks), because each
   optimizer step is a collective that every rank must enter the same number of times;
3. update: each mini-batch of ``ppo_mini_batch_size`` groups is ``ppo_mini_batch_size / world`` groups per rank;
   :class:`openmimo.train.loop.Trainer` all-reduces the token counts before the forward passes, so the gradient
   is that of the global batch's token mean, exactly as one rank over all the groups would compute it;
4. weight sync: :func:`gathered_state_dict` all-gathers the new weights and every rank copies them into its
   engine (``Engine.update_weights``).

The tests hold a 2- and 4-rank update equal to the 1-rank update on the same batch (loss, gradient norm and
weights after the step) and the engines' weights equal to the trained ones, on CPU with gloo.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from openmimo.config import ConfigError


def gathered_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on every rank, as local tensors (collective under FSDP2)."""
    out = {}
    for name, value in model.state_dict().items():
        out[name] = value.full_tensor() if hasattr(value, "full_tensor") else value
    return out


def equalize(groups: list, rt) -> tuple[list, int]:
    """The first ``min over ranks of len(groups)`` groups of this rank, and how many it dropped (collective)."""
    if not rt.distributed:
        return groups, 0
    n = torch.tensor([len(groups)], dtype=torch.int64)
    dist.all_reduce(n, op=dist.ReduceOp.MIN)
    keep = int(n.item())
    return groups[:keep], len(groups) - keep


def per_rank(total: int, rt, key: str) -> int:
    """``total`` split evenly over the ranks; a ConfigError naming ``key`` when it does not divide."""
    if total % rt.world_size:
        raise ConfigError(f"key '{key}': {total} does not divide evenly over {rt.world_size} ranks")
    return total // rt.world_size
