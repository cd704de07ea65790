"""Start-up warm-up: every compiled variant is built before the server says it is ready, nothing compiles on
the request path, a variant not built yet is served by the eager path (same outputs) and built once the engine
is idle, and /health and /v1/* report the warm-up (503) until it is done.

On the CPU the engine's torch.compile calls are routed to dynamo with a counting backend (real tracing, no
code generation), so "compiled" means traced by dynamo and "nothing compiles" means no new dynamo frame."""

import threading
import time

import httpx
import openai
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.engine import Engine, SamplingParams
from openmimo.infer.server import create_app, start_in_thread
from openmimo.infer.variants import Variants
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.tokenizer import train_tokenizer
from test_engine import PROMPTS, tiny_cfg
from test_engine_fast import flat, mixed_params
from test_engine_regions import counted


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1)


def counted_engine(model, monkeypatch, **kw) -> tuple[Engine, CompileCounter]:
    """A compiled engine on the CPU whose torch.compile calls trace with dynamo into a counting backend."""
    return counted(monkeypatch, lambda: Engine(model, compile=True, prefill_graph=True, compile_on_request=False,
                                               **kw))


def test_variants_registry():
    v = Variants(enabled=True)
    assert not v.use(("decode", "greedy", 16)) and v.pending() == [("decode", "greedy", 16)]
    v.ready.add(("decode", "greedy", 16))
    assert v.use(("decode", "greedy", 16)) and v.pending() == [] and v.eager_calls == 1
    v.use(("first", 4))
    v.failed.add(("first", 4))
    assert v.pending() == []
    off = Variants(enabled=False)  # an uncompiled engine: the eager function is the path
    assert off.use(("decode", "sample", 64)) and off.eager_calls == 0


def test_warmup_builds_every_variant_and_nothing_compiles_after(model, monkeypatch):
    params = mixed_params()[:4] + mixed_params()[5:6]  # greedy, sampled, filtered, stopped, n = 2
    prompts = PROMPTS[:5]
    ref = Engine(model, max_slots=4, max_len=48, spec_k=1, kv_buckets=False).generate(prompts, params)
    eng, counter = counted_engine(model, monkeypatch, max_slots=4, max_len=48, spec_k=1, kv_buckets=False,
                                  compile_scope="step")  # step scope: one dynamo graph per variant
    keys = eng.compiled_variants()
    assert keys == [("decode", m, eng.capacity) for m in ("greedy", "sample", "filter")] + [
        ("window", 1), ("window", 4), ("first", 1), ("first", 4)]
    # before the warm-up: served by the eager paths, nothing traced, the needed variants noted
    before = eng.generate(prompts, params)
    assert counter.frame_count == 0 and eng.variants.eager_calls > 0
    assert {k[0] for k in eng.variants.pending()} == {"decode", "window", "first"}
    lines = []
    times = eng.warmup(log=lines.append)
    assert set(times) == set(keys) and eng.variants.ready == set(keys)
    assert [line.split(":")[0] for line in lines[:-1]] == [f"warm-up {i}/{len(keys)}" for i in range(1, len(keys) + 1)]
    assert lines[-1].startswith(f"warm-up done: {len(keys)} compiled variants")
    traced = counter.frame_count
    assert traced == len(keys)  # one dynamo graph per variant
    eager = eng.variants.eager_calls
    after = eng.generate(prompts, params)
    assert counter.frame_count == traced  # the request path traced nothing
    assert eng.variants.eager_calls == eager  # ... and never fell back
    for a, b, r in zip(flat(before), flat(after), flat(ref)):
        assert a[0] == b[0] == r[0] and a[3] == b[3] == r[3]  # tokens and finish reasons
        assert torch.allclose(torch.tensor(b[1]), torch.tensor(r[1]), atol=1e-5)


