"""The engine's forward (infer/forward.py) against the plain model on the same inputs.

The engine runs the model's modules through its own forward so that its decode kernels stay out of model/;
these tests hold that forward to the model's: a prefill then decode steps through the engine's cache give the
logits, hidden states and MTP drafts of the model's full forward without a cache, and of the model's forward
through a cache that only offers ``update`` and ``attn_mask`` (the protocol the model asks of a cache).  On CUDA
the Triton kernels are on, and the same comparison holds in bf16 (close logits, the same greedy tokens)."""

import pytest
import torch
import torch.nn.functional as F

from openmimo.infer import kernels
from openmimo.infer.forward import EngineForward
from openmimo.infer.kv_cache import CacheView, KVCache
from openmimo.model.mimo import build_model
from test_engine import tiny_cfg  # the engine tests' tiny GQA model: 4 query heads, 2 KV heads, 2 MTP layers


class ProtocolCache:
    """A cache with nothing but the protocol the model uses: ``update`` and ``attn_mask`` (like transformers'
    DynamicCache): keys and values appended per layer, every query sees every key up to its own position."""

    def __init__(self):
        self.k, self.v, self.attn_mask = {}, {}, None

    def start(self, past: int, new: int) -> None:
        keys = torch.arange(past + new)
        self.attn_mask = (keys[None, :] <= past + torch.arange(new)[:, None])[None, None]

    def update(self, layer_idx, k, v):
        if layer_idx in self.k:
            k, v = torch.cat([self.k[layer_idx], k], 2), torch.cat([self.v[layer_idx], v], 2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        return k, v


def devices():
    out = [("cpu", torch.float32)]
    if torch.cuda.is_available():
        out.append(("cuda", torch.bfloat16))
    return out


def setup(device, dtype, seed=1):
    cfg = tiny_cfg(hidden_size=256, intermediate_size=512, attention_bias=True) if device == "cuda" else tiny_cfg(
        attention_bias=True)
    model = build_model(cfg, device=device, dtype=dtype, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (3, 12), generator=g).to(device)
    return model, cfg, ids


def tol(dtype):
    return dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.05)


@pytest.mark.parametrize("device,dtype", devices())
@torch.no_grad()
def test_prefill_then_decode_equals_the_full_forward(device, dtype):
    """Prompt of 8 (causal prefill into empty slots), then 4 decode steps of one token each over every slot:
    each step's logits and hidden states are the full forward's at that position; greedy tokens agree."""
    model, cfg, ids = setup(device, dtype)
    B, L, P = ids.shape[0], ids.shape[1], 8
    full = model(ids)
    fwd = EngineForward(model)
    cache = KVCache(cfg, B, 32, cfg.num_hidden_layers, device, dtype)
    assert cache.use_kernels == kernels.enabled(cache.keys[0])
    slots = torch.arange(B, device=device)
    pos = torch.arange(P, device=device)[None].expand(B, P)
    out = fwd(ids[:, :P], pos, CacheView(cache, pos, P, slot_ids=slots, causal_prefill=True))
    torch.testing.assert_close(out.logits, full.logits[:, :P], **tol(dtype))
    torch.testing.assert_close(out.hidden_states, full.hidden_states[:, :P], **tol(dtype))
    for t in range(P, L):
        pos = torch.full((B, 1), t, device=device)
        view = CacheView(cache, pos, 16)  # the decode step: rows are slots, attention over a length bucket
        assert view.fold_gqa and view.fast_linear == view.fast_attention == cache.use_kernels
        out = fwd(ids[:, t: t + 1], pos, view)
        torch.testing.assert_close(out.logits[:, 0], full.logits[:, t], **tol(dtype))
        assert torch.equal(out.logits[:, 0].argmax(-1), full.logits[:, t].argmax(-1))


