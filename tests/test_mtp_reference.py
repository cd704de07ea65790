"""openmimo's MTP layers against a re-implementation of the forward vLLM runs for MiMo, written here from
vLLM's ``mimo.py`` / ``mimo_mtp.py`` and its EAGLE-style proposer, reading only the weights:

- the main model is a Qwen2 decoder whose forward returns the last hidden state *without* the final norm;
  ``compute_logits`` applies ``model.norm`` and the head;
- the MTP layer takes ``inputs_embeds`` of the input ids shifted left by one (the proposer's input), zeroes
  the rows at position 0, normalises both inputs, projects ``cat([hidden, embeds])``, runs one Qwen2 block
  (its residual added back) and ``final_layernorm``; positions are the target model's;
- the next draft step feeds that normalised output back as the previous hidden state, with the ids shifted
  once more.

The tests compare logits, the MTP losses (packed documents included) and the engine's drafts."""

import math

import torch
import torch.nn.functional as F

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model


def cfg(**kw):
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, num_nextn_predict_layers=2,
                tie_word_embeddings=False, initializer_range=0.2)
    base.update(kw)
    return MiMoConfig(**base)


def randomise_norms(model, seed=0):
    """Non-unit norm weights, so that skipping or adding a norm changes the result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


# ---- the reference, from the weights only --------------------------------------------------------------
def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):
    """x: (T, H, D); neox-style rotation of the two halves."""
    D = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)
    f = pos[:, None].float() * inv
    cos, sin = torch.cat([f, f], -1).cos()[:, None], torch.cat([f, f], -1).sin()[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def qwen2_block(sd, pre, x, pos, c):
    """One Qwen2DecoderLayer on one sequence x (T, d), causal attention; returns residual + output."""
    H, KV, D = c.num_attention_heads, c.num_key_value_heads, c.head_size
    T = x.shape[0]
    h = rms(x, sd[pre + "input_layernorm.weight"], c.rms_norm_eps)
    q = (h @ sd[pre + "self_attn.q_proj.weight"].T + sd[pre + "self_attn.q_proj.bias"]).view(T, H, D)
    k = (h @ sd[pre + "self_attn.k_proj.weight"].T + sd[pre + "self_attn.k_proj.bias"]).view(T, KV, D)
    v = (h @ sd[pre + "self_attn.v_proj.weight"].T + sd[pre + "self_attn.v_proj.bias"]).view(T, KV, D)
    q, k = rope(q, pos, c.rope_theta), rope(k, pos, c.rope_theta)
    k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    att = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(T, H * D)
    x = x + att @ sd[pre + "self_attn.o_proj.weight"].T
    h = rms(x, sd[pre + "post_attention_layernorm.weight"], c.rms_norm_eps)
    mlp = (F.silu(h @ sd[pre + "mlp.gate_proj.weight"].T) * (h @ sd[pre + "mlp.up_proj.weight"].T))
    return x + mlp @ sd[pre + "mlp.down_proj.weight"].T


def reference(model, ids: list[int], depths: int, *, norm_depth0=False, zero_first=True, chain_normed=True):
    """vLLM's forward over one sequence: main logits and the logits of each draft depth, (T, V) each (depth j
    at position t predicts token t+1+j; rows whose input token is unknown are computed with id 0).  The
    keyword arguments flip one rule each (the controls: SGLang's normed depth 0, no zeroing, chaining the
    block output before ``final_layernorm``)."""
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    head = sd["lm_head.weight"]
    T = len(ids)
    pos = torch.arange(T)
    x = sd["model.embed_tokens.weight"][torch.tensor(ids)]
    for i in range(c.num_hidden_layers):
        x = qwen2_block(sd, f"model.layers.{i}.", x, pos, c)
    main = rms(x, sd["model.norm.weight"], c.rms_norm_eps) @ head.T  # compute_logits: norm, then head
    # the proposer gets the pre-norm hidden state
    out, hidden, shifted = [main], rms(x, sd["model.norm.weight"], c.rms_norm_eps) if norm_depth0 else x, list(ids)
    for j in range(depths):
        shifted = shifted[1:] + [0]  # input ids shifted by one per draft step; positions unchanged
        pre = f"model.mtp_layers.{j}."
        e = sd["model.embed_tokens.weight"][torch.tensor(shifted)].clone()
        if zero_first:
            e[pos == 0] = 0  # inputs_embeds[positions == 0] = 0
        e = rms(e, sd[pre + "token_layernorm.weight"], c.rms_norm_eps)
        h = rms(hidden, sd[pre + "hidden_layernorm.weight"], c.rms_norm_eps)
        y = torch.cat([h, e], -1) @ sd[pre + "input_proj.weight"].T
        y = qwen2_block(sd, pre, y, pos, c)
        normed = rms(y, sd[pre + "final_layernorm.weight"], c.rms_norm_eps)
        out.append(normed @ head.T)
        hidden = normed if chain_normed else y  # fed to the next step as is
    return out


def ce(logits, targets):
    return F.cross_entropy(logits, torch.tensor(targets), reduction="sum")


# ---- the tests ---------------------------------------------------------------------------------------
def test_mtp_logits_and_losses_match_the_reference():
    model = build_model(cfg(), seed=1).eval()
    randomise_norms(model)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    ref = reference(model, ids[0].tolist(), 2)
    with torch.no_grad():
        out = model(ids, labels=ids)
        h1, l1 = model.mtp_forward(1, out.hidden_states, F.pad(ids[:, 1:], (0, 1)), torch.arange(12)[None])
        _, l2 = model.mtp_forward(2, h1, F.pad(ids[:, 2:], (0, 2)), torch.arange(12)[None])
    assert torch.allclose(out.logits[0], ref[0], atol=1e-4)
    assert torch.allclose(l1[0], ref[1], atol=1e-4)
    assert torch.allclose(l2[0], ref[2], atol=1e-4)
    t = ids[0].tolist()
    for j in (1, 2):  # depth j's loss: logits at t against token t+1+j, every t that has one
        n = 12 - 1 - j
        assert torch.allclose(out.mtp_losses[j - 1], ce(ref[j][:n], t[1 + j:]) / n, atol=1e-4)


def test_each_rule_of_the_reference_matters():
    """Controls: with any one rule flipped (SGLang's normed depth 0, no zeroing at position 0, chaining the
    block output before final_layernorm) the reference disagrees with openmimo, so the test above would catch
    a layer that broke that rule."""
    model = build_model(cfg(), seed=3).eval()
    randomise_norms(model, 1)
    ids = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(ids, labels=ids)
    for flip, depth in (({"norm_depth0": True}, 1), ({"zero_first": False}, 1), ({"chain_normed": False}, 2)):
        wrong = reference(model, ids[0].tolist(), 2, **flip)[depth]
        n = 10 - 1 - depth
        wrong_loss = ce(wrong[:n], ids[0, 1 + depth:].tolist()) / n
        assert not torch.allclose(out.mtp_losses[depth - 1], wrong_loss, atol=1e-3), flip


def test_packed_documents_match_the_reference_per_document():
    """Packed training rows: each document restarts at position 0, so its MTP inputs are zeroed there, as vLLM
    does for each sequence; the packed losses equal the reference's summed over documents."""
    model = build_model(cfg(), seed=5).eval()
    randomise_norms(model, 2)
    g = torch.Generator().manual_seed(6)
    docs = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (7, 4, 9)]
    ids = torch.tensor([sum(docs, [])])
    pos = torch.tensor([sum((list(range(len(d))) for d in docs), [])])
    with torch.no_grad():
        out = model(ids, position_ids=pos, labels=ids)
    for j in (1, 2):
        total = sum(ce(reference(model, d, 2)[j][: len(d) - 1 - j], d[1 + j:]) for d in docs)
        assert torch.allclose(out.loss_sums[j], total, atol=1e-3)
        assert out.num_targets[j] == sum(len(d) - 1 - j for d in docs)


