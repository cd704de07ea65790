"""The engine's forward: the model's own modules and weights run through a :class:`CacheView`, with the decode
kernels of ``kernels.py`` swapped in where the forward can take them.

The model (model/mimo.py) is plain PyTorch: with a cache its attention only calls ``update`` and reads
``attn_mask``.  :class:`EngineForward` computes the same thing op for op, from the same modules, and picks per
forward from the view's flags:

- ``fast_linear`` (CUDA, bf16/fp16, at most ``kernels.MAX_M`` new tokens): q, k and v in one launch
  (``small_m_linear``), o_proj and down_proj through the same kernel, gate/up with SiLU in one launch
  (``gate_up_silu``); otherwise the model's ``nn.Linear`` modules;
- ``fold_gqa`` (a masked forward over cached keys: decode steps, prefill windows) with GQA: attention with the
  query groups folded into the query axis (``folded_gqa_attention``), or, with ``fast_attention`` (decode over
  all slots), the Triton attention that reads each row's keys only up to its own position; otherwise the
  model's attention (``mimo.attend``).

tests/test_engine_forward.py checks it against the model's forward on the same inputs.
"""

from __future__ import annotations

from openmimo.infer import kernels
from openmimo.infer.kv_cache import CacheView
from openmimo.model.mimo import MLP, Attention, DecoderLayer, ModelOutput, attend, keep_positions, rope_cos_sin


def attention(attn: Attention, x, cos, sin, view: CacheView):
    """``attn(x, cos, sin, None, view)`` with the decode kernels the view allows."""
    B, T, _ = x.shape
    if view.fast_linear:
        p = (attn.q_proj, attn.k_proj, attn.v_proj)
        biases = [m.bias for m in p] if attn.q_proj.bias is not None else None
        q, k, v = kernels.small_m_linear(x, [m.weight for m in p], biases).split(
            [attn.n_heads * attn.head_dim] + [attn.n_kv * attn.head_dim] * 2, -1)
    else:
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    q, k, v = attn.split_heads(q, k, v, cos, sin)
    k, v = view.update(attn.layer_idx, k, v)
    if view.fold_gqa and attn.n_heads != attn.n_kv:
        y = view.attend(attn.layer_idx, q) if view.fast_attention else kernels.folded_gqa_attention(
            q, k, v, view.attn_mask)
    else:
        y = attend(q, k, v, view.attn_mask)
    y = y.transpose(1, 2).reshape(B, T, -1)
    return kernels.small_m_linear(y, [attn.o_proj.weight]) if view.fast_linear else attn.o_proj(y)


def mlp(m: MLP, x, view: CacheView):
    """``m(x)``, with the SwiGLU input in one launch and down_proj through the small-M kernel when allowed."""
    if view.fast_linear:
        return kernels.small_m_linear(kernels.gate_up_silu(x, m.gate_proj.weight, m.up_proj.weight),
                                      [m.down_proj.weight])
    return m(x)


def block(layer: DecoderLayer, x, cos, sin, view: CacheView):
    """``DecoderLayer.forward`` through :func:`attention` and :func:`mlp`."""
    x = x + attention(layer.self_attn, layer.input_layernorm(x), cos, sin, view)
    return x + mlp(layer.mlp, layer.post_attention_layernorm(x), view)


class EngineForward:
    """The model's inference forwards (main model, one MTP depth) through the engine's cache."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def rope(self, position_ids, dtype):
        return rope_cos_sin(position_ids, self.config.head_size, self.config.rope_theta, dtype)

    def __call__(self, input_ids, position_ids, view: CacheView, logits_to_keep=0) -> ModelOutput:
        """``model(input_ids, position_ids=..., kv_cache=view, logits_to_keep=...)``: ``logits`` and
        ``hidden_states`` (the last hidden state before the final norm)."""
        body = self.model.model
        x = body.embed_tokens(input_ids)
        cos, sin = self.rope(position_ids, x.dtype)
        for layer in body.layers:
            x = block(layer, x, cos, sin, view)
        logits = self.model.lm_head(keep_positions(body.norm(x), logits_to_keep))
        return ModelOutput(logits=logits, hidden_states=x)

    def mtp_layer(self, depth: int, prev_hidden, next_embeds, position_ids, cos, sin, view: CacheView):
        """``model.model.mtp_layers[depth - 1](prev_hidden, next_embeds, position_ids, cos, sin, None, view)``."""
        layer = self.model.model.mtp_layers[depth - 1]
        x = layer.fuse(prev_hidden, next_embeds, position_ids)
        return layer.final_layernorm(block(layer, x, cos, sin, view))

    def mtp_forward(self, depth: int, prev_hidden, next_ids, position_ids, view: CacheView):
        """``model.mtp_forward(depth, prev_hidden, next_ids, position_ids, kv_cache=view)``: (hidden, logits)."""
        cos, sin = self.rope(position_ids, prev_hidden.dtype)
        h = self.mtp_layer(depth, prev_hidden, self.model.model.embed_tokens(next_ids), position_ids, cos, sin, view)
        return h, self.model.lm_head(h)
