"""RL's update sharded over torchrun ranks (FSDP2, gloo on CPU) equals the one-rank update, and the weight sync
gives every rank's engine exactly the trained weights (tests/distributed/rl_update.py checks that inside each rank)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openmimo.config import ConfigError
from openmimo.model.mimo import build_model
from openmimo.rl.sharded import equalize, per_rank
from openmimo.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed" / "rl_update.py"
RUN_SCRIPT = ROOT / "tests" / "distributed" / "rl_run.py"
MTP_SCRIPT = ROOT / "tests" / "distributed" / "mtp_extend_run.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(world: int, script: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
           str(_free_port()), str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _run(world: int, out: Path, micro: int) -> dict:
    _torchrun(world, SCRIPT, out, micro)
    return torch.load(out)


@pytest.fixture(scope="module")
def updates(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl_sharded")
    # the micro-batch split differs too (5, 3, 2 sequences per forward): the global token mean does not see it
    return {w: _run(w, tmp / f"w{w}.pt", micro) for w, micro in ((1, 5), (2, 3), (4, 2))}


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_update_equals_one_rank(updates, world):
    one, many = updates[1], updates[world]
    assert len(one["stats"]) == len(many["stats"]) == 2  # two optimizer steps of 4 groups each
    for a, b in zip(one["stats"], many["stats"]):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-5), k
    initial = build_model(_cfg(), seed=0).state_dict()
    moved = max((one["weights"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3  # the update did change the weights, by far more than the tolerance below
    for k, v in one["weights"].items():
        torch.testing.assert_close(many["weights"][k], v, rtol=1e-4, atol=2e-5, msg=k)


def _cfg():
    sys.path.insert(0, str(SCRIPT.parent))
    from rl_update import CFG
    return CFG


def test_batch_split_and_group_counts():
    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32, rank=0, world_size=4)
    assert per_rank(32, rt, "actor.ppo_mini_batch_size") == 8
    with pytest.raises(ConfigError, match="actor.ppo_mini_batch_size"):
        per_rank(6, rt, "actor.ppo_mini_batch_size")
    one = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    assert equalize([1, 2, 3], one) == ([1, 2, 3], 0)


def test_two_rank_rl_run_trains_exports_and_resumes_exactly(tiny_math_ckpt, tmp_path):
    """`openmimo rl` on 2 ranks (FSDP2 actor, an engine and a prompt stream per rank): 2 steps in one go equal
    1 step then --resume, bit for bit; the export and the per-rank checkpoint files are there."""
    import json

    _torchrun(2, RUN_SCRIPT, tiny_math_ckpt, tmp_path / "a", 2)
    _torchrun(2, RUN_SCRIPT, tiny_math_ckpt, tmp_path / "b", 1)
    proc = _torchrun(2, RUN_SCRIPT, tiny_math_ckpt, tmp_path / "b", 2, "resume")
    assert proc.stdout.count("resumed from") == 1  # rank 0 speaks for the run
    a, b = torch.load(tmp_path / "a" / "weights.pt"), torch.load(tmp_path / "b" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = build_model_from_folder(tiny_math_ckpt / "base")
    assert any(not torch.equal(a[k], v) for k, v in base.items())
    steps = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    trained = [x for x in steps if "actor/updates" in x]
    # 4 groups per step over 2 ranks, 2 groups per optimizer step: 2 updates a step, rewards averaged over ranks
    assert len(trained) == 2 and all(x["actor/updates"] == 2 and 0 <= x["reward_mean"] <= 1 for x in trained)
    assert all(x["rollout/groups_dropped_to_equalize"] == 0 for x in trained)
    assert (tmp_path / "a" / "final" / "config.json").is_file()
    ckpt = tmp_path / "a" / "checkpoints" / "step_00000002"
    assert {p.name for p in ckpt.iterdir()} == {"state.pt", "rng_rank0.pt", "rng_rank1.pt"}


def build_model_from_folder(path: Path) -> dict:
    from openmimo.model.hf import load_model

    return load_model(path, dtype=torch.float32).state_dict()


def test_two_rank_mtp_extend_resumes_exactly_and_exports(tiny_mtp_base, tmp_path):
    """mtp-extend on the sharded path: 2 ranks, 2 steps then --resume == 4 steps, bit for bit; the export has K layers."""
    from openmimo.model.hf import load_model

    _torchrun(2, MTP_SCRIPT, tiny_mtp_base, tmp_path / "full", 0)
    _torchrun(2, MTP_SCRIPT, tiny_mtp_base, tmp_path / "split", 2)
    proc = _torchrun(2, MTP_SCRIPT, tiny_mtp_base, tmp_path / "split", 0, "resume")
    assert proc.stdout.count("resumed from") == 1
    full, split = load_model(tmp_path / "full" / "final"), load_model(tmp_path / "split" / "final")
    assert full.config.num_nextn_predict_layers == 2
    a, b = full.state_dict(), split.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_model(tiny_mtp_base / "base").state_dict()
    assert torch.equal(a["model.layers.0.mlp.gate_proj.weight"], base["model.layers.0.mlp.gate_proj.weight"])  # frozen
    assert not torch.equal(a["model.mtp_layers.1.mlp.gate_proj.weight"], a["model.mtp_layers.0.mlp.gate_proj.weight"])


def test_cpu_offload_needs_cuda():
    from openmimo.model.parallel import parallelize

    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(ConfigError, match="train.cpu_offload"):
        parallelize(build_model(_cfg(), seed=0), rt, offload=True)
