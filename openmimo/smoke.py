"""`openmimo smoke`: the whole model life cycle in about a minute on a CPU.

Trains a byte-level BPE tokenizer on a small built-in text (arithmetic with worked answers from
the tiny world, plus a paragraph of prose), builds the tiny model on the meta device, trains it
for a few steps with the LM + MTP loss, saves a Hugging-Face-layout checkpoint, reloads it,
checks that the reloaded model gives identical logits, and generates text.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from openmimo.config import config_args, dump, load_stage_config
from openmimo.model.config import MiMoConfig

PROSE = (
    "The river runs past the old mill and into the valley. People come to the market every morning to buy "
    "bread, fish and fruit. A careful student checks each step of a calculation before writing the answer. "
)


def _tiny_model() -> MiMoConfig:
    return MiMoConfig(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      num_nextn_predict_layers=1)


@dataclass
class SmokeConfig:
    model: MiMoConfig = field(default_factory=_tiny_model)  # the tiny model (vocab_size = tokenizer size)
    out_dir: str = "runs/smoke"  # where the checkpoint is written
    steps: int = 150  # optimizer steps
    batch_size: int = 16  # sequences per step
    seq_len: int = 64  # tokens per sequence
    lr: float = 3e-3  # AdamW learning rate (constant after 10 warm-up steps)
    mtp_weight: float = 0.3  # weight of the MTP loss
    num_texts: int = 3000  # built-in training texts
    seed: int = 0  # seeds text, init and data order
    prompt: str = "Problem: What is 12 + 7?\nSolution:"  # generated from after training
    max_new_tokens: int = 24  # tokens generated

    def check(self):
        if self.steps <= 0 or self.batch_size <= 0 or self.seq_len < 4:
            raise ValueError("key 'steps', 'batch_size' must be positive and 'seq_len' >= 4")


def builtin_texts(n: int, seed: int) -> list[str]:
    from openmimo.data import world_math

    rng = random.Random(seed)
    texts = [PROSE]
    for _ in range(n):
        gen = world_math.level1 if rng.random() < 0.7 else world_math.level2
        _, problem, solution, answer = gen(rng)
        texts.append(world_math.math_text({"problem": problem, "solution": solution, "answer": answer}))
    return texts


def main(cfg: SmokeConfig) -> dict:
    from pathlib import Path
    from openmimo.infer.oracle import greedy_batch
    from openmimo.model.hf import load_model
    from openmimo.model.mimo import build_model
    from openmimo.runtime import Runtime, seed_everything
    from openmimo.train.loop import Trainer, build_optimizer
    from openmimo.train.pretrain import PretrainObjective
    from openmimo.tokenizer import train_tokenizer

    t0 = time.time()
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump(cfg, out / "config.yaml")
    texts = builtin_texts(cfg.num_texts, cfg.seed)
    tok = train_tokenizer(texts, vocab_size=cfg.model.vocab_size)
    cfg.model.vocab_size = tok.vocab_size
    cfg.model.eos_token_id, cfg.model.bos_token_id = tok.eos_id, tok.bos_id
    print(f"[smoke] tokenizer: byte-level BPE, {tok.vocab_size} tokens, trained on {len(texts)} texts")

    stream: list[int] = []
    for t in texts:
        stream.extend(tok.encode(t) + [tok.eos_id])
    data = torch.tensor(stream)
    model = build_model(cfg.model, seed=cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[smoke] model: {n_params / 1e6:.2f}M parameters, {cfg.model.num_hidden_layers} layers, "
          f"{cfg.model.num_nextn_predict_layers} MTP layer(s)")
    # The one shared training step (the same Trainer and objective as `openmimo pretrain`).
    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    trainer = Trainer(model, build_optimizer(model, cfg.lr, (0.9, 0.95), 1e-8, 0.1, rt.device), rt, grad_clip=1.0)
    objective = PretrainObjective(cfg.model.num_nextn_predict_layers, cfg.mtp_weight)
    positions = torch.arange(cfg.seq_len).expand(cfg.batch_size, cfg.seq_len)
    g = torch.Generator().manual_seed(cfg.seed)
    first = last = None
    for step in range(cfg.steps):
        starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=g)
        ids = torch.stack([data[s:s + cfg.seq_len] for s in starts])
        st = trainer.step([{"input_ids": ids, "position_ids": positions, "labels": ids}], objective,
                          lr=cfg.lr * min(1.0, (step + 1) / 10))
        last = st["loss_sum"] / st["n_main"]
        first = first if first is not None else last
        if step % 25 == 0 or step == cfg.steps - 1:
            mtp = ", ".join(f"{st[f'mtp{k}_loss_sum'] / st[f'n_mtp{k}']:.3f}"
                            for k in range(1, 1 + cfg.model.num_nextn_predict_layers))
            print(f"[smoke] step {step:3d}  loss {last:.3f}  mtp [{mtp}]")
    model.eval()
    ckpt = out / "checkpoint"
    from openmimo.model.parallel import CONFIG_FILE, config_yaml

    model.save_pretrained(ckpt, tokenizer=tok, extra_files={CONFIG_FILE: config_yaml(cfg)})
    reloaded = load_model(ckpt)
    probe = torch.tensor([tok.encode(cfg.prompt)])
    with torch.no_grad():
        same = torch.equal(model(probe).logits, reloaded(probe).logits)
    if not same:
        raise RuntimeError(f"{ckpt}: reloaded model gives different logits")
    gen = greedy_batch(reloaded, [tok.encode(cfg.prompt)], cfg.max_new_tokens, stop_id=tok.eos_id)[0]
    text = tok.decode(gen, skip_special_tokens=True)
    print(f"[smoke] saved {ckpt} (HF layout) and reloaded it: identical logits")
    print(f"[smoke] prompt: {cfg.prompt!r}\n[smoke] output: {text!r}")
    print(f"[smoke] loss {first:.3f} -> {last:.3f} in {cfg.steps} steps, {time.time() - t0:.1f}s")
    return {"first_loss": first, "last_loss": last, "checkpoint": str(ckpt), "generated": text}


def add_arguments(parser):
    config_args(parser, resume=False, example="steps=20 lr=1e-3")


def run(args):
    main(load_stage_config(SmokeConfig, args))
