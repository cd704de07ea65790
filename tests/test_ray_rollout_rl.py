"""`openmimo rl` with its rollout on Ray workers (gen.backend=ray): updates happen, the engines' log-probs are the
trainer's, and every worker holds the trained weights after the run.  Its own file: the run starts its own local
Ray instance, after test_ray_rollout.py's has shut down."""

import json

import pytest
import torch

from openmimo.config import load
from openmimo.rl.config import RLConfig
from openmimo.rl.trainer import RLRun
from test_rl_trainer import _cfg, _fake_rewards, _nowarn

ray = pytest.importorskip("ray")
from openmimo.rl.ray_rollout import cpu_state_dict  # noqa: E402


def test_rl_run_with_ray_rollout_workers_syncs_their_weights(tiny_math_ckpt, tmp_path):
    """`openmimo rl` with gen.backend=ray and the collective weight sync: two steps with updates, the first step's
    engine log-probs equal the trainer's (ratio 1), and afterwards every worker's weights are the trained ones."""
    base = _cfg(tiny_math_ckpt, tmp_path / "ray", 2)
    cfg = load(RLConfig, None, [f"{sec}.{k}={v}" for sec in ("train", "data", "rollout", "gen", "actor")
                                for k, v in vars(getattr(base, sec)).items() if not isinstance(v, (list, dict))]
               + ["gen.backend=ray", "gen.workers=2", "gen.max_slots=8", "gen.weight_sync=collective"])
    run = RLRun(cfg)
    _fake_rewards(run)
    try:
        with _nowarn():
            run.train()
        lines = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
        steps = [x for x in lines if "rollout/time_s" in x]
        assert len(steps) == 2 and all(s["actor/updates"] >= 1 for s in steps)
        assert abs(steps[0]["actor/ratio_min"] - 1) < 1e-4 and abs(steps[0]["actor/ratio_max"] - 1) < 1e-4
        trained = cpu_state_dict(run.model)
        for sd in ray.get([w.state_dict.remote() for w in run.backend.workers]):
            assert all(torch.equal(sd[k], trained[k]) for k in sd)
        assert run.engine is None and run.backend.slots == 16
    finally:
        run.close()
