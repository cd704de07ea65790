"""Parallelism applied to a built model, outside it: activation checkpointing, compile, FSDP2 — in that order.

The model keeps float32 master weights; compute runs under autocast (bf16 on GPU), and under
FSDP2 parameters are gathered in bf16 with float32 gradient reduction.  All ranks build and
initialise the full model on their device from the same seed before sharding, so a sharded run
starts from exactly the single-device weights (simple and exact: a 7B model's float32 weights,
28 GB, fit one 80 GB GPU for this moment — a meta-device sharded init is the next step for
larger models).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from openmimo.config import ConfigError, to_dict
from openmimo.model.mimo import MiMoForCausalLM, build_model


def _blocks(model: MiMoForCausalLM) -> list[nn.Module]:
    return list(model.model.layers) + list(model.model.mtp_layers)


def apply_activation_checkpointing(model: MiMoForCausalLM) -> None:
    """Recompute each block's activations in backward (names and state dicts are unchanged)."""
    for block in _blocks(model):
        inner = block.forward

        def fwd(*args, _inner=inner, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = fwd


def apply_compile(model: MiMoForCausalLM) -> None:
    """Compile each block in place (``nn.Module.compile`` keeps parameter names).

    The blocks share one code object, and a run legitimately sees several variants of it (grad and
    no-grad, each stage's sequence length, the MTP layer's bf16 input at evaluation): dynamo's default
    limit of 8 variants made the final evaluation fall back to eager, so the limit is raised.
    """
    from openmimo.runtime import allow_recompiles

    allow_recompiles(64)
    for block in _blocks(model):
        block.compile()


COMPILE_SCOPES = ("auto", "blocks", "whole")


def compile_scope(scope: str, distributed: bool) -> str:
    """What ``train.compile`` compiles: ``whole`` (the model's forward, losses included, as one graph: the faster
    path on one device, packed documents' block mask included) or ``blocks`` (each decoder and MTP block: what
    FSDP2 shards); ``auto`` is whole on one device and blocks when distributed."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"key 'compile_scope': {scope!r} is not one of {', '.join(COMPILE_SCOPES)}")
    if scope == "auto":
        return "blocks" if distributed else "whole"
    return scope


def apply_whole_compile(model: MiMoForCausalLM) -> None:
    """Compile the model's forward in place. Evaluation forwards (no grad, other lengths) are further variants of
    the same graph, so dynamo's recompile limit is raised as for blocks."""
    from openmimo.runtime import allow_recompiles

    allow_recompiles(64)
    model.compile()


def apply_fsdp(model: MiMoForCausalLM, rt, offload: bool = False) -> None:
    """FSDP2 over the ranks; ``offload``: parameters, gradients and optimizer state live in CPU memory (the
    optimizer steps there) and each block's parameters come to the GPU only for its forward and backward."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(rt.device.type, (rt.world_size,))
    mp = None
    if rt.device.type == "cuda" and rt.dtype != torch.float32:
        mp = MixedPrecisionPolicy(param_dtype=rt.dtype, reduce_dtype=torch.float32)
    kw = {"mesh": mesh}
    if mp is not None:
        kw["mp_policy"] = mp
    if offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    for block in _blocks(model):
        fully_shard(block, **kw)
    fully_shard(model, **kw)


def build_parallel_model(cfg, rt, seed: int = 0, compile: bool = False,
                         activation_checkpointing: bool = False, scope: str = "auto") -> MiMoForCausalLM:
    # Every rank initialises the full model on its own device from the same seed (the same RNG
    # stream as a one-device run), then shards it.
    model = build_model(cfg, device=rt.device, dtype=torch.float32, seed=seed)
    return parallelize(model, rt, compile=compile, activation_checkpointing=activation_checkpointing, scope=scope)


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2 manages ``model`` (its state dict then holds DTensors)."""
    return hasattr(model, "set_requires_gradient_sync")


def parallelize(model: MiMoForCausalLM, rt, compile: bool = False,
                activation_checkpointing: bool = False, scope: str = "auto", offload: bool = False) -> MiMoForCausalLM:
    """Activation checkpointing, compile (``scope``: see :func:`compile_scope`), FSDP2 (when distributed, or for
    ``offload`` on one GPU: a one-rank process group), in that order, on a built model (the same full weights on
    every rank, e.g. a loaded checkpoint)."""
    if offload and rt.device.type != "cuda":
        raise ConfigError("key 'train.cpu_offload': offloading to CPU memory needs a CUDA device")
    if offload and not dist.is_initialized():
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    scope = compile_scope(scope, rt.distributed or offload)
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile and scope == "blocks":
        apply_compile(model)
    if rt.distributed or offload:
        apply_fsdp(model, rt, offload)
    if compile and scope == "whole":
        apply_whole_compile(model)
    return model


CONFIG_FILE = "openmimo_config.yaml"  # the resolved stage config, written into every exported checkpoint


def config_yaml(cfg) -> str:
    import yaml
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def full_state_dict(model: nn.Module) -> dict:
    """The unsharded state dict on CPU (collective under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_hf(model: nn.Module, path, tokenizer, cfg, rt, model_cfg=None) -> None:
    """Write the model in the Hugging Face layout in its config's ``torch_dtype`` (rank 0 writes).

    ``model_cfg``: the model's MiMoConfig (default ``cfg.model``; a stage that starts from a checkpoint passes its own)."""
    sd = full_state_dict(model)
    model_cfg = model_cfg or cfg.model
    if rt.is_main:
        dtype = getattr(torch, model_cfg.torch_dtype)
        out = build_model(model_cfg, device="cpu", dtype=dtype, init=False)
        out.load_state_dict({k: v.to(dtype) for k, v in sd.items()})
        out.save_pretrained(path, tokenizer=tokenizer, extra_files={CONFIG_FILE: config_yaml(cfg)})
    if rt.distributed:
        torch.distributed.barrier()
