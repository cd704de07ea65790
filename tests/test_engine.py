"""The engine against the slow oracle: greedy identity, log-probs of the training model, seeded
sampling, continuous batching (more requests than slots, adding while decoding, abort), n samples
sharing one prefill, stop tokens, cache sizing, weight updates."""

import pytest
import torch

from openmimo.infer.engine import Engine, SamplingParams, sample_seed
from openmimo.infer.kernels import folded_gqa_attention
from openmimo.infer.kv_cache import bytes_per_slot
from openmimo.infer.oracle import generate_oracle
from openmimo.infer.sampling import process_logits
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model

PROMPTS = [[1, 2, 3], [5] * 9, [7, 8], list(range(3, 17)), [2], [9, 4, 9, 4, 9], [11] * 4]


def tiny_cfg(**kw):
    # A large init makes the logits peaked, so arg-max ties (which float noise could flip) do not occur.
    base = dict(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=96, num_nextn_predict_layers=2,
                tie_word_embeddings=False, initializer_range=0.3)
    base.update(kw)
    return MiMoConfig(**base)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(), seed=1)


def run_all(engine, prompts, params):
    return [cs[0] for cs in engine.generate(prompts, params)]


@pytest.mark.parametrize("spec_k", [0, 2])
def test_greedy_equals_oracle_with_more_requests_than_slots(model, spec_k):
    engine = Engine(model, max_slots=3, max_len=64, spec_k=spec_k)
    outs = run_all(engine, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0))
    for p, o in zip(PROMPTS, outs):
        ref, ref_lp = generate_oracle(model, p, 12)
        assert o.token_ids == ref
        assert o.finish_reason == "length"
        assert max(abs(a - b) for a, b in zip(o.logprobs, ref_lp)) < 1e-4
    assert engine.num_running() == 0 and not engine.active.any()


def test_stop_tokens_end_generation_like_the_oracle(model):
    free, _ = generate_oracle(model, PROMPTS[3], 12)
    stop = free[4]
    engine = Engine(model, max_slots=2, max_len=64)
    o = run_all(engine, [PROMPTS[3]], SamplingParams(max_new_tokens=12, temperature=0, stop_ids=(stop,)))[0]
    ref, _ = generate_oracle(model, PROMPTS[3], 12, stop_ids=(stop,))
    assert o.token_ids == ref and o.token_ids[-1] == stop and o.finish_reason == "stop"
    assert len(o.token_ids) == free.index(stop) + 1


@pytest.mark.parametrize("spec_k", [0, 2])
def test_logprobs_equal_training_model(model, spec_k):
    """Both returned log-probs agree with a plain forward of the training model over prompt + output."""
    engine = Engine(model, max_slots=4, max_len=64, spec_k=spec_k)
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_k=7, top_p=0.9, seed=3)
    outs = run_all(engine, PROMPTS[:5], params)
    for p, o in zip(PROMPTS[:5], outs):
        ids = torch.tensor([p + o.token_ids])
        logits = model(ids).logits[0, len(p) - 1: -1].float()
        tgt = torch.tensor(o.token_ids)
        raw = torch.log_softmax(logits, -1)[torch.arange(len(tgt)), tgt]
        n = len(tgt)
        proc = process_logits(logits, torch.full((n,), 0.8), torch.full((n,), 0.9), torch.full((n,), 7))
        assert torch.allclose(torch.tensor(o.logprobs), raw, atol=1e-3, rtol=0)
        assert torch.allclose(torch.tensor(o.sampling_logprobs), proc[torch.arange(n), tgt], atol=1e-3, rtol=0)
        assert torch.isfinite(proc[torch.arange(n), tgt]).all()  # every token lies inside the top-k/top-p set


def test_seeded_sampling_matches_oracle_and_ignores_batch_composition(model):
    params = [SamplingParams(max_new_tokens=10, temperature=1.0, seed=100 + i) for i in range(len(PROMPTS))]
    a = run_all(Engine(model, max_slots=2, max_len=64), PROMPTS, params)
    b = run_all(Engine(model, max_slots=7, max_len=64), PROMPTS[::-1], params[::-1])[::-1]
    for p, sp, x, y in zip(PROMPTS, params, a, b):
        ref, _ = generate_oracle(model, p, 10, temperature=1.0, seed=sp.seed)
        assert x.token_ids == y.token_ids == ref
    c = run_all(Engine(model, max_slots=2, max_len=64), PROMPTS[:1], SamplingParams(max_new_tokens=10, seed=5))
    assert c[0].token_ids != a[0].token_ids  # another seed, another sample


