"""The collective weight broadcast (openmimo/rl/weight_sync.py): the bucket plan, and the trainer's weights to two
Ray rollout workers over a gloo group of their own, exact.  Its own file: it starts its own local Ray instance."""

import pytest
import torch

from openmimo.model.mimo import build_model
from openmimo.rl.weight_sync import plan
from test_engine import PROMPTS, tiny_cfg
from test_ray_rollout import PARAMS, assert_same, local, run_groups

ray = pytest.importorskip("ray")
from openmimo.rl.ray_rollout import RayRolloutBackend, cpu_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_cfg(), seed=1).eval()


def test_plan_packs_consecutive_parameters_under_the_bucket_size():
    assert plan([10, 10, 10, 30, 5], elem_bytes=2, bucket_bytes=40) == [[0, 1], [2], [3], [4]]
    assert plan([100], elem_bytes=4, bucket_bytes=8) == [[0]]  # a parameter larger than a bucket goes alone
    assert plan([], 2) == []
    assert sum(plan([3] * 1000, 4, 64), []) == list(range(1000))


def test_collective_weight_sync_gives_every_worker_the_trained_weights(model):
    """weight_sync="collective": the trainer broadcasts over a gloo group of its own (rank 0) and the workers;
    every worker then holds exactly the trained weights and samples as a local engine holding them."""
    b = RayRolloutBackend(model.config.to_hf_dict(), model.state_dict(), PARAMS, workers=2, seed=11,
                          engine_kwargs={"max_slots": 4, "max_len": 48}, weight_sync="collective")
    try:
        trained = build_model(tiny_cfg(), seed=3).eval()
        b.update_weights(trained)
        want = cpu_state_dict(trained)
        for sd in ray.get([w.state_dict.remote() for w in b.workers]):
            assert all(torch.equal(sd[k], want[k]) for k in sd)
        groups = [(500 + i, p) for i, p in enumerate(PROMPTS[:4])]
        assert_same(run_groups(b, groups), local(trained, groups))
    finally:
        b.close()
