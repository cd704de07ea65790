"""AsyncEngine's hand-over of outputs to asyncio consumers: the tokens are the engine's own, and one engine step
wakes a consumer's event loop once, however many of its requests the step advanced."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from openmimo.infer.async_engine import AsyncEngine, LoopQueue
from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model

PROMPTS = [[3 + i, 5, 7 + (i % 3), 11] for i in range(12)]
NEW = 12


def make_engine() -> Engine:
    cfg = MiMoConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=128, num_nextn_predict_layers=0,
                     initializer_range=0.3, eos_token_id=None)
    return Engine(build_model(cfg, seed=0).eval(), max_slots=16, max_len=64, spec_k=0, compile=False)


@pytest.fixture(scope="module")
def oracle():
    params = SamplingParams(max_new_tokens=NEW, temperature=0.0)
    with torch.no_grad():
        return [outs[0].token_ids for outs in make_engine().generate(PROMPTS, params)]


async def _stream_all(aengine: AsyncEngine, loop_calls: list) -> list[list[int]]:
    loop = asyncio.get_running_loop()
    real = loop.call_soon_threadsafe

    def counting(cb, *args):
        loop_calls.append(cb)
        return real(cb, *args)
    loop.call_soon_threadsafe = counting
    params = SamplingParams(max_new_tokens=NEW, temperature=0.0)
    rids, streams = aengine.stream_many(PROMPTS, params)

    async def collect(stream):
        return [t async for o in stream for t in o.token_ids]
    try:
        return list(await asyncio.gather(*(collect(s) for s in streams)))
    finally:
        loop.call_soon_threadsafe = real


def test_streams_get_the_engine_tokens_with_one_loop_wakeup_per_step(oracle):
    engine = make_engine()
    steps = []
    step = engine.step

    def counted_step():
        steps.append(1)
        return step()
    engine.step = counted_step
    aengine = AsyncEngine(engine)
    try:
        calls: list = []
        got = asyncio.run(_stream_all(aengine, calls))
    finally:
        aengine.shutdown()
    assert got == oracle
    # 12 requests x 12 tokens through one loop: at most one hand-over per engine step (not one per token)
    assert 0 < len(calls) <= len(steps) < len(PROMPTS) * NEW


def test_loop_queue_called_directly_hands_over_one_output():
    async def main():
        q: asyncio.Queue = asyncio.Queue()
        sink = LoopQueue(asyncio.get_running_loop(), q)
        sink("a")
        sink("b")
        return [await q.get(), await q.get()]
    assert asyncio.run(main()) == ["a", "b"]


def test_outputs_for_a_closed_loop_are_dropped_without_harm():
    loop = asyncio.new_event_loop()
    q: asyncio.Queue = asyncio.Queue()
    loop.close()
    delivered = []
    AsyncEngine._deliver([(LoopQueue(loop, q), "x"), (delivered.append, "y")])
    assert delivered == ["y"] and q.empty()


def test_submit_and_abort_do_not_wait_for_a_running_step(oracle):
    """While the engine thread is inside a step, submit/abort from another thread return at once; the queued
    request then runs to the oracle's tokens and the aborted one ends with "abort"."""
    engine = make_engine()
    entered, release = threading.Event(), threading.Event()
    step = engine.step

    def blocking_step():
        entered.set()
        release.wait(30)
        return step()
    engine.step = blocking_step
    aengine = AsyncEngine(engine)
    got: dict = {}
    try:
        params = SamplingParams(max_new_tokens=NEW, temperature=0.0)
        first = aengine.submit(PROMPTS[0], params, lambda o: got.setdefault("first", []).append(o))
        assert entered.wait(30)  # the engine thread is now held inside step()
        returned = threading.Event()

        def other():
            rid = aengine.submit(PROMPTS[1], params, lambda o: got.setdefault("second", []).append(o))
            aengine.abort(first)
            got["rid"] = rid
            returned.set()
        threading.Thread(target=other, daemon=True).start()
        assert returned.wait(10), "submit/abort waited for the engine step"
        assert not release.is_set()
        release.set()
        for _ in range(300):
            if got.get("second") and got["second"][-1].finish_reason and got["first"][-1].finish_reason:
                break
            threading.Event().wait(0.05)
        assert [t for o in got["second"] for t in o.token_ids] == oracle[1]
        assert got["first"][-1].finish_reason == "abort"
        assert not aengine.abort(got["rid"])  # finished: nothing to abort
    finally:
        release.set()
        aengine.shutdown()
