"""Engine.sleep() / wake(): the KV cache and the MTP hidden-state buffer are freed while idle (RL's update on the
same device) and allocated again; outputs after wake() equal those before; a compiled (block-scope) engine
compiles nothing again; an engine with work, or a step-scope compiled one, refuses to sleep."""

import json

import pytest
import torch

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.mimo import build_model
from test_engine import PROMPTS, tiny_cfg
from test_engine_fast import flat, mixed_params
from test_engine_regions import counted


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1)


def _check_sleep_cycle(eng):
    params = mixed_params()[:5]
    before = eng.generate(PROMPTS[:5], params)
    eng.sleep(offload_weights=True)
    assert eng.asleep and all(t.numel() == 0 for t in eng.cache.keys + eng.cache.values)
    assert eng.h0.numel() == 0 and eng.prefill.h0 is eng.h0
    with pytest.raises(RuntimeError, match="asleep"):
        eng.step()
    assert eng.sleep() == 0  # twice: nothing more to free
    eng.wake()
    assert not eng.asleep and eng.cache.keys[0].shape == (eng.slots, eng.cfg.num_key_value_heads, eng.capacity,
                                                          eng.cfg.head_size)
    assert eng.h0.shape == (eng.slots, eng.capacity, eng.cfg.hidden_size) and eng.prefill.h0 is eng.h0
    after = eng.generate(PROMPTS[:5], params)
    assert flat(after) == flat(before)


def test_sleep_frees_and_wake_restores_an_eager_engine(model):
    _check_sleep_cycle(Engine(model, max_slots=4, max_len=48, spec_k=1))


def test_a_block_scope_engine_sleeps_and_compiles_nothing_after_wake(model, monkeypatch):
    eng, counter = counted(monkeypatch, lambda: Engine(model, max_slots=4, max_len=48, spec_k=1, compile=True,
                                                       compile_scope="block", kv_buckets=False))
    eng.generate(PROMPTS[:5], mixed_params()[:5])
    traced = counter.frame_count
    _check_sleep_cycle(eng)
    assert counter.frame_count == traced


def test_sleep_refuses_a_busy_engine_and_a_step_scope_compiled_one(model):
    eng = Engine(model, max_slots=2, max_len=48)
    eng.add_request(PROMPTS[0], SamplingParams(max_new_tokens=20, temperature=0))
    eng.step()
    with pytest.raises(RuntimeError, match="idle engine"):
        eng.sleep()
    while eng.has_unfinished():
        eng.step()
    eng.sleep()
    eng.wake()
    compiled = Engine(model, max_slots=2, max_len=48, compile=True, compile_scope="step")  # nothing compiles yet
    with pytest.raises(RuntimeError, match="compile_scope='block'"):
        compiled.sleep()


def test_sleep_keeps_pending_abort_outputs_for_the_next_step(model):
    eng = Engine(model, max_slots=2, max_len=48)
    rid = eng.add_request(PROMPTS[1], SamplingParams(max_new_tokens=20, temperature=0))
    eng.step()
    eng.abort(rid)
    eng.sleep()
    eng.wake()
    outs = eng.step()
    assert [o.finish_reason for o in outs] == ["abort"] and not eng.has_unfinished()
    assert torch.equal(eng.cache.keys[0], torch.zeros_like(eng.cache.keys[0]))


def test_rl_run_releases_the_engine_during_updates_and_matches_a_run_that_does_not(tiny_math_ckpt, tmp_path):
    """gen.release_during_update: the engine sleeps through every update and wakes for the weight sync; the run's
    weights equal those of a run that keeps the engine (same seeds, same rollouts)."""
    from test_rl_trainer import _cfg, _train

    from openmimo.config import load
    from openmimo.rl.config import RLConfig

    _, keep = _train(_cfg(tiny_math_ckpt, tmp_path / "keep", 2))
    base = _cfg(tiny_math_ckpt, tmp_path / "release", 2)
    cfg = load(RLConfig, None, [f"{sec}.{k}={v}" for sec in ("train", "data", "rollout", "gen", "actor")
                                for k, v in vars(getattr(base, sec)).items() if not isinstance(v, (list, dict))]
               + ["gen.release_during_update=true"])
    run, released = _train(cfg)
    assert torch.equal(keep, released)
    lines = [json.loads(x) for x in (tmp_path / "release" / "metrics.jsonl").read_text().splitlines()]
    assert sum("gen/released_gb" in x for x in lines) == 2  # it slept through both updates
    assert run.engine.compile_scope == "block" and not run.engine.asleep
