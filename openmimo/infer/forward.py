"""The engine's forward: the model's own modules and weights run through a :class:`CacheView`, with the decode
kernels of ``kernels.py`` swapped in where the forward can take them.

The model (model/mimo.py) is plain PyTorch: with a cache its attention only calls ``update`` and reads
``attn_mask``.  :class:`EngineForward` computes the same thing op for op, from the same modules, and picks per
forward from the view's flags:

- ``fast_linear`` (CUDA, bf16/fp16, at most ``kernels.MAX_M`` new tokens): q, k and v in one launch
  (``small_m_linear``), o_proj and down_proj through the same kernel, gate/up with SiLU in one launch
  (``gate_up_silu``); otherwise the model's ``nn.Linear`` modules;
- ``fast_attention`` (decode over all slots): the Triton attention that reads each row's keys only up to its own
  position; otherwise ``fold_gqa`` (a masked forward over cached keys: decode steps, prefill windows) with GQA:
  attention with the query groups folded into the query axis (``folded_gqa_attention``); otherwise the model's
  attention (``mimo.attend``).

tests/test_engine_forward.py checks it against the model's forward on the same inputs.
"""

from __future__ import annotations

import torch

from openmimo.infer import kernels
from openmimo.infer.kv_cache import CacheView, LayerCache
from openmimo.model.mimo import (MLP, Attention, DecoderLayer, ModelOutput, MTPLayer, attend, keep_positions,
                                 rope_cos_sin)


def attention(attn: Attention, x, cos, sin, view: LayerCache):
    """``attn(x, cos, sin, None, cache_view)`` with the decode kernels the view allows (``view``: that view's
    :class:`LayerCache` for ``attn``'s layer)."""
    B, T, _ = x.shape
    if view.fast_linear:
        p = (attn.q_proj, attn.k_proj, attn.v_proj)
        biases = [m.bias for m in p] if attn.q_proj.bias is not None else None
        q, k, v = kernels.small_m_linear(x, [m.weight for m in p], biases).split(
            [attn.n_heads * attn.head_dim] + [attn.n_kv * attn.head_dim] * 2, -1)
    else:
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    q, k, v = attn.split_heads(q, k, v, cos, sin)
    k, v = view.update(k, v)
    if view.fast_attention:
        y = view.attend(q)
    elif view.fold_gqa and attn.n_heads != attn.n_kv:
        y = kernels.folded_gqa_attention(q, k, v, view.attn_mask)
    else:
        y = attend(q, k, v, view.attn_mask)
    y = y.transpose(1, 2).reshape(B, T, -1)
    return kernels.small_m_linear(y, [attn.o_proj.weight]) if view.fast_linear else attn.o_proj(y)


def mlp(m: MLP, x, view: LayerCache):
    """``m(x)``, with the SwiGLU input in one launch and down_proj through the small-M kernel when allowed."""
    if view.fast_linear:
        return kernels.small_m_linear(kernels.gate_up_silu(x, m.gate_proj.weight, m.up_proj.weight),
                                      [m.down_proj.weight])
    return m(x)


def block(layer: DecoderLayer, x, cos, sin, view: LayerCache):
    """``DecoderLayer.forward`` through :func:`attention` and :func:`mlp`; it reads no layer index, so one
    ``torch.compile`` of it serves every layer whose inputs have the same shapes."""
    x = x + attention(layer.self_attn, layer.input_layernorm(x), cos, sin, view)
    return x + mlp(layer.mlp, layer.post_attention_layernorm(x), view)


def mtp_block(layer: MTPLayer, prev_hidden, next_embeds, position_ids, cos, sin, view: LayerCache):
    """``MTPLayer.forward`` through :func:`block`: the normalised output, the head's input and the next depth's
    hidden state."""
    x = layer.fuse(prev_hidden, next_embeds, position_ids)
    return layer.final_layernorm(block(layer, x, cos, sin, view))


def head(norm, lm_head, x, keep=0):
    """Logits of ``x`` at the positions ``keep`` selects (``keep_positions``), after ``norm`` when one is given."""
    return lm_head(keep_positions(x if norm is None else norm(x), keep))


def compile_region(fn):
    """``fn`` under ``torch.compile`` at static shapes as one graph: a region of a forward compiled on its own.
    The regions take their modules as arguments and read no layer index, so one compiled graph serves every layer
    (or MTP depth) whose inputs have the same shapes."""
    return torch.compile(fn, fullgraph=True, dynamic=False)


class EngineForward:
    """The model's inference forwards (main model, one MTP depth) through the engine's cache.

    With ``regions`` the forward runs as compiled regions (:func:`compile_region`): each block, each MTP depth,
    the head and the rotary tables, so a compiled engine compiles one graph per region and input shape instead of
    one whole forward per shape (``Engine(compile_scope="block")``); the glue between regions stays eager."""

    def __init__(self, model, regions: bool = False):
        self.model, self.config = model, model.config
        wrap = compile_region if regions else (lambda fn: fn)
        self.block_fn, self.mtp_fn, self.head_fn, self.rope_fn = (wrap(f) for f in (block, mtp_block, head,
                                                                                      rope_cos_sin))

    def rope(self, position_ids, dtype):
        return self.rope_fn(position_ids, self.config.head_size, self.config.rope_theta, dtype)

    def __call__(self, input_ids, position_ids, view: CacheView, logits_to_keep=0) -> ModelOutput:
        """``model(input_ids, position_ids=..., kv_cache=view, logits_to_keep=...)``: ``logits`` and
        ``hidden_states`` (the last hidden state before the final norm)."""
        body = self.model.model
        x = body.embed_tokens(input_ids)
        cos, sin = self.rope(position_ids, x.dtype)
        for layer in body.layers:
            x = self.block_fn(layer, x, cos, sin, view.layer(layer.self_attn.layer_idx))
        return ModelOutput(logits=self.head_fn(body.norm, self.model.lm_head, x, logits_to_keep), hidden_states=x)

    def mtp_layer(self, depth: int, prev_hidden, next_embeds, position_ids, cos, sin, view: CacheView):
        """``model.model.mtp_layers[depth - 1](prev_hidden, next_embeds, position_ids, cos, sin, None, view)``."""
        layer = self.model.model.mtp_layers[depth - 1]
        return self.mtp_fn(layer, prev_hidden, next_embeds, position_ids, cos, sin,
                           view.layer(layer.self_attn.layer_idx))

    def mtp_forward(self, depth: int, prev_hidden, next_ids, position_ids, view: CacheView):
        """``model.mtp_forward(depth, prev_hidden, next_ids, position_ids, kv_cache=view)``: (hidden, logits)."""
        cos, sin = self.rope(position_ids, prev_hidden.dtype)
        h = self.mtp_layer(depth, prev_hidden, self.model.model.embed_tokens(next_ids), position_ids, cos, sin, view)
        return h, self.head_fn(None, self.model.lm_head, h)
