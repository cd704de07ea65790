"""The MiMo decoder with Multi-Token-Prediction (MTP) layers, in plain PyTorch.

Main model: a Qwen2-style decoder — token embedding, N blocks of (pre-RMSNorm, GQA self-attention
with q/k/v bias and RoPE, residual; pre-RMSNorm, SwiGLU MLP, residual), a final RMSNorm and the
output head (tied to the embedding or not).

MTP layer k (k = 1..K) follows MiMo's tensor layout and the forward that vLLM (``mimo_mtp.py``, Xiaomi's
integration) and SGLang (``mimo_mtp.py``) run: it takes the hidden state of depth k-1 and the embedding of the
token k positions ahead; the embedding is zeroed where the position id is 0 (a document's first position);
both are normalised (``hidden_layernorm``, ``token_layernorm``), concatenated ``[hidden, embedding]``,
projected 2d -> d (``input_proj``), run through one decoder block and ``final_layernorm``, and the shared
output head gives the logits.  At position t, depth k predicts token t+1+k.  Depth 0 is the main model's
last hidden state *before* the final norm (vLLM's ``MiMoModel.forward`` returns it and applies ``norm`` only
in ``compute_logits``; SGLang's Qwen2-based MiMo feeds the normed state instead: see docs/interop.md).
Depth k+1 takes depth k's ``final_layernorm`` output, which is what both engines chain when they draft
several tokens.

Packed sequences: position ids restart at 0 at each document start; attention is then masked to
stay inside a document, and every target (main and MTP) whose token lies in another document than
the predicting position is ignored.  The model knows nothing of parallelism (see ``parallel.py``) nor of
inference kernels: with a KV cache its attention only asks the cache to ``update`` and for ``attn_mask``; the
generation engine runs these same modules through its own forward (``infer/forward.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from openmimo.model.config import MiMoConfig
from openmimo.model.fused_ce import IGNORE_INDEX, linear_cross_entropy



class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables of shape (B, T, head_dim) for the given positions, computed in float32."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    freqs = position_ids[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (B, T, D)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """A new document starts wherever the position id is 0."""
    return torch.cumsum((position_ids == 0).to(torch.int32), dim=1)


def keep_positions(x: torch.Tensor, keep) -> torch.Tensor:
    """x (B, T, ...) restricted to the last ``keep`` positions (0: all), or to position ``keep[b]`` of each
    row b when ``keep`` is a (B,) tensor (the result keeps a length-1 time axis)."""
    if torch.is_tensor(keep):
        return x[torch.arange(x.shape[0], device=x.device), keep][:, None]
    return x[:, -keep:] if keep else x


_FLEX = {}
_SDPA = {"backend": "auto"}
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient")


def set_attention_backend(name: str) -> None:
    """Pin the SDPA kernel of unmasked causal attention (training rows without padding or packing) on
    CUDA: ``auto`` leaves the choice to PyTorch; ``flash``, ``cudnn`` or ``efficient`` force that kernel
    (cuDNN and memory-efficient attention get K/V repeated to every head).  Process-wide; CPU ignores it."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {name!r}: expected one of {', '.join(ATTENTION_BACKENDS)}")
    _SDPA["backend"] = name


def sdpa_backend(name: str):
    """The ``torch.nn.attention.SDPBackend`` of a pinned backend name (flash | cudnn | efficient)."""
    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]


def _pinned_sdpa(q, k, v, causal: bool, gqa: bool, backend: str):
    kernel = sdpa_backend(backend)
    if gqa and backend != "flash":
        r = q.shape[1] // k.shape[1]
        k, v, gqa = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1), False
    with sdpa_kernel([kernel]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)


def _flex_attention():
    """FlexAttention compiled once, on first use (never at import)."""
    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX["fn"]


def document_block_mask(position_ids: torch.Tensor):
    """FlexAttention BlockMask for causal attention inside packed documents (CUDA fast path)."""
    doc = document_ids(position_ids)
    B, T = doc.shape

    def mask_mod(b, h, q, kv):
        return (q >= kv) & (doc[b, q] == doc[b, kv])

    return create_block_mask(mask_mod, B, None, T, T, device=doc.device)


