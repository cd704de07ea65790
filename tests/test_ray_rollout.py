"""RayRolloutBackend (rollout workers on Ray, one engine per actor): the same samples as the local backend for the
same seeds, whichever worker runs a group; the weights broadcast gives every worker exactly the trainer's weights;
abort drops a group for good and the sample accounting balances."""

import pytest
import torch

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.mimo import build_model
from openmimo.rl.backends import EngineBackend
from test_engine import PROMPTS, tiny_cfg

ray = pytest.importorskip("ray")
from openmimo.rl.ray_rollout import RayRolloutBackend, cpu_state_dict  # noqa: E402

PARAMS = SamplingParams(max_new_tokens=10, temperature=1.0)


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1).eval()


@pytest.fixture(scope="module")
def backend(model):
    try:  # a private local Ray instance with two engine actors: start-up is slow, share it
        b = RayRolloutBackend(model.config.to_hf_dict(), model.state_dict(), PARAMS, workers=2, seed=11,
                              engine_kwargs={"max_slots": 4, "max_len": 48})
    except (RuntimeError, ConnectionError, TimeoutError) as e:  # a sandbox where Ray's processes cannot start
        pytest.skip(f"a local Ray instance cannot start here: {e}")
    yield b
    b.close()


def run_groups(backend, groups, n=2):
    """Submit every group, poll until nothing is active; {(gid, index): (tokens, logprobs, finish reason)}."""
    for gid, prompt in groups:
        backend.submit(gid, prompt, n)
    out = {}
    while backend.active():
        for f in backend.poll():
            assert (f.gid, f.index) not in out
            out[(f.gid, f.index)] = (f.token_ids, f.logprobs, f.finish_reason)
    return out


def local(model, groups, params=PARAMS, n=2):
    return run_groups(EngineBackend(Engine(model, max_slots=4, max_len=48, seed=11), params, seed=11), groups, n)


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key][0] == want[key][0] and got[key][2] == want[key][2], key
        assert got[key][1] == pytest.approx(want[key][1], abs=1e-5)


def test_workers_give_the_local_backends_samples(model, backend):
    groups = list(enumerate(PROMPTS[:6]))
    got = run_groups(backend, groups)
    assert len(got) == 12 and backend.slots == 8
    assert_same(got, local(model, groups))
    backend.params = SamplingParams(max_new_tokens=6, temperature=0)  # a swap reaches the workers (validation)
    try:
        assert_same(run_groups(backend, [(100 + g, p) for g, p in groups[:3]]),
                    local(model, [(100 + g, p) for g, p in groups[:3]], backend.params))
    finally:
        backend.params = PARAMS


def test_weights_broadcast_gives_every_worker_the_trained_weights(model, backend):
    trained = build_model(tiny_cfg(), seed=2).eval()  # other weights, as after an update
    backend.update_weights(trained)
    try:
        groups = [(200 + i, p) for i, p in enumerate(PROMPTS[:4])]  # two groups per worker
        got = run_groups(backend, groups)
        assert_same(got, local(trained, groups))
        assert [v[0] for v in got.values()] != [v[0] for v in local(model, groups).values()]  # the weights matter
        sd = cpu_state_dict(trained)
        assert all(torch.equal(sd[k], v) for k, v in trained.state_dict().items())
    finally:
        backend.update_weights(model)
    assert_same(run_groups(backend, [(300, PROMPTS[0])]), local(model, [(300, PROMPTS[0])]))


def test_abort_drops_the_group_and_the_accounting_balances(backend):
    long = SamplingParams(max_new_tokens=40, temperature=1.0)
    backend.params = long
    try:
        for gid in (400, 401, 402):
            backend.submit(gid, PROMPTS[gid - 400], 2)
        first = backend.poll()
        tokens, busy = backend.abort(401)
        assert tokens >= 0 and busy >= 0.0
        assert backend.abort(401) == (0, 0.0)  # twice: nothing left
        seen = [(f.gid, f.index) for f in first]
        while backend.active():
            seen += [(f.gid, f.index) for f in backend.poll()]
        after_abort = [g for g, _ in seen[len(first):]]
        assert 401 not in after_abort
        assert sorted(k for k in seen if k[0] != 401) == [(g, i) for g in (400, 402) for i in range(2)]
        assert backend.active() == 0 and sum(backend._load) == 0 and not backend._inflight
    finally:
        backend.params = PARAMS



def test_rollout_backend_config_is_checked():
    from openmimo.config import ConfigError, load
    from openmimo.rl.config import RLConfig

    with pytest.raises(ConfigError, match="key 'gen.backend' must be local or ray"):
        load(RLConfig, None, ["train.model_path=x", "gen.backend=vllm"])
    with pytest.raises(ConfigError, match="gen.workers"):
        load(RLConfig, None, ["train.model_path=x", "gen.backend=ray", "gen.workers=0"])
    with pytest.raises(ConfigError, match="gen.compile_scope"):
        load(RLConfig, None, ["train.model_path=x", "gen.compile_scope=layers"])
    cfg = load(RLConfig, None, ["train.model_path=x", "gen.backend=ray", "train.ray_address=auto"])
    assert cfg.gen.backend == "ray" and cfg.train.ray_address == "auto"  # a cluster for the rollout workers

