"""Training checkpoints: model, optimizer, data position, RNG, counters — complete or absent.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX`` written under a temporary name and renamed
into place, so a run killed at any moment leaves only complete checkpoints behind.  Model and
optimizer states are gathered as full (unsharded) state dicts through
``torch.distributed.checkpoint.state_dict``, which also serves FSDP2-sharded models; each rank
stores its own RNG state.  (Gathering full states is simple and exact; for models far beyond a
few billion parameters a sharded DCP save would be the next step.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from openmimo.runtime import rng_state, set_rng_state

_PREFIX = "step_"


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.pt").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(run_dir, step: int, model, optimizer, extra: dict, keep: int = 2) -> Path:
    """Collective in distributed runs: every rank calls it. Returns the checkpoint folder."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd = get_model_state_dict(model, options=opts)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=opts)
    root = checkpoint_dir(run_dir)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".tmp_{_PREFIX}{step:08d}"
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    _save_synced(rng_state(), tmp / f"rng_rank{rank}.pt")
    _barrier()
    if rank == 0:
        _save_synced({"model": model_sd, "optimizer": optim_sd, "step": step, **extra}, tmp / "state.pt")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def _save_synced(obj, path: Path) -> None:
    """torch.save, then fsync: the rename that publishes a checkpoint must never overtake its bytes."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_latest_checkpoint(run_dir: str | Path, model, optimizer) -> tuple[Path, dict] | None:
    """Restore the newest checkpoint that loads; an unreadable one (truncated, corrupt) is skipped with a
    warning naming it, and the previous complete one is used.  None when the folder has no checkpoint; when
    none of them loads, the newest one's error is raised (starting fresh would prune them)."""
    import warnings

    ckpts = list_checkpoints(run_dir)
    first_error = None
    for i, path in enumerate(reversed(ckpts)):
        try:
            return path, load_checkpoint(path, model, optimizer)
        except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint means: try the one before
            first_error = first_error or e
            older = ckpts[-2 - i].name if i + 1 < len(ckpts) else None
            warnings.warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                          + (f"falling back to {older}" if older else "no older checkpoint is left"),
                          RuntimeWarning, stacklevel=2)
    if first_error is not None:
        raise RuntimeError(f"no checkpoint in {checkpoint_dir(run_dir)} could be loaded") from first_error
    return None


def load_checkpoint(path: str | Path, model, optimizer) -> dict:
    """Restore model, optimizer and this rank's RNG; returns the rest of the saved state."""
    path = Path(path)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    set_model_state_dict(model, state.pop("model"), options=opts)
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state.pop("optimizer"), options=opts)
    rng_file = path / f"rng_rank{_rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state