def test_engine_drafts_are_the_reference_drafts(monkeypatch):
    """Every draft the engine's decode steps make (greedy, k = 2) is the arg-max of the
    reference's depth-j logits at the last processed position, over the tokens the engine held then."""
    model = build_model(cfg(), seed=7).eval()
    randomise_norms(model, 3)
    engine = Engine(model, max_slots=2, max_len=48, spec_k=2)
    seen = []
    real = engine._pick  # a decode step picks each depth's draft from that depth's hidden states (engine.py)

    def spy(h, r, length, pw, vpos, depth, mode):
        logits = model.lm_head(h[torch.arange(h.shape[0]), r])  # at the last processed position of each slot
        for slot in engine.running:
            t = int(length[slot]) - 1
            seen.append((depth, t, engine.tokens[slot, : t + depth + 1].tolist(), logits[slot].clone()))
        return real(h, r, length, pw, vpos, depth, mode)

    monkeypatch.setattr(engine, "_pick", spy)
    prompts = [[5, 9, 14, 3], [8]]
    engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    assert len(seen) >= 8 and {d for d, *_ in seen} == {1, 2}
    assert any(t == 0 for _, t, _, _ in seen)  # a draft at position 0 (the one-token prompt)
    for depth, t, toks, logits in seen:
        ref = reference(model, toks, depth)[depth][t]
        assert torch.allclose(logits.float(), ref, atol=1e-4), (depth, t)
