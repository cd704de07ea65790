"""Run under torchrun by tests/test_rl_sharded.py: one RL update of a fixed batch on WORLD_SIZE ranks (gloo, CPU).

Every rank builds the same tiny model and the same global batch of groups, takes its share of each mini-batch
(:mod:`openmimo.rl.sharded`'s layout), runs ``Trainer.step`` with the RL objective (the actor FSDP2-sharded when
WORLD_SIZE > 1), then copies the gathered weights into a rollout engine and checks them.  Rank 0 writes the
per-step stats and the full weights after the update to ``OUT``.

    torchrun --nproc_per_node 2 tests/distributed/rl_update.py OUT [MICRO]
"""

import sys

import torch

from openmimo.infer.engine import Engine
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.model.parallel import parallelize
from openmimo.rl.batching import collate
from openmimo.rl.loss import RLObjective
from openmimo.rl.sharded import gathered_state_dict, per_rank
from openmimo.runtime import init_runtime
from openmimo.train.loop import Trainer, build_optimizer

CFG = MiMoConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
                 num_nextn_predict_layers=1, torch_dtype="float32")
GROUPS, N, MINI = 8, 4, 4  # groups in the batch, samples per group, groups per optimizer step


def batch() -> list[list[dict]]:
    """GROUPS groups of N records (prompt + response ids, response mask, old log-probs, advantage)."""
    g = torch.Generator().manual_seed(7)
    groups = []
    for _ in range(GROUPS):
        prompt = torch.randint(3, CFG.vocab_size, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        recs = []
        for _ in range(N):
            resp = torch.randint(3, CFG.vocab_size, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
            old = (-torch.rand(len(resp), generator=g) * 4).tolist()
            recs.append({"ids": prompt + resp, "mask": [0] * len(prompt) + [1] * len(resp),
                         "old": [0.0] * len(prompt) + old, "adv": float(torch.randn(1, generator=g))})
        groups.append(recs)
    return groups


def main() -> None:
    out, micro = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    rt = init_runtime("cpu", "float32")
    model = build_model(CFG, seed=0)
    model.model.mtp_layers.requires_grad_(False)
    parallelize(model, rt)
    trainer = Trainer(model, build_optimizer(model, 1e-2, (0.9, 0.999), 1e-8, 0.1, rt.device), rt, grad_clip=1.0)
    objective = RLObjective(0.2, 0.28, "token-mean")
    groups, local = batch(), per_rank(MINI, rt, "actor.ppo_mini_batch_size")
    stats = []
    for start in range(0, GROUPS, MINI):
        mine = groups[start + rt.rank * local: start + (rt.rank + 1) * local]
        seqs = [r for grp in mine for r in grp]
        mbs = [collate(seqs[j:j + micro], 0) for j in range(0, len(seqs), micro)]
        st = trainer.step(mbs, objective, 1e-2)
        stats.append({k: v for k, v in st.items() if k != "step_time_s"})
    weights = gathered_state_dict(model)
    engine = Engine(build_model(CFG, seed=123), max_slots=2, max_len=32)
    engine.update_weights(weights)
    for name, p in engine.model.named_parameters():
        assert torch.equal(p, weights[name]), f"rank {rt.rank}: engine weight {name} differs from the trained one"
    if rt.is_main:
        torch.save({"stats": stats, "weights": weights}, out)
    if rt.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
