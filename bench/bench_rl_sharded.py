"""One RL iteration at a MiMo shape (random weights): rollout, update and weight sync, timed by wall clock.

    python bench/bench_rl_sharded.py --shape 1.3b                          # one GPU
    torchrun --nproc-per-node 8 bench/bench_rl_sharded.py --shape 7b --groups 64 --samples 16 --mini 32
    torchrun --nproc-per-node 2 bench/bench_rl_sharded.py --shape tiny     # CPU (gloo) dry run

The layout is `openmimo rl`'s under torchrun (openmimo.rl.sharded): every rank holds one FSDP2 shard of the fp32
actor (bf16 autocast on GPU) and a whole rollout engine; ``--groups`` and ``--mini`` are global and split over
the ranks.  Per iteration: each rank's engine samples ``--samples`` responses of exactly ``--new-tokens`` tokens (no stop
token) for its ``groups / ranks`` random prompts of ``--prompt-len`` tokens; rewards are a seeded coin per
response (a stand-in: the reward services are measured in bench_judge.py and bench_math_reward.py); the update is
``ppo_epochs = 1`` pass in mini-batches of ``--mini`` groups through ``Trainer.step`` with the RL objective; the
weight sync all-gathers the actor and copies it into every engine.  Printed per phase: seconds, tokens/s (all
ranks), and each phase's share of the iteration; peak GPU memory.  ``--shape 7b`` is configs/mimo-7b.yaml's
model; ``--layers`` overrides its depth (to find the largest that fits one GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openmimo.config import load  # noqa: E402
from openmimo.infer.engine import Engine, SamplingParams  # noqa: E402
from openmimo.model.config import MiMoConfig  # noqa: E402
from openmimo.model.mimo import build_model  # noqa: E402
from openmimo.model.parallel import apply_activation_checkpointing, is_sharded, parallelize  # noqa: E402
from openmimo.rl.advantage import group_advantages  # noqa: E402
from openmimo.rl.batching import collate  # noqa: E402
from openmimo.rl.loss import RLObjective  # noqa: E402
from openmimo.rl.sharded import gathered_state_dict, per_rank  # noqa: E402
from openmimo.runtime import init_runtime  # noqa: E402
from openmimo.train.loop import Trainer, build_optimizer  # noqa: E402
from openmimo.train.pretrain import PretrainConfig  # noqa: E402


def shape(name: str, layers: int) -> MiMoConfig:
    if name == "tiny":
        cfg = MiMoConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=False, num_nextn_predict_layers=1)
    elif name == "1.3b":  # bench_pretrain.py's MiMo-shaped 1.3B
        cfg = MiMoConfig(vocab_size=151680, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=32768,
                         tie_word_embeddings=False, num_nextn_predict_layers=1)
    else:
        cfg = load(PretrainConfig, ROOT / "configs" / "mimo-7b.yaml").model
    if layers:
        cfg.num_hidden_layers = layers
    return cfg


def sync(rt) -> None:
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    if rt.distributed:
        dist.barrier()


def total(x: float, rt) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=rt.device if rt.device.type == "cuda" else "cpu")
    if rt.distributed:
        dist.all_reduce(t)
    return float(t.item())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1.3b", choices=("tiny", "1.3b", "7b"))
    ap.add_argument("--layers", type=int, default=0, help="override the shape's decoder layers")
    ap.add_argument("--groups", type=int, default=16, help="prompts per iteration, over all ranks")
    ap.add_argument("--samples", type=int, default=8, help="responses per prompt")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--mini", type=int, default=8, help="groups per optimizer step, over all ranks")
    ap.add_argument("--micro", type=int, default=4, help="sequences per forward")
    ap.add_argument("--slots", type=int, default=128, help="engine slots per rank")
    ap.add_argument("--compile", action="store_true", help="the engine's compiled decode (warm-up not timed)")
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the update")
    ap.add_argument("--offload", action="store_true", help="FSDP2 CPU offload of the actor (train.cpu_offload)")
    ap.add_argument("--iters", type=int, default=2, help="iterations; the first is a warm-up unless it is the only one")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    rt = init_runtime("auto", "auto")
    torch.manual_seed(0)
    cfg = shape(a.shape, a.layers)
    dev, gen_dtype = rt.device, (torch.bfloat16 if rt.device.type == "cuda" else torch.float32)
    actor = build_model(cfg, device=dev, dtype=torch.float32, seed=0)
    actor.model.mtp_layers.requires_grad_(False)
    if a.checkpointing:
        apply_activation_checkpointing(actor)
    parallelize(actor, rt, offload=a.offload)
    opt_dev = torch.device("cpu") if a.offload else dev
    trainer = Trainer(actor, build_optimizer(actor, 1e-6, (0.9, 0.999), 1e-8, 0.0, opt_dev), rt, grad_clip=1.0)
    engine = Engine(build_model(cfg, device=dev, dtype=gen_dtype, seed=0), max_slots=a.slots,
                    max_len=a.prompt_len + a.new_tokens + 8, compile=a.compile, seed=rt.rank)
    if a.compile:
        engine.warmup()
    local, mini = per_rank(a.groups, rt, "--groups"), per_rank(a.mini, rt, "--mini")
    params = SamplingParams(max_new_tokens=a.new_tokens, temperature=1.0, n=a.samples, stop_ids=())
    objective = RLObjective(0.2, 0.28, "token-mean")
    g = torch.Generator().manual_seed(1000 + rt.rank)
    n_params = sum(p.numel() for p in build_model(cfg, device="meta", dtype=torch.float32, init=False).parameters())
    results = []
    for it in range(a.iters):
        prompts = [torch.randint(3, cfg.vocab_size, (a.prompt_len,), generator=g).tolist() for _ in range(local)]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(rt)
        t0 = time.perf_counter()
        comps = engine.generate(prompts, params)
        sync(rt)
        t1 = time.perf_counter()
        seqs = []
        for prompt, group in zip(prompts, comps):
            rewards = (torch.rand(len(group), generator=g) < 0.5).float()
            adv = group_advantages([rewards.tolist()], std_floor=1e-6)[0]
            for c, ad in zip(group, adv.tolist()):
                seqs.append({"ids": prompt + c.token_ids, "mask": [0] * len(prompt) + [1] * len(c.token_ids),
                             "old": [0.0] * len(prompt) + [float(x) for x in c.logprobs], "adv": ad})
        for i in range(0, local, mini):
            part = seqs[i * a.samples:(i + mini) * a.samples]
            mbs = [collate(part[j:j + a.micro], 0) for j in range(0, len(part), a.micro)]
            trainer.step(mbs, objective, 1e-6)
        sync(rt)
        t2 = time.perf_counter()
        engine.update_weights(gathered_state_dict(actor) if is_sharded(actor) else actor)
        sync(rt)
        t3 = time.perf_counter()
        gen_tokens = total(sum(len(c.token_ids) for grp in comps for c in grp), rt)
        upd_tokens = total(sum(len(s["ids"]) for s in seqs), rt)
        wall = t3 - t0
        r = {"iter": it, "ranks": rt.world_size, "params": n_params, "rollout_s": t1 - t0, "update_s": t2 - t1,
             "sync_s": t3 - t2, "iteration_s": wall, "rollout_tok_per_s": gen_tokens / (t1 - t0),
             "update_tok_per_s": upd_tokens / (t2 - t1), "gen_tokens": gen_tokens, "update_tokens": upd_tokens,
             "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else 0.0}
        results.append(r)
        if rt.is_main:
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    timed = results[1:] or results
    if rt.is_main:
        m = {k: sum(r[k] for r in timed) / len(timed) for k in ("rollout_s", "update_s", "sync_s", "iteration_s",
                                                                "rollout_tok_per_s", "update_tok_per_s", "peak_gb")}
        dname = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
        print(f"{a.shape} ({n_params / 1e9:.2f}B, {cfg.num_hidden_layers} layers), {rt.world_size} rank(s) on {dname}"
              f"{' (actor offloaded to CPU)' if a.offload else ''}; "
              f"{a.groups} groups x {a.samples} x ({a.prompt_len} + {a.new_tokens}) tokens, mini-batch {a.mini} groups, "
              f"engine {'compiled' if a.compile else 'eager'}")
        print("| phase | seconds | share | tokens/s (all ranks) |\n|---|---|---|---|")
        for ph, tok in (("rollout", m["rollout_tok_per_s"]), ("update", m["update_tok_per_s"]), ("sync", None)):
            s = m[f"{ph}_s"]
            print(f"| {ph} | {s:.2f} | {100 * s / m['iteration_s']:.0f}% | {'' if tok is None else f'{tok:,.0f}'} |")
        print(f"peak GPU memory {m['peak_gb']:.1f} GB")
        if a.json:
            Path(a.json).write_text(json.dumps({"args": vars(a), "device": dname, "mean": m, "iters": results}, indent=1))
    if rt.distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
