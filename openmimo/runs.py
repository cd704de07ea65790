"""A run folder knows whose it is: ``run.json`` records the run's resolved config and its hash.

:func:`open_run_folder` is the one gate every training stage passes before it writes anything:

- a fresh start in a folder that holds complete checkpoints is refused (they belong to a run that ``--resume``
  would continue, and pruning would delete the new run's checkpoints among them) unless ``overwrite`` is set,
  which removes that run's checkpoints, metrics and exported model first;
- ``--resume`` compares the saved config with the new one on the keys that must not change (model shape, data)
  and names the first difference before anything is touched; into a folder without a checkpoint it says that it
  starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from openmimo.checkpoint import list_checkpoints
from openmimo.config import UsageError

IDENTITY = "run.json"
# what a fresh start with overwrite removes (the prepared data/ is the config's own and is kept)
RUN_OUTPUTS = ("checkpoints", "final", "metrics.jsonl", "tensorboard")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def first_difference(saved: Any, new: Any, path: str = "") -> str | None:
    """The first dotted key where ``saved`` and ``new`` differ, as ``key: saved X, now Y``; None if equal."""
    if isinstance(saved, dict) and isinstance(new, dict):
        for k in sorted(set(saved) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in saved or k not in new:
                return f"{sub}: saved {saved.get(k, '(absent)')!r}, now {new.get(k, '(absent)')!r}"
            d = first_difference(saved[k], new[k], sub)
            if d:
                return d
        return None
    if isinstance(saved, (list, tuple)) and isinstance(new, (list, tuple)) and len(saved) == len(new):
        for i, (a, b) in enumerate(zip(saved, new)):
            d = first_difference(a, b, f"{path}.{i}")
            if d:
                return d
        return None
    return None if saved == new else f"{path}: saved {saved!r}, now {new!r}"


def _select(config: dict, keys: tuple[str, ...]) -> dict:
    out = {}
    for key in keys:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def open_run_folder(path: str | os.PathLike, config: dict, *, resume: bool, overwrite: bool = False,
                    compatible_keys: tuple[str, ...] = (), stage: str = "run", write: bool = True) -> Path:
    """Check and claim ``path`` for a run of ``config`` (see the module docstring); returns the folder.

    ``write=False`` (non-main ranks) checks without writing."""
    run_dir = Path(path)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} exists and is not a folder")
    ckpts = list_checkpoints(run_dir)
    ident_file = run_dir / IDENTITY
    saved = None
    if ident_file.is_file():
        try:
            saved = json.loads(ident_file.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{ident_file}: unreadable run identity ({e}); move the folder aside or pass --overwrite")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if resume:
        if not ckpts:
            print(f"[{stage}] --resume: no complete checkpoint in {run_dir}; starting fresh", flush=True)
        elif saved is not None:
            diff = first_difference(_select(saved.get("config", {}), compatible_keys), _select(config, compatible_keys))
            if diff:
                raise UsageError(f"--resume: the run in {run_dir} is not compatible with this config ({diff}); "
                                 f"resume with its own config ({run_dir / 'config.yaml'}) or choose another "
                                 f"train.out_dir")
    elif ckpts:
        if not overwrite:
            raise UsageError(f"{run_dir} holds another run's checkpoints (latest {ckpts[-1].name}): pass --resume to "
                             f"continue it, --overwrite to replace it, or choose another train.out_dir")
        if write:
            for name in RUN_OUTPUTS:
                p = run_dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            print(f"[{stage}] --overwrite: removed the previous run's checkpoints and outputs from {run_dir}", flush=True)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / (IDENTITY + ".tmp")
        tmp.write_text(json.dumps({"stage": stage, "config_hash": config_hash(config), "config": config},
                                  indent=1, default=str) + "\n")
        os.replace(tmp, ident_file)
    return run_dir