def test_length_buckets_are_all_prepared(model):
    eng = Engine(model, max_slots=2, max_len=90, compile=False)
    assert eng.compiled_variants() == []  # uncompiled: nothing to build
    assert eng.kv_lengths() == [16, 32, 64, eng.capacity]
    seen = set()
    for n in range(1, eng.max_len):  # every length a sequence can reach maps to a listed bucket
        eng.running = {0: type("S", (), {"req": type("R", (), {"prompt_ids": [1] * n})(), "tokens": []})()}
        seen.add(eng._kv_bucket())
        seen.add(eng._kv_bucket(inflight=True))
    eng.running = {}
    assert seen <= set(eng.kv_lengths())


def test_a_variant_not_built_is_served_eagerly_then_built_when_idle(model, monkeypatch):
    eng, counter = counted_engine(model, monkeypatch, max_slots=4, max_len=64, spec_k=0, kv_buckets=False)
    eng.warmup(keys=[k for k in eng.compiled_variants() if k[:2] != ("decode", "sample")])
    traced = counter.frame_count
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0, seed=3)
    ref = Engine(model, max_slots=4, max_len=64, kv_buckets=False).generate([PROMPTS[1]], sampled)
    lines = []
    aeng = AsyncEngine(eng, log=lines.append)
    try:
        done = threading.Event()
        got = []
        aeng.submit(PROMPTS[1], sampled, lambda o: (got.append(o), o.finish_reason and done.set()))
        assert done.wait(30)
        assert [t for o in got for t in o.token_ids] == ref[0][0].token_ids
        key = ("decode", "sample", eng.capacity)
        deadline = time.time() + 30
        while key not in eng.variants.ready and time.time() < deadline:
            time.sleep(0.05)
        assert key in eng.variants.ready and counter.frame_count == traced + 1
        assert any("decode step, sample sampling" in line for line in lines)
    finally:
        aeng.shutdown()


TEXTS = ["the cat sat on the mat", "two plus two is four", "a quick brown fox jumps", "hello world"] * 20


def test_server_reports_warmup_until_every_variant_is_built(monkeypatch):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=0, initializer_range=0.3, eos_token_id=tok.eos_id)
    model = build_model(cfg, seed=0)
    eng, counter = counted_engine(model, monkeypatch, max_slots=4, max_len=64, kv_buckets=False)
    gate = threading.Event()
    real_prepare = eng.prepare

    def held_prepare(key):  # the warm-up waits here until the test has seen the server warming up
        assert gate.wait(60)
        real_prepare(key)

    eng.prepare = held_prepare
    lines = []
    aeng = AsyncEngine(eng, warmup=True, log=lines.append)
    server, url = start_in_thread(create_app(aeng, tok, "tiny"))
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    try:
        r = httpx.get(url + "/health")
        n = len(eng.compiled_variants())
        assert r.status_code == 503 and r.json() == {"status": "warming up", "compiled_variants": f"0/{n}"}
        with pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0)
        assert e.value.status_code == 503 and e.value.body["code"] == "warming_up"
        assert httpx.get(url + "/v1/models").status_code == 503
        assert "openmimo_compiled_variants_ready 0.0" in httpx.get(url + "/metrics").text
        gate.set()
        assert aeng.ready.wait(60)
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        assert len([line for line in lines if line.startswith("warm-up ") and "/" in line.split(":")[0]]) == n
        traced = counter.frame_count
        def graphs_total():  # dynamo's own count of graphs built in this process
            line = [x for x in httpx.get(url + "/metrics").text.splitlines()
                    if x.startswith("openmimo_compiled_graphs_total ")]
            return float(line[0].split()[1])

        graphs = graphs_total()
        assert graphs >= traced
        for temp in (0, 1.0):
            r = client.completions.create(model="tiny", prompt="the cat", max_tokens=6, temperature=temp, n=2)
            assert all(c.finish_reason in ("stop", "length") for c in r.choices)
        assert counter.frame_count == traced and eng.variants.eager_calls == 0
        assert f"openmimo_compiled_variants_ready {float(n)}" in httpx.get(url + "/metrics").text
        assert graphs_total() == graphs
    finally:
        gate.set()
        server.should_exit = True
        aeng.shutdown()
