"""MiMoConfig: the model's shape, with the Hugging Face field names of MiMo's ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

# config.json fields of the HF MiMo/Qwen2 layout that openmimo reads but does not use.  They are
# kept (in ``extra``) so a loaded-then-saved config round-trips.
_PASSTHROUGH = {
    "auto_map", "tokenizer_class", "attention_dropout", "max_window_layers", "sliding_window",
    "use_cache", "use_mrope", "use_sliding_window", "transformers_version", "rope_scaling",
    "pad_token_id", "layer_types", "dtype",
}
MODEL_TYPES = ("mimo", "qwen2")
# Upper bounds of the shape fields: larger values are refused instead of attempting an impossible allocation.
MAX_VALUES = {"vocab_size": 2**24, "hidden_size": 2**17, "intermediate_size": 2**19, "num_hidden_layers": 2**12,
              "num_attention_heads": 2**12, "num_key_value_heads": 2**12, "max_position_embeddings": 2**24,
              "num_nextn_predict_layers": 64}


def _typed(value, tp, key: str, src: str):
    """``value`` checked against the field annotation ``tp`` (int, float, bool, str or ``X | None``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:  # X | None
        return None if value is None else _typed(value, args[0], key, src)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{src}: key '{key}' must be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{src}: key '{key}' must be a finite number, got {value!r}")
        value = float(value)
    elif tp is bool and not isinstance(value, bool):
        raise ValueError(f"{src}: key '{key}' must be true or false, got {value!r}")
    elif tp is str and not isinstance(value, str):
        raise ValueError(f"{src}: key '{key}' must be a string, got {value!r}")
    return value


@dataclass
class MiMoConfig:
    vocab_size: int = 2048  # number of token embeddings (rows of embed_tokens / lm_head)
    hidden_size: int = 128  # model width d
    intermediate_size: int = 384  # SwiGLU inner width
    num_hidden_layers: int = 4  # decoder blocks of the main model
    num_attention_heads: int = 4  # query heads
    num_key_value_heads: int = 2  # KV groups (GQA); must divide num_attention_heads
    head_dim: int | None = None  # per-head width; None -> hidden_size / num_attention_heads
    max_position_embeddings: int = 1024  # longest context the model is trained/served for
    rope_theta: float = 10000.0  # RoPE base (MiMo: 10k in stages 1-2, 640k in stage 3)
    rms_norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_word_embeddings: bool = True  # share embed_tokens and lm_head
    attention_bias: bool = True  # bias on q/k/v projections (MiMo and Qwen2 have it)
    num_nextn_predict_layers: int = 1  # MTP layers; depth k predicts token t+1+k
    hidden_act: str = "silu"  # SwiGLU activation (only silu is supported)
    initializer_range: float = 0.02  # std of the normal init of linear/embedding weights
    bos_token_id: int | None = None  # begin-of-sequence id (informational)
    eos_token_id: int | None = None  # end-of-sequence id used by generation
    torch_dtype: str = "float32"  # dtype the weights are stored in
    extra: dict = field(default_factory=dict)  # unused HF fields, kept for round-trips

    @property
    def head_size(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    def check(self) -> None:
        """Raise ValueError naming the key of the first impossible value."""
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings"):
            if getattr(self, k) <= 0:
                raise ValueError(f"key '{k}' must be positive, got {getattr(self, k)}")
        for k, hi in MAX_VALUES.items():
            if getattr(self, k) > hi:
                raise ValueError(f"key '{k}' = {getattr(self, k)} exceeds the supported maximum {hi}")
        if self.head_dim is not None and not 0 < self.head_dim <= 2**14:
            raise ValueError(f"key 'head_dim' must be in [1, {2**14}], got {self.head_dim}")
        for k in ("rope_theta", "rms_norm_eps", "initializer_range"):
            if not math.isfinite(getattr(self, k)):
                raise ValueError(f"key '{k}' must be a finite number, got {getattr(self, k)}")
        if self.rms_norm_eps <= 0 or self.initializer_range < 0:
            raise ValueError("key 'rms_norm_eps' must be > 0 and key 'initializer_range' >= 0")
        if self.num_nextn_predict_layers < 0:
            raise ValueError("key 'num_nextn_predict_layers' must be >= 0")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"key 'num_attention_heads': {self.num_attention_heads} heads do not divide "
                             f"hidden_size {self.hidden_size}")
        if self.head_size % 2:
            raise ValueError(f"key 'head_dim': RoPE needs an even head size, got {self.head_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"key 'num_key_value_heads': {self.num_key_value_heads} KV groups do not divide "
                             f"{self.num_attention_heads} attention heads")
        if self.rope_theta <= 0:
            raise ValueError("key 'rope_theta' must be positive")
        if self.hidden_act != "silu":
            raise ValueError(f"key 'hidden_act': only 'silu' is supported, got {self.hidden_act!r}")
        if self.torch_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"key 'torch_dtype': expected float32, bfloat16 or float16, got {self.torch_dtype!r}")

    # ---- Hugging Face config.json -------------------------------------------------------------
    def to_hf_dict(self) -> dict:
        d = {"architectures": ["MiMoForCausalLM"], "model_type": "mimo"}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name == "head_dim" and v is None:
                v = self.head_size
            d[f.name] = v
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_hf_dict(cls, d: dict, src: str = "config.json") -> "MiMoConfig":
        """Read a HF ``config.json`` dict; unknown model types and missing fields name the file."""
        mt = d.get("model_type")
        if mt not in MODEL_TYPES:
            raise ValueError(f"{src}: unsupported model_type {mt!r} (expected one of {MODEL_TYPES})")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        for k in required:
            if k not in d:
                raise ValueError(f"{src}: missing field '{k}'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in names}
        if isinstance(kwargs.get("eos_token_id"), list) and kwargs["eos_token_id"]:
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        hints = typing.get_type_hints(cls)
        for k, v in kwargs.items():
            kwargs[k] = _typed(v, hints[k], k, src)
        kwargs.setdefault("num_key_value_heads", d["num_attention_heads"])
        if mt == "qwen2":
            kwargs.setdefault("attention_bias", True)
            kwargs.setdefault("num_nextn_predict_layers", 0)
        else:
            for k in ("attention_bias", "num_nextn_predict_layers"):
                if k not in d:
                    raise ValueError(f"{src}: missing field '{k}'")
        rope = d.get("rope_parameters")  # transformers >= 5 writes rope_theta here
        if "rope_theta" not in d and isinstance(rope, dict) and "rope_theta" in rope:
            if rope.get("rope_type", "default") != "default":
                raise ValueError(f"{src}: key 'rope_parameters': rope_type {rope.get('rope_type')!r} is not "
                                 f"supported (only 'default')")
            kwargs["rope_theta"] = _typed(rope["rope_theta"], float, "rope_parameters.rope_theta", src)
        if "torch_dtype" not in kwargs and isinstance(d.get("dtype"), str):
            kwargs["torch_dtype"] = d["dtype"]
        extra = {k: v for k, v in d.items() if k in _PASSTHROUGH}
        cfg = cls(**kwargs, extra=extra)
        try:
            cfg.check()
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from None
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "MiMoConfig":
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: config.json not found")
        try:
            d = json.loads(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}: not valid UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{p}: the top level must be a JSON object, got {type(d).__name__}")
        return cls.from_hf_dict(d, str(p))

    def num_params(self, include_mtp: bool = True) -> int:
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_size
        nq, nkv = self.num_attention_heads, self.num_key_value_heads
        attn = d * nq * hd + 2 * d * nkv * hd + nq * hd * d
        if self.attention_bias:
            attn += nq * hd + 2 * nkv * hd
        block = attn + 3 * d * f + 2 * d
        n = self.num_hidden_layers * block + self.vocab_size * d + d
        if not self.tie_word_embeddings:
            n += self.vocab_size * d
        if include_mtp:
            n += self.num_nextn_predict_layers * (block + 2 * d * d + 3 * d)
        return n