def build_attention_mask(attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                         seq_len: int):
    """Boolean (B, 1, T, T) mask: causal, inside one document, on non-padding keys.

    Returns None when plain causal attention is exact (no padding, no position ids), so SDPA can
    use its ``is_causal`` fast path.  Every query may attend to itself, so padded rows never see
    an empty key set (which would give NaN).  On CUDA, packed documents without padding get a
    FlexAttention block mask instead (block-sparse: no work on masked blocks); the boolean mask
    is its oracle.
    """
    if attention_mask is None and position_ids is None:
        return None
    if attention_mask is None and position_ids.is_cuda and seq_len >= 128:
        return document_block_mask(position_ids)
    device = (attention_mask if attention_mask is not None else position_ids).device
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    mask = causal[None]
    if position_ids is not None:
        doc = document_ids(position_ids)
        mask = mask & (doc[:, :, None] == doc[:, None, :])
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]
        mask = mask | torch.eye(seq_len, dtype=torch.bool, device=device)[None]
    return mask[:, None]


def target_mask(labels: torch.Tensor, attention_mask: torch.Tensor | None, doc: torch.Tensor | None,
                shift: int) -> torch.Tensor:
    """(B, T - shift) bool: is labels[:, t + shift] a valid target for position t?

    Invalid: IGNORE_INDEX, padding at either end, or a target in another document.
    """
    valid = labels[:, shift:] != IGNORE_INDEX
    if attention_mask is not None:
        am = attention_mask.bool()
        valid = valid & am[:, shift:] & am[:, :-shift]
    if doc is not None:
        valid = valid & (doc[:, shift:] == doc[:, :-shift])
    return valid


