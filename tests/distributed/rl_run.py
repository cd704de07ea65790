"""Run under torchrun by tests/test_rl_sharded.py: `openmimo rl` (RLRun) on every rank, with a deterministic
stand-in reward (reward 1 when a response's first token id is even), so a random tiny model gets updates.

    torchrun --nproc_per_node 2 tests/distributed/rl_run.py ROOT OUT STEPS [resume]

ROOT holds ``base/`` (a checkpoint) and ``train.jsonl`` (tests/conftest.py's tiny_math_ckpt).  After training,
each rank checks that its engine holds the trained weights; rank 0 writes them to ``OUT/weights.pt``.
"""

import sys
import warnings
from concurrent.futures import Future
from pathlib import Path

import torch

from openmimo.config import load
from openmimo.rl.config import RLConfig
from openmimo.rl.trainer import RLRun


def config(root: Path, out: Path, steps: int) -> RLConfig:
    return load(RLConfig, None, [f"train.model_path={root / 'base'}", f"data.train_path={root / 'train.jsonl'}",
                                 f"data.val_path={root / 'train.jsonl'}", "data.val_problems=3", f"train.out_dir={out}",
                                 f"train.max_steps={steps}", "train.eval_every=0", "train.ckpt_every=1", "train.val_n=2",
                                 "rollout.n=4", "rollout.batch_groups=4", "rollout.max_launch_factor=2",
                                 "gen.max_new_tokens=6", "gen.max_slots=16", "gen.max_len=64", "actor.lr=0.01",
                                 "actor.ppo_mini_batch_size=2", "train.reward_workers=1", "train.device=cpu"])


def score(problem, fin):
    f = Future()
    f.set_result(float(fin.token_ids[0] % 2 == 0))
    return f


def main() -> None:
    root, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    run = RLRun(config(root, out, steps), resume=resume)
    run.rewards.score_fn = score
    try:
        run.train()
        weights = run.weights()
        for name, p in run.engine.model.named_parameters():
            assert torch.equal(p, weights[name]), f"rank {run.rt.rank}: engine weight {name} is not the trained one"
        if run.rt.is_main:
            torch.save({k: v.clone() for k, v in weights.items()}, out / "weights.pt")
    finally:
        run.close()
        if run.rt.distributed:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
