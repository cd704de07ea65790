"""Device, dtype and distributed set-up (returned, never set at import), seeding and run folders."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openmimo.config import ConfigError


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast dtype for compute (float32 = no autocast)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)


def check_device(name: str, key: str = "train.device") -> None:
    """Raise ConfigError naming ``key`` unless ``name`` is auto, cpu, cuda or cuda:N of a GPU this machine has."""
    if name in ("auto", "cpu"):
        return
    kind, _, index = str(name).partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"key '{key}': unknown device {name!r} (expected auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ConfigError(f"key '{key}': device {name!r} requested but CUDA is not available on this machine")
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"key '{key}': device {name!r} does not exist ({torch.cuda.device_count()} GPU(s) visible)")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def init_runtime(device: str = "auto", dtype: str = "auto", key: str = "train.device") -> Runtime:
    """Start torch.distributed when launched by torchrun (WORLD_SIZE > 1), pick device and dtype.
    A device that does not exist is a ConfigError naming ``key`` (the config key it came from)."""
    check_device(device, key)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return Runtime(device=dev, dtype=resolve_dtype(dtype, dev), rank=rank, world_size=world, local_rank=local)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_folder(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def allow_recompiles(n: int) -> None:
    """Let dynamo keep at least ``n`` compiled variants per function (process-wide; never lowers it).
    The compiled decode step and the compiled blocks legitimately see more than the default 8."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # renamed in torch 2.6
    setattr(cfg, name, max(getattr(cfg, name), n))