def _ce_sum_correct(logits: torch.Tensor, targets: torch.Tensor):
    """Summed cross-entropy (float32) over non-ignored targets, and the arg-max hit count."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    t = targets.reshape(-1)
    s = F.cross_entropy(flat, t, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        correct = ((flat.argmax(-1) == t) & (t != IGNORE_INDEX)).sum()
    return s, correct


def _ce_compiled():
    """The loss above, compiled on first use (fuses the float32 upcast into the reduction)."""
    if "ce" not in _FLEX:
        _FLEX["ce"] = torch.compile(_ce_sum_correct, dynamic=True)
    return _FLEX["ce"]


def attend(q, k, v, mask):
    """Attention of q (B, H, T, D) over k, v (B, n_kv, S, D) (GQA when n_kv < H).  ``mask``: a boolean mask
    broadcastable to (B, 1, T, S), a FlexAttention BlockMask, or None for causal attention over the same
    positions (training without padding, or a prefill into an empty cache)."""
    gqa = q.shape[1] != k.shape[1]
    if mask is not None and not torch.is_tensor(mask):  # a FlexAttention BlockMask
        return _flex_attention()(q, k, v, block_mask=mask, enable_gqa=gqa)
    if mask is None and q.is_cuda and _SDPA["backend"] != "auto":
        return _pinned_sdpa(q, k, v, True, gqa, _SDPA["backend"])
    # Without a mask, q and k cover the same positions, so causal is right for any T (T = 1 included); a python
    # bool keeps T symbolic.
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)


class Attention(nn.Module):
    def __init__(self, cfg: MiMoConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx  # index into a KV cache (main layers first, then MTP layers)
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_size
        d, b = cfg.hidden_size, cfg.attention_bias
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=b)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=b)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def split_heads(self, q, k, v, cos, sin):
        """Projections (B, T, heads x head_dim) as (B, heads, T, head_dim), RoPE applied to q and k."""
        B, T, _ = q.shape
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, mask, kv_cache=None):
        """``kv_cache`` (optional), a cache in the manner of Hugging Face's: ``update(layer_idx, k, v)`` stores this
        step's keys/values and returns every visible one; its ``attn_mask`` replaces ``mask``."""
        B, T, _ = x.shape
        q, k, v = self.split_heads(self.q_proj(x), self.k_proj(x), self.v_proj(x), cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
            mask = kv_cache.attn_mask
        y = attend(q, k, v, mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: MiMoConfig):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: MiMoConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, kv_cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class MTPLayer(DecoderLayer):
    """One MTP depth: normalise and fuse [hidden, next-token embedding], one block, a final norm."""

    def __init__(self, cfg: MiMoConfig, layer_idx: int):
        super().__init__(cfg, layer_idx)
        d = cfg.hidden_size
        self.token_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.hidden_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.input_proj = nn.Linear(2 * d, d, bias=False)
        self.final_layernorm = RMSNorm(d, cfg.rms_norm_eps)

    def fuse(self, prev_hidden, next_embeds, position_ids):
        """The block's input (B, T, d): [normed hidden, normed next-token embedding] projected to d; the
        embedding is zeroed where ``position_ids`` (B, T) are 0."""
        next_embeds = next_embeds.masked_fill((position_ids == 0)[..., None], 0.0)
        return self.input_proj(torch.cat([self.hidden_layernorm(prev_hidden), self.token_layernorm(next_embeds)], -1))

    def forward(self, prev_hidden, next_embeds, position_ids, cos, sin, mask, kv_cache=None):
        """The normalised output (B, T, d): the head's input and the next depth's hidden state."""
        x = self.fuse(prev_hidden, next_embeds, position_ids)
        return self.final_layernorm(super().forward(x, cos, sin, mask, kv_cache))


class MiMoModel(nn.Module):
    """The body (``model.*`` in the checkpoint): embedding, blocks, final norm and MTP layers."""

    def __init__(self, cfg: MiMoConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        n = cfg.num_hidden_layers
        self.mtp_layers = nn.ModuleList(MTPLayer(cfg, n + i) for i in range(cfg.num_nextn_predict_layers))


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None  # (B, T or logits_to_keep, V) main-head logits
    loss: torch.Tensor | None = None  # mean main next-token loss over valid targets
    mtp_losses: list = field(default_factory=list)  # mean loss per MTP depth (depth 1 first)
    hidden_states: torch.Tensor | None = None  # last hidden state before the final norm (B, T, d)
    loss_sums: list = field(default_factory=list)  # summed losses: [main, depth1, ...] (for global normalisation)
    num_targets: list = field(default_factory=list)  # valid targets: [main, depth1, ...] (0-dim tensors)
    num_correct: list = field(default_factory=list)  # argmax hits: [main, depth1, ...] (0-dim tensors, no grad)


class MiMoForCausalLM(nn.Module):
    def __init__(self, config: MiMoConfig):
        super().__init__()
        self.config = config
        self.model = MiMoModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        # Training with labels: True computes each head's loss in row chunks (model/fused_ce.py) and returns no
        # logits; fused_loss_chunk_rows 0 picks the chunk size from the vocabulary.
        self.fused_loss = False
        self.fused_loss_chunk_rows = 0

    # -- construction ------------------------------------------------------------------------
    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """The one initialisation: normal(0, initializer_range) weights, zero biases, unit norms."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.lm_head.weight.device).manual_seed(seed)
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                if m is self.lm_head and self.config.tie_word_embeddings:
                    continue
                m.weight.normal_(0.0, std, generator=gen)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)

    def save_pretrained(self, path, tokenizer=None, max_shard_size: int = 2 * 1024**3, extra_files=None) -> None:
        from openmimo.model.hf import save_pretrained  # model/hf.py imports this module: at the top, a cycle

        save_pretrained(self, path, tokenizer=tokenizer, max_shard_size=max_shard_size, extra_files=extra_files)

    # -- forward -----------------------------------------------------------------------------
    def _rope(self, position_ids, dtype):
        return rope_cos_sin(position_ids, self.config.head_size, self.config.rope_theta, dtype)

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, *,
                logits_to_keep: int | torch.Tensor = 0, kv_cache=None, compute_mtp: bool | None = None) -> ModelOutput:
        """Main logits (all positions, or the last ``logits_to_keep``; a (B,) tensor instead keeps one
        position per row, e.g. each right-padded prompt's last token) and, with ``labels``, the losses.

        ``labels`` are aligned with ``input_ids`` (the shift happens here); IGNORE_INDEX entries,
        padded positions and targets in another document are not counted.  MTP losses are
        computed when labels are given (``compute_mtp`` overrides).  ``kv_cache``: see :meth:`Attention.forward`
        (its mask then replaces the one built from ``attention_mask`` and ``position_ids``).
        """
        B, T = input_ids.shape
        packed_positions = position_ids
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        mask = None if kv_cache is not None else build_attention_mask(attention_mask, packed_positions, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self._rope(position_ids, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, kv_cache)
        out = ModelOutput(hidden_states=x)
        h = self.model.norm(x)
        if labels is None:
            out.logits = self.lm_head(keep_positions(h, logits_to_keep))
            if compute_mtp:
                raise ValueError("compute_mtp needs labels; use mtp_forward for drafting")
            return out
        # fused_loss: each head's loss in row chunks, no logits returned (the training objectives read the losses).
        head = (lambda states: states) if self.fused_loss else self.lm_head
        out.logits = head(h)
        doc = document_ids(packed_positions) if packed_positions is not None else None
        out.loss = self._shifted_loss(out, out.logits, labels, attention_mask, doc, 1)
        if compute_mtp is None or compute_mtp:
            prev = x
            for k, layer in enumerate(self.model.mtp_layers, start=1):
                next_ids = F.pad(input_ids[:, k:], (0, k), value=0)
                prev = layer(prev, self.model.embed_tokens(next_ids), position_ids, cos, sin, mask)
                out.mtp_losses.append(self._shifted_loss(out, head(prev), labels, attention_mask, doc, 1 + k))
        out.logits = None if self.fused_loss else keep_positions(out.logits, logits_to_keep)
        return out

    def _shifted_loss(self, out: ModelOutput, logits, labels, attention_mask, doc, shift: int):
        """Cross-entropy of logits[:, t] against labels[:, t + shift], valid targets only (with ``fused_loss``,
        ``logits`` are the normed hidden states the head would take)."""
        T = labels.shape[1]
        if shift >= T:
            zero = logits.sum() * 0.0
            out.loss_sums.append(zero)
            out.num_targets.append(0)
            out.num_correct.append(0)
            return zero
        valid = target_mask(labels, attention_mask, doc, shift)
        # Targets aligned with every position (the last `shift` have none), invalid ones ignored:
        # no copy of the (B, T, V) logits is made to select rows.
        tgt = F.pad(labels[:, shift:].masked_fill(~valid, IGNORE_INDEX), (0, shift), value=IGNORE_INDEX)
        if self.fused_loss:
            s, correct = linear_cross_entropy(logits, self.lm_head.weight, tgt, self.fused_loss_chunk_rows or None)
        else:
            ce = _ce_compiled() if logits.is_cuda else _ce_sum_correct
            s, correct = ce(logits, tgt)
        n = valid.sum()  # kept on the device: no host sync (and no graph break) inside forward
        out.loss_sums.append(s)
        out.num_targets.append(n)
        out.num_correct.append(correct)
        return s / n.clamp(min=1)

    def mtp_forward(self, depth: int, prev_hidden, next_ids, position_ids, kv_cache=None, mask=None):
        """One MTP depth (1-based) for drafting: returns (hidden for depth+1, logits).  ``prev_hidden`` is
        ``hidden_states`` of the main forward for depth 1, the previous call's hidden for deeper ones."""
        layer = self.model.mtp_layers[depth - 1]
        cos, sin = self._rope(position_ids, prev_hidden.dtype)
        h = layer(prev_hidden, self.model.embed_tokens(next_ids), position_ids, cos, sin, mask, kv_cache)
        return h, self.lm_head(h)


def build_model(cfg: MiMoConfig, device="cpu", dtype: torch.dtype | None = None, seed: int | None = 0,
                init: bool = True) -> MiMoForCausalLM:
    """Build on the meta device, materialise on ``device`` in ``dtype``, then initialise once."""
    dtype = dtype or getattr(torch, cfg.torch_dtype)
    with torch.device("meta"):
        model = MiMoForCausalLM(cfg)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.tie_weights()
    if init:
        model.init_weights(seed)
    return model
