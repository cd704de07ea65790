"""Read and write the Hugging Face checkpoint layout of MiMo.

A checkpoint folder holds ``config.json`` (MiMo field names, with the ``auto_map`` that points transformers at
``configuration_mimo.py`` / ``modeling_mimo.py``, written alongside), ``generation_config.json``, one
``model.safetensors`` or several ``model-0000i-of-0000N.safetensors`` shards with
``model.safetensors.index.json``, and optionally ``tokenizer.json`` / ``tokenizer_config.json``.
Tensor names are the module paths of :class:`MiMoForCausalLM`, which mirror MiMo's own.

Loading checks every shard's header (names, shapes, dtypes) before it reads any weight, so a bad
folder fails with one error naming the file and tensor and nothing is half-loaded; then it
streams one shard at a time into a model materialised on the target device (peak memory: the
model plus one tensor).  Saving writes into a temporary folder and renames it into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import MiMoForCausalLM, build_model

INDEX_NAME = "model.safetensors.index.json"
# The model code written next to config.json, for transformers' trust_remote_code (see hf_code/).
HF_CODE_DIR = Path(__file__).parent / "hf_code"
HF_CODE_FILES = ("configuration_mimo.py", "modeling_mimo.py")
AUTO_MAP = {"AutoConfig": "configuration_mimo.MiMoConfig", "AutoModel": "modeling_mimo.MiMoModel",
            "AutoModelForCausalLM": "modeling_mimo.MiMoForCausalLM"}
SINGLE_NAME = "model.safetensors"
# Buffers some exporters write that carry no information for us.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and tensor/field."""


def expected_tensors(model: MiMoForCausalLM) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor name -> shape (the tied lm_head is not stored, as in transformers)."""
    out = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def state_for_saving(model: MiMoForCausalLM) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().contiguous() for k, v in sd.items()}


def _plan_shards(tensors: dict[str, torch.Tensor], max_shard_size: int) -> list[list[str]]:
    shards, cur, size = [], [], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > max_shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += nbytes
    if cur:
        shards.append(cur)
    return shards


def write_folder_atomically(path: str | Path, write) -> Path:
    """Call ``write(tmp_dir)`` then rename the temporary folder to ``path`` (replacing it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write(tmp)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old)
    return path


def save_pretrained(model: MiMoForCausalLM, path, tokenizer=None, max_shard_size: int = 2 * 1024**3,
                    extra_files: dict | None = None) -> Path:
    """Write ``model`` (and the tokenizer, if given) as a HF-layout folder, atomically."""
    tensors = state_for_saving(model)
    tensors = {k: v.cpu() for k, v in tensors.items()}
    dtype_name = str(next(iter(tensors.values())).dtype).removeprefix("torch.")

    def write(tmp: Path) -> None:
        cfg = model.config.to_hf_dict()
        cfg["torch_dtype"] = dtype_name
        cfg["auto_map"] = dict(AUTO_MAP)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for name in HF_CODE_FILES:
            shutil.copyfile(HF_CODE_DIR / name, tmp / name)
        gen = {"bos_token_id": model.config.bos_token_id, "eos_token_id": model.config.eos_token_id,
               "do_sample": True, "temperature": 0.6, "top_p": 0.95}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        shards = _plan_shards(tensors, max_shard_size)
        meta = {"format": "pt"}
        if len(shards) == 1:
            save_file(tensors, str(tmp / SINGLE_NAME), metadata=meta)
        else:
            weight_map, total = {}, 0
            for i, names in enumerate(shards, start=1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file({n: tensors[n] for n in names}, str(tmp / fname), metadata=meta)
                for n in names:
                    weight_map[n] = fname
                    total += tensors[n].numel() * tensors[n].element_size()
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    return write_folder_atomically(path, write)


def _weight_files(folder: Path) -> dict[str, list[str]]:
    """Shard file -> tensor names it should hold, from the index (or the single file)."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index ({e})") from None
        files: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            files.setdefault(fname, []).append(name)
        return files
    single = folder / SINGLE_NAME
    if single.is_file():
        return {SINGLE_NAME: None}
    raise CheckpointError(f"{folder}: no {SINGLE_NAME} or {INDEX_NAME}")


def check_checkpoint(folder: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Validate every shard header against ``expected``; returns tensor name -> shard file."""
    files = _weight_files(folder)
    located: dict[str, str] = {}
    for fname, names in files.items():
        fpath = folder / fname
        if not fpath.is_file():
            missing = names[0] if names else "?"
            raise CheckpointError(f"{fpath}: shard missing (it should hold e.g. '{missing}')")
        try:
            with safe_open(str(fpath), framework="pt") as f:
                keys = set(f.keys())
                for key in keys:
                    if key.endswith(_IGNORED_SUFFIXES) or (key == "lm_head.weight" and "lm_head.weight" not in expected):
                        continue  # tied head stored anyway by some exporters: the embedding wins
                    if key not in expected:
                        raise CheckpointError(f"{fpath}: unexpected tensor '{key}' for this config")
                    sl = f.get_slice(key)
                    shape, dt = tuple(sl.get_shape()), sl.get_dtype()
                    if shape != expected[key]:
                        raise CheckpointError(f"{fpath}: tensor '{key}' has shape {list(shape)}, "
                                              f"expected {list(expected[key])}")
                    if dt not in _ST_DTYPES:
                        raise CheckpointError(f"{fpath}: tensor '{key}' has dtype {dt}, expected a float type")
                    located[key] = fname
        except CheckpointError:
            raise
        except Exception as e:  # safetensors' own header errors
            raise CheckpointError(f"{fpath}: unreadable safetensors file ({e})") from None
        for n in names or ():
            if n not in keys:
                raise CheckpointError(f"{fpath}: tensor '{n}' listed in the index is not in the file")
    for name in expected:
        if name not in located:
            raise CheckpointError(f"{folder}: tensor '{name}' is missing from the checkpoint")
    return located


def load_model(path, dtype: torch.dtype | str | None = None, device=None,
               config_overrides: dict | None = None) -> MiMoForCausalLM:
    """Load a HF-layout MiMo (or Qwen2) folder.  ``dtype`` defaults to the checkpoint's dtype."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    try:
        cfg = MiMoConfig.from_file(folder / "config.json")
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(str(e)) from None
    for k, v in (config_overrides or {}).items():
        setattr(cfg, k, v)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or getattr(torch, cfg.torch_dtype, torch.float32)
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        skeleton = MiMoForCausalLM(cfg)
    located = check_checkpoint(folder, expected_tensors(skeleton))
    del skeleton
    model = build_model(cfg, device=device, dtype=dtype, init=False)
    params = model.state_dict()
    by_file: dict[str, list[str]] = {}
    for name, fname in located.items():
        by_file.setdefault(fname, []).append(name)
    with torch.no_grad():
        for fname, names in by_file.items():  # one shard at a time
            with safe_open(str(folder / fname), framework="pt", device="cpu") as f:
                for n in names:
                    params[n].copy_(f.get_tensor(n))
    model.tie_weights()
    return model