def test_n_samples_share_one_prefill(model):
    engine = Engine(model, max_slots=4, max_len=64)
    res = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=8, temperature=1.0, seed=9, n=3))[0]
    assert engine.counters["prompt_tokens"] == len(PROMPTS[1])  # prefilled once for three samples
    assert len({tuple(c.token_ids) for c in res}) > 1
    for i, c in enumerate(res):
        ref, _ = generate_oracle(model, PROMPTS[1], 8, temperature=1.0, seed=sample_seed(9, i))
        assert c.index == i and c.token_ids == ref


def test_add_while_decoding_and_abort(model):
    engine = Engine(model, max_slots=2, max_len=64)
    g = SamplingParams(max_new_tokens=15, temperature=0)
    a = engine.add_request(PROMPTS[0], g)
    b = engine.add_request(PROMPTS[1], g)
    c = engine.add_request(PROMPTS[2], g)  # waits: two slots only
    got = {a: [], b: [], c: []}
    reasons = {}
    for _ in range(3):
        for o in engine.step():
            got[o.request_id] += o.token_ids
            reasons[o.request_id] = o.finish_reason
    assert engine.num_running() == 2 and engine.num_waiting() == 1
    assert engine.abort(b)
    d = engine.add_request(PROMPTS[3], g)  # added while decoding
    got[d] = []
    assert engine.abort(d)  # aborting a waiting request
    assert not engine.abort("no-such-id")
    while engine.has_unfinished():
        for o in engine.step():
            got[o.request_id] += o.token_ids
            if o.finish_reason:
                reasons[o.request_id] = o.finish_reason
    assert reasons[b] == "abort" and reasons[d] == "abort" and got[d] == []
    assert len(got[b]) == 4 and got[b] == generate_oracle(model, PROMPTS[1], 4)[0]  # step 1: prefill + decode
    assert got[a] == generate_oracle(model, PROMPTS[0], 15)[0] and reasons[a] == "length"
    assert got[c] == generate_oracle(model, PROMPTS[2], 15)[0]


def test_kv_cache_sized_from_memory_budget(model):
    cfg = model.config
    per_slot = bytes_per_slot(cfg, 64 + 2, torch.float32, cfg.num_hidden_layers)
    engine = Engine(model, max_len=64, kv_budget_bytes=5 * per_slot + 10)
    assert engine.slots == 5 and engine.cache.keys[0].shape == (5, cfg.num_key_value_heads, 66, cfg.head_size)


def test_update_weights_switches_model(model):
    other = build_model(tiny_cfg(), seed=7)
    engine = Engine(build_model(tiny_cfg(), seed=1), max_slots=2, max_len=64)
    g = SamplingParams(max_new_tokens=8, temperature=0)
    assert run_all(engine, [PROMPTS[0]], g)[0].token_ids == generate_oracle(model, PROMPTS[0], 8)[0]
    engine.update_weights(other)
    assert run_all(engine, [PROMPTS[0]], g)[0].token_ids == generate_oracle(other, PROMPTS[0], 8)[0]
    with pytest.raises(KeyError):
        engine.update_weights({"nothing": torch.zeros(1)})


def test_bad_requests_are_refused(model):
    engine = Engine(model, max_slots=2, max_len=16)
    with pytest.raises(ValueError, match="context"):
        engine.add_request(list(range(16)))
    with pytest.raises(ValueError, match="n=3"):
        engine.add_request([1], SamplingParams(n=3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.add_request([1], SamplingParams(max_new_tokens=-1))
    with pytest.raises(ValueError, match="vocabulary"):
        engine.add_request([1000])
    # A prompt near the context end stops at the context ("length"), not with an error.
    o = run_all(engine, [list(range(1, 14))], SamplingParams(max_new_tokens=50, temperature=0))[0]
    assert len(o.token_ids) == 3 and o.finish_reason == "length"


def test_folded_gqa_attention_equals_sdpa_gqa():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 3, 16), torch.randn(2, 2, 10, 16), torch.randn(2, 2, 10, 16)
    mask = torch.rand(2, 1, 3, 10) > 0.3
    mask[..., 0] = True
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(folded_gqa_attention(q, k, v, mask), ref, atol=1e-6)
