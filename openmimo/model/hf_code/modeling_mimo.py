"""MiMo for transformers (``trust_remote_code``): Qwen2's causal LM plus MiMo's MTP layers.

openmimo writes this file next to a checkpoint's config.json; it imports only torch and transformers.  The
tensor names are MiMo's: ``model.mtp_layers.N.{token_layernorm, hidden_layernorm, input_proj, input_layernorm,
self_attn, post_attention_layernorm, mlp, final_layernorm}``.  Plain ``forward`` and ``generate`` are Qwen2's.
``forward(input_ids, ..., output_mtp_logits=True)`` also returns ``mtp_logits``: one (B, T, V) tensor per MTP
depth, depth k at position t predicting token t+1+k, computed as vLLM runs MiMo's MTP layer:

- depth 1 reads the main model's last hidden state before the final norm; depth k > 1 reads depth k-1's
  output (after its ``final_layernorm``);
- its token input at t is the embedding of token t+k, zeroed where the position id is 0;
- ``input_proj(cat([hidden_layernorm(hidden), token_layernorm(embedding)]))`` goes through one Qwen2 block
  (causal attention at the same positions) and ``final_layernorm``, then the shared ``lm_head``.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2.modeling_qwen2 import (Qwen2Attention, Qwen2DecoderLayer, Qwen2ForCausalLM,
                                                      Qwen2Model, Qwen2PreTrainedModel, Qwen2RMSNorm)

from .configuration_mimo import MiMoConfig


@dataclass
class MiMoCausalLMOutput(CausalLMOutputWithPast):
    mtp_logits: tuple | None = None  # one (B, T, V) tensor per MTP depth (with output_mtp_logits=True)


class MiMoMTPLayer(Qwen2DecoderLayer):
    def __init__(self, config: MiMoConfig):
        super().__init__(config, 0)  # its attention never touches the main model's cache
        d = config.hidden_size
        self.token_layernorm = Qwen2RMSNorm(d, eps=config.rms_norm_eps)
        self.hidden_layernorm = Qwen2RMSNorm(d, eps=config.rms_norm_eps)
        self.input_proj = nn.Linear(2 * d, d, bias=False)
        self.final_layernorm = Qwen2RMSNorm(d, eps=config.rms_norm_eps)

    def forward(self, hidden_states, input_embeds, position_ids, attention_mask, position_embeddings):
        input_embeds = input_embeds.masked_fill((position_ids == 0)[..., None], 0.0)
        x = self.input_proj(torch.cat([self.hidden_layernorm(hidden_states), self.token_layernorm(input_embeds)],
                                      dim=-1))
        out = super().forward(x, attention_mask=attention_mask, position_ids=position_ids,
                              position_embeddings=position_embeddings)
        return self.final_layernorm(out[0] if isinstance(out, tuple) else out)


class MiMoModel(Qwen2Model):
    config_class = MiMoConfig

    def __init__(self, config: MiMoConfig):
        super().__init__(config)
        self.mtp_layers = nn.ModuleList(MiMoMTPLayer(config) for _ in range(config.num_nextn_predict_layers))


def _additive_causal_mask(attention_mask, T: int, dtype, device):
    """(B or 1, 1, T, T) float mask: 0 where a query may attend (causal, non-padding keys), a large negative
    number elsewhere; every query keeps itself, so padded rows stay finite."""
    keep = torch.ones(T, T, dtype=torch.bool, device=device).tril()[None]
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, :] | torch.eye(T, dtype=torch.bool, device=device)[None]
    mask = torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
    return mask[:, None]


class MiMoForCausalLM(Qwen2ForCausalLM):
    config_class = MiMoConfig

    def __init__(self, config: MiMoConfig):
        Qwen2PreTrainedModel.__init__(self, config)
        self.model = MiMoModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if not getattr(config, "attention_bias", True):  # Qwen2's q/k/v always have a bias; MiMo may not
            for m in self.modules():
                if isinstance(m, Qwen2Attention):
                    for proj in (m.q_proj, m.k_proj, m.v_proj):
                        proj.register_parameter("bias", None)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, labels=None,
                use_cache=None, logits_to_keep=0, output_mtp_logits: bool = False, **kwargs):
        if not output_mtp_logits:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
                                   logits_to_keep=logits_to_keep, **kwargs)
        if input_ids is None:
            raise ValueError("output_mtp_logits needs input_ids (the MTP layers read the tokens ahead)")
        captured = []
        hook = self.model.norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  labels=labels, use_cache=False, **kwargs)
        finally:
            hook.remove()
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None].expand(B, T)
        hidden = captured[-1]
        mask = _additive_causal_mask(attention_mask, T, hidden.dtype, hidden.device)
        rope = self.model.rotary_emb(hidden, position_ids)
        mtp_logits = []
        for k, layer in enumerate(self.model.mtp_layers, start=1):
            ahead = nn.functional.pad(input_ids[:, k:], (0, k), value=0)
            hidden = layer(hidden, self.model.embed_tokens(ahead), position_ids, mask, rope)
            mtp_logits.append(self.lm_head(hidden))
        return MiMoCausalLMOutput(loss=out.loss, logits=out.logits, mtp_logits=tuple(mtp_logits))


__all__ = ["MiMoForCausalLM", "MiMoModel", "MiMoConfig"]