@pytest.mark.parametrize("device,dtype", devices())
@torch.no_grad()
def test_verify_window_and_logits_to_keep(device, dtype):
    """Several new tokens per row at once (a speculative verify window) and one kept position per row."""
    model, cfg, ids = setup(device, dtype, seed=2)
    B, P, W = ids.shape[0], 7, 3
    full = model(ids[:, : P + W])
    fwd = EngineForward(model)
    cache = KVCache(cfg, B, 32, cfg.num_hidden_layers, device, dtype)
    pos = torch.arange(P, device=device)[None].expand(B, P)
    fwd(ids[:, :P], pos, CacheView(cache, pos, P, slot_ids=torch.arange(B, device=device), causal_prefill=True))
    pos = P + torch.arange(W, device=device)[None].expand(B, W)
    out = fwd(ids[:, P: P + W], pos, CacheView(cache, pos, 16))
    torch.testing.assert_close(out.logits, full.logits[:, P:], **tol(dtype))
    keep = torch.tensor([0, 2, 1], device=device)
    pos2 = torch.arange(P + W, device=device)[None].expand(B, P + W)
    fresh = KVCache(cfg, B, 32, cfg.num_hidden_layers, device, dtype)
    kept = fwd(ids[:, : P + W], pos2, CacheView(fresh, pos2, P + W, slot_ids=torch.arange(B, device=device),
                                                   causal_prefill=True), logits_to_keep=keep)
    torch.testing.assert_close(kept.logits[:, 0], full.logits[torch.arange(B), keep], **tol(dtype))


@torch.no_grad()
def test_engine_forward_equals_the_model_through_a_protocol_cache():
    """The model's own forward through a cache that offers only update/attn_mask (the generic protocol), and the
    engine's forward through its cache, step by step: the same logits to float32 rounding (CPU)."""
    model, cfg, ids = setup("cpu", torch.float32, seed=3)
    ids = ids[:1]
    fwd = EngineForward(model)
    cache = KVCache(cfg, 1, 32, cfg.num_hidden_layers, "cpu", torch.float32)
    proto = ProtocolCache()
    steps = [(0, 5), (5, 1), (6, 3), (9, 1)]  # (past, new): a prompt, a decode step, a window, a decode step
    for past, new in steps:
        pos = torch.arange(past, past + new)[None]
        proto.start(past, new)
        ref = model(ids[:, past: past + new], position_ids=pos, kv_cache=proto)
        view = CacheView(cache, pos, 16) if past else CacheView(cache, pos, new, slot_ids=torch.tensor([0]),
                                                                causal_prefill=True)
        out = fwd(ids[:, past: past + new], pos, view)
        # the two paths attend over different cache lengths with different kernels (folded GQA vs enable_gqa), so
        # float32 rounding differs by ~1e-5 on some CPU kernel paths; a wrong forward is off by O(1)
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.hidden_states, ref.hidden_states, atol=1e-4, rtol=1e-4)
    assert sorted(proto.k) == list(range(cfg.num_hidden_layers))


@pytest.mark.parametrize("device,dtype", devices())
@torch.no_grad()
def test_mtp_depths_equal_the_model_mtp_forward(device, dtype):
    """Depths 1 and 2 through the engine's cache (a prefill over the prompt, then a draft window of 2k
    positions over every slot) give the model's ``mtp_forward`` over the whole sequence without a cache."""
    model, cfg, ids = setup(device, dtype, seed=4)
    B, L = ids.shape
    k, W = 2, 4
    n = cfg.num_hidden_layers
    full = model(ids)
    all_pos = torch.arange(L, device=device)[None].expand(B, L)
    ref_h, refs = full.hidden_states, []
    for j in (1, 2):
        ref_h, lg = model.mtp_forward(j, ref_h, F.pad(ids[:, j:], (0, j)), all_pos)
        refs.append(lg)
    fwd = EngineForward(model)
    cache = KVCache(cfg, B, 32, n + k, device, dtype)
    P = L - W  # prefill the first P positions of every depth, then run the last W as one draft window
    pos = all_pos[:, :P]
    view = CacheView(cache, pos, P, slot_ids=torch.arange(B, device=device), causal_prefill=True)
    hidden = fwd(ids[:, :P], pos, view).hidden_states
    h = hidden
    for j in (1, 2):
        h, _ = fwd.mtp_forward(j, h, F.pad(ids[:, j:], (0, j))[:, :P], pos, view)
    pw = all_pos[:, P:]
    h = full.hidden_states[:, P:]
    for j in (1, 2):
        h, logits = fwd.mtp_forward(j, h, F.pad(ids[:, j:], (0, j))[:, P:], pw, CacheView(cache, pw, 16))
        torch.testing.assert_close(logits, refs[j - 1][:, P:], **tol(dtype))
        assert torch.equal(logits.argmax(-1), refs[j - 1][:, P:].argmax(-1))
