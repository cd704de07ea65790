"""``Engine(compile_scope="block")``: the forward compiled as regions (block, MTP depth, head, rotary tables), one
graph per region and input shape, whatever the layer count; outputs equal the eager engine's; after ``warmup()``
the request path compiles nothing.

Most tests route torch.compile to dynamo with a counting backend (real tracing and guards, no code generation),
so "a graph" is one dynamo frame; one test runs Inductor for real."""

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.infer.forward import EngineForward
from openmimo.infer.kv_cache import CacheView, KVCache
from openmimo.infer.variants import StepGraphs
from openmimo.model.mimo import build_model
from test_engine import PROMPTS, tiny_cfg
from test_engine_fast import flat, mixed_params


def counted(monkeypatch, build):
    """``build()`` with torch.compile tracing into a fresh counting backend; returns (its result, the counter)."""
    import torch._dynamo as dynamo

    dynamo.reset()
    counter = CompileCounter()
    real = torch.compile

    def traced(fn, **opts):
        return real(fn, backend=counter, fullgraph=opts.get("fullgraph", False), dynamic=opts.get("dynamic"))

    monkeypatch.setattr(torch, "compile", traced)
    try:
        return build(), counter
    finally:
        monkeypatch.setattr(torch, "compile", real)


def assert_same(got, ref, tol=1e-5):
    """Equal tokens and finish reasons, log-probs to float tolerance."""
    got, ref = flat(got), flat(ref)
    assert [(g[0], g[3]) for g in got] == [(r[0], r[3]) for r in ref]
    for g, r in zip(got, ref):
        assert g[1] == pytest.approx(r[1], abs=tol) and g[2] == pytest.approx(r[2], abs=tol)


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1)


@pytest.mark.parametrize("spec_k,kv_buckets", [(0, True), (2, False), (1, True)])
def test_block_scope_equals_the_eager_engine(model, monkeypatch, spec_k, kv_buckets):
    params = mixed_params()
    prompts = PROMPTS[: len(params)]
    ref = Engine(model, max_slots=4, max_len=48, spec_k=spec_k, kv_buckets=kv_buckets).generate(prompts, params)
    eng, counter = counted(monkeypatch, lambda: Engine(model, max_slots=4, max_len=48, spec_k=spec_k, compile=True,
                                                       compile_scope="block", kv_buckets=kv_buckets))
    got = eng.generate(prompts, params)
    assert counter.frame_count > 0  # the regions ran compiled
    assert_same(got, ref)


def test_one_graph_per_region_and_shape_whatever_the_depth(monkeypatch):
    """A 6-layer model compiles exactly the graphs a 2-layer one does: the layers share their block's graph."""
    frames = []
    for layers in (2, 6):
        m = build_model(tiny_cfg(num_hidden_layers=layers), seed=1)
        eng, counter = counted(monkeypatch, lambda: Engine(m, max_slots=3, max_len=40, spec_k=2, compile=True,
                                                           compile_scope="block", kv_buckets=False))
        eng.generate(PROMPTS[:3], SamplingParams(max_new_tokens=6, temperature=0))
        frames.append(counter.frame_count)
    # decode: the glue (inputs, one pick per depth, verify), the rotary tables, block and head at the verify window
    # (3 tokens), the MTP depth at the draft window (4 tokens); the first-token sampler; the prefill is eager (no
    # windows on the CPU)
    assert frames[0] == frames[1] <= 9


def test_warmup_builds_the_regions_and_nothing_compiles_after(model, monkeypatch):
    params = mixed_params()[:4]
    prompts = PROMPTS[:4]
    ref = Engine(model, max_slots=4, max_len=48, spec_k=1, kv_buckets=False).generate(prompts, params)
    eng, counter = counted(monkeypatch, lambda: Engine(model, max_slots=4, max_len=48, spec_k=1, compile=True,
                                                       compile_scope="block", kv_buckets=False, prefill_graph=True,
                                                       compile_on_request=False))
    times = eng.warmup()
    assert set(times) == set(eng.compiled_variants()) and any(k[0] == "window" for k in times)
    traced = counter.frame_count
    assert traced > 0
    got = eng.generate(prompts, params)
    assert counter.frame_count == traced and eng.variants.eager_calls == 0
    assert_same(got, ref)


def test_block_scope_under_inductor(model):
    """The regions through Inductor's generated code (no counting backend), greedy and sampled, with drafts."""
    import torch._dynamo as dynamo

    dynamo.reset()
    params = [SamplingParams(max_new_tokens=10, temperature=0), SamplingParams(max_new_tokens=10, temperature=1.0,
                                                                               seed=5)]
    ref = Engine(model, max_slots=2, max_len=40, spec_k=1, kv_buckets=False).generate(PROMPTS[:2], params)
    eng = Engine(model, max_slots=2, max_len=40, spec_k=1, compile=True, compile_scope="block", kv_buckets=False)
    assert_same(eng.generate(PROMPTS[:2], params), ref, tol=1e-4)


def test_region_forward_equals_the_model(model):
    """EngineForward(regions=True) against the model's own forward through the same cache positions."""
    cfg = model.config
    ids = torch.tensor([[3, 9, 14, 2, 7]])
    pos = torch.arange(5)[None]
    with torch.no_grad():
        want = model(ids, position_ids=pos).logits
        for fwd in (EngineForward(model), EngineForward(model, regions=True)):
            cache = KVCache(cfg, 1, 16, cfg.num_hidden_layers + cfg.num_nextn_predict_layers)
            got = fwd(ids, pos, CacheView(cache, pos, 16)).logits
            assert torch.allclose(got, want, atol=1e-5)


def test_cache_view_mask_is_built_when_read():
    cfg = tiny_cfg()
    cache = KVCache(cfg, 2, 8, 1)
    pos = torch.tensor([[2], [5]])
    view = CacheView(cache, pos, 8)
    want = (torch.arange(8)[None, None, :] <= pos[:, :, None])[:, None]
    assert torch.equal(view.attn_mask, want) and torch.equal(view.layer(0).attn_mask, want)
    assert CacheView(cache, torch.arange(4)[None].expand(2, 4), 4, causal_prefill=True).attn_mask is None


def test_step_graphs_do_the_work_once_per_call():
    calls = []
    fn = StepGraphs(lambda n, mode: calls.append((n, mode)) or torch.tensor([n]), graphs=False)
    assert [int(fn(3, "greedy")) for _ in range(3)] == [3, 3, 3] and calls == [(3, "greedy")] * 3
    assert not fn.captured(3, "greedy")  # no graphs on the CPU


def test_unknown_compile_scope_is_one_clear_error(model):
    with pytest.raises(ValueError, match="compile_scope='layers'"):
        Engine(model, max_slots=1, max_len=16, compile_scope="layers")
