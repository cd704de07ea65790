"""The engine's fast paths against its slow ones: overlapped steps (launch step n+1 before reading
step n) against synchronous steps and the oracle; the all-greedy decode graph against the sampling
graph; the Triton decode kernels against the PyTorch code they replace (on CUDA, or on the CPU under
Triton's interpreter when Triton is installed)."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.infer.sampling import first_tokens, padded_count
from openmimo.infer.oracle import generate_oracle
from openmimo.model.mimo import build_model
from test_engine import PROMPTS, tiny_cfg  # the same tiny model and prompts as the engine tests


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1)


def mixed_params():
    """Greedy, sampled, filtered, stopped early, several samples, short limits: every branch of a step."""
    return [SamplingParams(max_new_tokens=12, temperature=0),
            SamplingParams(max_new_tokens=9, temperature=1.0, seed=4),
            SamplingParams(max_new_tokens=10, temperature=0.8, top_k=7, top_p=0.9, seed=5),
            SamplingParams(max_new_tokens=12, temperature=0, stop_ids=(13, 29)),
            SamplingParams(max_new_tokens=1, temperature=0),
            SamplingParams(max_new_tokens=7, temperature=1.0, seed=6, n=2),
            SamplingParams(max_new_tokens=11, temperature=0.7, seed=7)]


def flat(results):
    return [(c.token_ids, c.logprobs, c.sampling_logprobs, c.finish_reason) for cs in results for c in cs]


@pytest.mark.parametrize("spec_k", [0, 2])
def test_overlapped_steps_equal_synchronous_steps(model, spec_k):
    params = mixed_params()
    sync = Engine(model, max_slots=3, max_len=64, spec_k=spec_k, overlap=False).generate(PROMPTS, params)
    eng = Engine(model, max_slots=3, max_len=64, spec_k=spec_k, overlap=True)
    over = eng.generate(PROMPTS, params)
    assert flat(over) == flat(sync)
    assert eng.num_running() == 0 and eng._inflight is None and not eng.active.any()
    ref, _ = generate_oracle(model, PROMPTS[0], 12)
    assert over[0][0].token_ids == ref


def test_overlapped_steps_deliver_one_call_later_and_survive_abort(model):
    engine = Engine(model, max_slots=2, max_len=64, overlap=True)
    g = SamplingParams(max_new_tokens=15, temperature=0)
    a, b, c = (engine.add_request(p, g) for p in PROMPTS[:3])
    got = {a: [], b: [], c: []}
    reasons = {}
    for _ in range(3):  # prefill + launch; then each call emits the step launched by the one before
        for o in engine.step():
            got[o.request_id] += o.token_ids
    assert len(got[a]) == len(got[b]) == 3 and engine.num_waiting() == 1
    assert engine.abort(b)  # its step in flight is discarded
    d = engine.add_request(PROMPTS[3], g)
    got[d] = []
    while engine.has_unfinished():
        for o in engine.step():
            got[o.request_id] += o.token_ids
            if o.finish_reason:
                reasons[o.request_id] = o.finish_reason
    assert reasons[b] == "abort" and got[b] == generate_oracle(model, PROMPTS[1], 3)[0]
    for rid, p in ((a, PROMPTS[0]), (c, PROMPTS[2]), (d, PROMPTS[3])):
        assert got[rid] == generate_oracle(model, p, 15)[0] and reasons[rid] == "length"


def test_update_weights_delivers_the_step_in_flight_first(model):
    other = build_model(tiny_cfg(), seed=7)
    engine = Engine(build_model(tiny_cfg(), seed=1), max_slots=2, max_len=64, overlap=True)
    g = SamplingParams(max_new_tokens=8, temperature=0)
    rid = engine.add_request(PROMPTS[0], g)
    toks = []
    for _ in range(3):
        toks += [t for o in engine.step() for t in o.token_ids]
    engine.update_weights(other)  # finishes the step in flight (old weights) before copying
    assert engine._inflight is None
    first = [t for o in engine.step() for t in o.token_ids]
    assert toks + first == generate_oracle(model, PROMPTS[0], 8)[0][: len(toks) + len(first)]
    engine.abort(rid)
    while engine.has_unfinished():
        engine.step()
    assert [c[0].token_ids for c in engine.generate([PROMPTS[0]], g)] == [generate_oracle(other, PROMPTS[0], 8)[0]]


@pytest.mark.parametrize("spec_k", [0, 2])
def test_greedy_graph_equals_sampling_graph(model, spec_k):
    """All-greedy batches skip noise and one-hot tensors; a greedy row in a sampled batch takes the
    general path.  Both give the same tokens and log-probs."""
    g = SamplingParams(max_new_tokens=12, temperature=0)
    s = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    alone = Engine(model, max_slots=4, max_len=64, spec_k=spec_k)
    mixed = Engine(model, max_slots=4, max_len=64, spec_k=spec_k)
    a = alone.generate(PROMPTS[:3], g)
    m = mixed.generate(PROMPTS[:3] + [PROMPTS[3]], [g, g, g, s])
    # A 3-row and a 4-row batch may take different CPU kernels (rounding in the 7th digit on AVX-512):
    # tokens and finish reasons are equal, log-probs equal to float rounding.
    for (t1, l1, s1, f1), (t2, l2, s2, f2) in zip(flat(a), flat(m[:3])):
        assert (t1, s1, f1) == (t2, s2, f2)
        assert torch.allclose(torch.tensor(l1), torch.tensor(l2), atol=1e-5)
    for p, cs in zip(PROMPTS[:3], a):
        assert cs[0].token_ids == generate_oracle(model, p, 12)[0]
        assert cs[0].sampling_logprobs == [0.0] * 12


@pytest.mark.parametrize("spec_k", [0, 2])
def test_one_graph_over_the_capacity_equals_length_buckets(model, spec_k):
    """kv_buckets=False (attention over the whole capacity, one compiled graph per sampling mode) gives
    the tokens of the bucketed engine and the same log-probs up to float summation order."""
    params = mixed_params()
    ref = Engine(model, max_slots=3, max_len=64, spec_k=spec_k).generate(PROMPTS, params)
    eng = Engine(model, max_slots=3, max_len=64, spec_k=spec_k, kv_buckets=False)
    assert eng._kv_bucket() == eng.capacity
    one = eng.generate(PROMPTS, params)
    for (t1, l1, s1, f1), (t2, l2, s2, f2) in zip(flat(one), flat(ref)):
        assert (t1, f1) == (t2, f2)
        assert torch.allclose(torch.tensor(l1), torch.tensor(l2), atol=1e-5)
        assert torch.allclose(torch.tensor(s1), torch.tensor(s2), atol=1e-5)
    assert one[0][0].token_ids == generate_oracle(model, PROMPTS[0], 12)[0]




@pytest.mark.parametrize("spec_k", [0, 2])
def test_batched_prefill_equals_one_prompt_at_a_time(model, spec_k):
    """Admitted prompts share one right-padded prefill forward; the slow path (``max_prefill_tokens=1``:
    one prompt per forward) gives the same tokens, log-probs to float summation order, and the oracle's
    greedy tokens."""
    params = mixed_params()
    one = Engine(model, max_slots=6, max_len=64, spec_k=spec_k, max_prefill_tokens=1)
    ref = one.generate(PROMPTS, params)
    eng = Engine(model, max_slots=6, max_len=64, spec_k=spec_k)
    got = eng.generate(PROMPTS, params)
    assert one.prefill.forwards == len(PROMPTS)
    assert eng.prefill.forwards < len(PROMPTS) - 2  # several prompts per forward
    for (t1, l1, s1, f1), (t2, l2, s2, f2) in zip(flat(got), flat(ref)):
        assert (t1, f1) == (t2, f2)
        assert torch.allclose(torch.tensor(l1), torch.tensor(l2), atol=1e-5)
        assert torch.allclose(torch.tensor(s1), torch.tensor(s2), atol=1e-5)
    for p, sp, cs in zip(PROMPTS, params, got):
        if sp.temperature == 0 and not sp.stop_ids:
            assert cs[0].token_ids == generate_oracle(model, p, sp.max_new_tokens)[0]

@pytest.mark.parametrize("spec_k", [0, 2])
def test_prefill_traces_as_one_graph_for_every_prompt_length(model, spec_k):
    """On GPU the prefill is compiled with a symbolic prompt length (``fullgraph=True``).  Here dynamo
    traces it the same way (its eager backend: the graph, not inductor's kernels) and must give the
    uncompiled engine's outputs, for prompts of several lengths, without a recompile per length."""
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounter

    params = mixed_params()
    ref = Engine(model, max_slots=3, max_len=64, spec_k=spec_k).generate(PROMPTS, params)
    dynamo.reset()
    counter = CompileCounter()
    eng = Engine(model, max_slots=3, max_len=64, spec_k=spec_k)
    compiled = torch.compile(eng.prefill.forward_impl, backend=counter, fullgraph=True)
    shapes = []

    def prefill(ids, *args):
        shapes.append(tuple(ids.shape))
        return compiled(ids, *args)

    eng.prefill._forward_fn = prefill
    got = eng.generate(PROMPTS, params)
    assert flat(got) == flat(ref)
    # (prompts, padded length) shapes: a graph each for sizes >= 2 and for dynamo's specialised sizes of 1
    singles = {(r == 1, n == 1) for r, n in shapes}
    assert len(set(shapes)) > len(singles) and counter.frame_count == len(singles)

def assert_same(got, ref):
    """Same tokens and finish reasons; log-probs equal to float summation order."""
    assert len(flat(got)) == len(flat(ref))
    for (t1, l1, s1, f1), (t2, l2, s2, f2) in zip(flat(got), flat(ref)):
        assert (t1, f1) == (t2, f2)
        assert torch.allclose(torch.tensor(l1), torch.tensor(l2), atol=1e-5)
        assert torch.allclose(torch.tensor(s1), torch.tensor(s2), atol=1e-5)


LONG_PROMPTS = [[(7 * i + 3 * j) % 59 + 1 for j in range(n)] for i, n in enumerate([3, 16, 17, 40, 5, 33, 9])]


@pytest.mark.parametrize("spec_k", [0, 2])
def test_chunk_prefill_equals_batched_prefill(model, spec_k):
    """The chunk prefill (fixed windows of CHUNK_ROWS prompts x CHUNK tokens, the CUDA-graph path) gives
    the batched prefill's tokens and log-probs, for prompts that end inside, at and past a window's edge,
    more prompts than a window's rows, and n samples; prompts too long for it take the batched forward."""
    params = mixed_params()
    ref = Engine(model, max_slots=8, max_len=64, spec_k=spec_k, prefill_graph=False).generate(LONG_PROMPTS, params)
    eng = Engine(model, max_slots=8, max_len=64, spec_k=spec_k, prefill_graph=True)
    assert eng.prefill.chunk_kv == 64 and eng.prefill.CHUNK == 16
    got = eng.generate(LONG_PROMPTS, params)
    # 8 slots: 7 requests (one with n = 2) in one admission = 2 groups x 3 windows, the group of 3 padded
    assert eng.prefill.forwards == 6
    assert_same(got, ref)
    for p, sp, cs in zip(LONG_PROMPTS, params, got):
        if sp.temperature == 0 and not sp.stop_ids:
            assert cs[0].token_ids == generate_oracle(model, p, sp.max_new_tokens)[0]

    short = Engine(model, max_slots=8, max_len=64, spec_k=spec_k, prefill_graph=True)
    short.prefill.chunk_kv = 32  # the 40-token prompt no longer fits a window: its admission is one batched forward
    assert_same(short.generate(LONG_PROMPTS[3:4], params[3:4]), ref[3:4])
    assert short.prefill.forwards == 1


def test_chunk_prefill_traces_as_one_static_graph(model):
    """On GPU the window function is compiled with static shapes and CUDA graphs; here dynamo traces it
    (``fullgraph``, its eager backend) once for every prompt length and gives the same outputs.  The
    first-token sampler traces as a whole graph too."""
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounter

    params = mixed_params()
    ref = Engine(model, max_slots=8, max_len=64, spec_k=1, prefill_graph=False).generate(LONG_PROMPTS, params)
    dynamo.reset()
    counter = CompileCounter()
    eng = Engine(model, max_slots=8, max_len=64, spec_k=1, prefill_graph=True)
    eng.prefill._window_fn = torch.compile(eng.prefill.window_impl, backend=counter, fullgraph=True, dynamic=False)
    first = CompileCounter()  # the first-token sampler: static shapes, the samples padded to a power of two
    eng._first_fn = torch.compile(first_tokens, backend=first, fullgraph=True, dynamic=False)
    eng._first_pad = True
    got = eng.generate(LONG_PROMPTS, params)
    assert counter.frame_count == 1 and first.frame_count == 1  # 8 samples in one admission, padded to 16
    assert_same(got, ref)


def test_single_prompt_admissions_run_one_row_windows(model):
    """A lone prompt is prefilled in one-row windows (its own static graph), and the first-token sampler pads
    its samples to a power of four (n = 1 -> 1; 2 and 3 -> 4): same outputs as the batched prefill."""
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounter

    params = mixed_params()
    params[2].n = 3  # padded to 4 first-token rows
    ref = Engine(model, max_slots=8, max_len=64, spec_k=2, prefill_graph=False)
    dynamo.reset()
    win, first = CompileCounter(), CompileCounter()
    eng = Engine(model, max_slots=8, max_len=64, spec_k=2, prefill_graph=True)
    eng.prefill._window_fn = torch.compile(eng.prefill.window_impl, backend=win, fullgraph=True, dynamic=False)
    eng._first_fn = torch.compile(first_tokens, backend=first, fullgraph=True, dynamic=False)
    eng._first_pad = True
    for p, sp in zip(LONG_PROMPTS, params):  # one request at a time: every admission holds one prompt
        assert_same(eng.generate([p], [sp]), ref.generate([p], [sp]))
    assert eng.prefill.forwards == sum(-(-len(p) // eng.prefill.CHUNK) for p in LONG_PROMPTS)
    assert win.frame_count == 1  # the one-row window only
    assert first.frame_count == 2  # sample counts 1 and 4
    assert [padded_count(n) for n in (1, 2, 4, 5, 16, 17, 256)] == [1, 4, 4, 16, 16, 64, 256]


# -- Triton kernels ------------------------------------------------------------------------------
def _kernel_checks(device: str, dtype: torch.dtype) -> None:
    """Kernels against references, then a whole engine with and without them."""
    from openmimo.infer import kernels as K

    def rel(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    assert K.enabled(torch.zeros(1, device=device, dtype=dtype))
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    for M in (1, 3, 20):
        for K_ in (256, 200):  # a K that no tile width divides
            x = rnd(M, K_)
            ws = [rnd(n, K_, scale=0.05) for n in (64, 32, 48)]
            bs = [rnd(w.shape[0]) for w in ws]
            for n_w in (1, 3):
                for bias in (None, bs[:n_w]):
                    y = K.small_m_linear(x, ws[:n_w], bias)
                    assert rel(y, K.small_m_linear_ref(x, ws[:n_w], bias)) < 1e-2
            y = K.gate_up_silu(x, ws[0], ws[0] * 0.5 + 0.01)
            assert rel(y, K.gate_up_silu_ref(x, ws[0], ws[0] * 0.5 + 0.01)) < 1e-2
    for B, H, n_kv, T, kv_len, target in ((1, 8, 2, 1, 96, 264), (3, 4, 2, 3, 160, 264), (2, 8, 8, 2, 64, 264),
                                          (2, 4, 2, 2, 600, 12), (1, 4, 1, 1, 640, 264)):
        D = 64
        q = rnd(B, H, T, D)
        kc, vc = rnd(B, n_kv, 700, D), rnd(B, n_kv, 700, D)
        pos = torch.randint(0, kv_len - T, (B, 1), generator=gen).to(device) + torch.arange(T, device=device)
        y = K.decode_attention(q, kc, vc, pos, kv_len, target_programs=target)
        assert rel(y, K.decode_attention_ref(q, kc, vc, pos, kv_len)) < 1e-2
    # The model's decode path through the kernels: same greedy tokens, close log-probs.
    model = build_model(tiny_cfg(hidden_size=256, intermediate_size=512), device=device, dtype=dtype, seed=1)
    outs = []
    for use in (False, True):
        e = Engine(model, max_slots=3, max_len=64, spec_k=1, compile=False)
        e.cache.use_kernels = use
        outs.append(e.generate(PROMPTS[:4], SamplingParams(max_new_tokens=10, temperature=0)))
    for x, y in zip(*outs):
        assert x[0].token_ids == y[0].token_ids
        assert max(abs(a - b) for a, b in zip(x[0].logprobs, y[0].logprobs)) < 5e-2


_INTERPRETER_SHIM = """
import triton.runtime.interpreter as I
_orig = I._patch_lang_tensor
def _patched(tensor, scope):  # numpy >= 2 refuses int() of the 1-element arrays the interpreter holds
    _orig(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
I._patch_lang_tensor = _patched
"""


def test_triton_kernels_equal_pytorch_paths():
    if torch.cuda.is_available() and importlib.util.find_spec("triton"):
        _kernel_checks("cuda", torch.bfloat16)
        return
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (CPU-only torch): the kernels cannot run here")
    # CPU: Triton's interpreter (float16: its bfloat16 dot products are wrong), in a fresh process
    # because the interpreter is chosen when the kernels are defined.
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = _INTERPRETER_SHIM + (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                                "import torch, test_engine_fast as t; t._kernel_checks('cpu', torch.float16)")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def test_decode_builds_no_autograd_graph():
    """A model whose parameters require grad (the RL trainer's generation copy) must not grow an
    autograd graph through the KV cache while decoding: that kept every step's activations alive
    and ran a GPU out of memory within seconds."""
    from openmimo.infer.engine import Engine, SamplingParams
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model

    cfg = MiMoConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = build_model(cfg, device="cpu", dtype=torch.float32, seed=0)
    assert all(p.requires_grad for p in model.parameters())
    eng = Engine(model, max_slots=2, max_len=48, compile=False)
    eng.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=8, temperature=1.0, seed=0))
    for name, buf in eng.cache.named_buffers():
        assert not buf.requires_grad and buf.grad_fn is None, name
