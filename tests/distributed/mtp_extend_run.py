"""Run under torchrun by tests/test_rl_sharded.py: `openmimo mtp-extend` on every rank (FSDP2, gloo, CPU).

    torchrun --nproc_per_node 2 tests/distributed/mtp_extend_run.py ROOT OUT MAX_STEPS [resume]

ROOT holds ``base/`` (a checkpoint with one MTP layer) and ``shards/`` (its tokenised text).
"""

import json
import sys
from pathlib import Path

import torch

from openmimo.config import load
from openmimo.train.mtp_extend import MTPExtendConfig, main


def config(root: Path, out: Path, max_steps: int) -> MTPExtendConfig:
    return load(MTPExtendConfig, None, [f"init={root / 'base'}", "num_nextn_predict_layers=2",
                                        f"data.sources={json.dumps({'web': str(root / 'shards')})}",
                                        "stages=[{tokens: 1024, seq_len: 32, mixture: {web: 1.0}}]",
                                        "batch.batch_size=8", "batch.micro_batch_size=2", "train.device=cpu",
                                        "train.ckpt_every=1", f"train.max_steps={max_steps}", f"train.out_dir={out}"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    root, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    main(config(root, out, steps), resume=len(sys.argv) > 4 and sys.argv[4] == "resume")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
