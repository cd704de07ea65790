"""`openmimo mtp-extend`: grow one trained MTP layer into K for speculative decoding (MiMo's recipe).

The trained MTP layer (depth 1) is copied into depths 2..K; the main model and depth 1 are
frozen, and only the new layers are trained, on the mean of their MTP losses.  Depth k reads depth k-1's
``final_layernorm`` output (see ``model/mimo.py``), so before training the K layers draft exactly as vLLM and
SGLang draft several tokens with the one released layer (they feed it its own normalised output back).  The run reports
the per-depth MTP accuracy on held-out text before and after, and exports the K-layer model in
the Hugging Face layout to ``OUT_DIR/final``.  The run around the step is the shared
:class:`openmimo.train.run.Run`: checkpoints, ``--resume``, time limit and cadences as in every stage.  Under
torchrun the extended model is FSDP2-sharded like pre-training's (``batch.batch_size`` is global and divides over
the ranks; each rank reads its own share of the data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from openmimo.config import ConfigError, config_args, dump, load_stage_config, to_dict
from openmimo.data.mixture_loader import MixtureLoader
from openmimo.jsonl import read_jsonl
from openmimo.model.hf import load_model
from openmimo.model.mimo import build_model
from openmimo.model.parallel import CONFIG_FILE, config_yaml, export_hf, parallelize
from openmimo.runtime import init_runtime, seed_everything
from openmimo.tokenizer import load_tokenizer
from openmimo.train.config import BatchConfig, DataConfig, OptimConfig, StageConfig, TrainConfig
from openmimo.train.data import WORLD_SOURCES, WorldRunData
from openmimo.train.evaluate import mtp_accuracy
from openmimo.train.loop import Trainer, build_optimizer
from openmimo.train.pretrain import PretrainObjective
from openmimo.train.run import Run
from openmimo.train.schedule import lr_at


def _stage():
    return [StageConfig(name="mtp-extend", tokens=300_000, seq_len=256, rope_theta=10000.0,
                        mixture={"web": 0.1, "math": 0.6, "code": 0.1, "reasoning": 0.2})]


@dataclass
class MTPExtendConfig:
    init: str = "runs/tiny/final"  # HF-layout checkpoint with >= 1 trained MTP layer (a pre-training run's final/)
    num_nextn_predict_layers: int = 3  # K: MTP layers after extension
    keep_rope_theta: bool = True  # use the checkpoint's RoPE theta (true) or stages[0].rope_theta (false)
    data: DataConfig = field(default_factory=lambda: DataConfig(world=False))  # "" sources = the init run's shards
    stages: list[StageConfig] = field(default_factory=_stage)  # one stage: tokens, seq_len, rope_theta, mixture
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, min_lr=2e-4, warmup_tokens=10_000,
                                                                  decay_tokens=300_000))
    batch: BatchConfig = field(default_factory=lambda: BatchConfig(batch_size=32, micro_batch_size=32))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/mtp-extend"))

    def check(self):
        if self.num_nextn_predict_layers < 2:
            raise ValueError("key 'num_nextn_predict_layers' must be >= 2 (depth 1 is the trained layer)")
        if len(self.stages) != 1:
            raise ValueError("key 'stages' must hold exactly one stage for mtp-extend")


class MTPExtendObjective:
    """Mean over the new depths (2..K) of their global-token-mean MTP losses."""

    def __init__(self, n_mtp: int):
        self.n_mtp = n_mtp
        self._counts = PretrainObjective(n_mtp, 0.0)

    def denominators(self, micro_batches):
        return self._counts.denominators(micro_batches)

    def __call__(self, model, mb, denoms):
        out = model(mb["input_ids"], position_ids=mb["position_ids"], labels=mb["labels"])
        new = range(2, 1 + self.n_mtp)
        loss = sum(out.loss_sums[k] / denoms[k].clamp(min=1).item() for k in new) / len(new)
        stats = {"n_main": out.num_targets[0], "loss_sum": out.loss_sums[0].item(), "correct_main": out.num_correct[0]}
        for k in range(1, 1 + self.n_mtp):
            stats[f"mtp{k}_loss_sum"] = out.loss_sums[k].item()
            stats[f"n_mtp{k}"] = out.num_targets[k]
            stats[f"mtp{k}_correct"] = out.num_correct[k]
        return loss, stats


def extend_model(base, k: int):
    """A copy of ``base`` with K MTP layers: depth 1 and the main model from ``base``, depths 2..K
    initialised as copies of depth 1.  Everything but depths 2..K is frozen."""
    cfg = type(base.config)(**{**base.config.__dict__, "num_nextn_predict_layers": k})
    dtype = next(base.parameters()).dtype
    model = build_model(cfg, device=next(base.parameters()).device, dtype=dtype, init=False)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected, unexpected
    src = base.model.mtp_layers[0].state_dict()
    for d in range(1, k):
        model.model.mtp_layers[d].load_state_dict(src)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("model.mtp_layers.") and int(name.split(".")[2]) >= 1
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model


class MTPExtendStage:
    """mtp-extend's data and objective for the shared :class:`openmimo.train.run.Run`: one stage's tokens."""

    def __init__(self, cfg: MTPExtendConfig, trainer, loader, world_size: int = 1):
        self.cfg, self.trainer, self.loader = cfg, trainer, loader
        if cfg.batch.batch_size % world_size:
            raise ConfigError(f"key 'batch.batch_size': {cfg.batch.batch_size} does not divide over {world_size} ranks")
        self.per_rank = cfg.batch.batch_size // world_size
        self.objective = MTPExtendObjective(cfg.num_nextn_predict_layers)
        self.tokens = 0

    def done(self) -> bool:
        return self.tokens >= self.cfg.stages[0].tokens

    def progress(self) -> float:
        return self.tokens / max(self.cfg.stages[0].tokens, 1)

    def train_step(self) -> dict:
        cfg, o, seq_len = self.cfg, self.cfg.optim, self.cfg.stages[0].seq_len
        batch = self.loader.next_batch(self.per_rank, seq_len)
        mbs = [{k: v[i:i + cfg.batch.micro_batch_size] for k, v in batch.items()}
               for i in range(0, self.per_rank, cfg.batch.micro_batch_size)]
        lr = lr_at(self.tokens, o.lr, o.min_lr, o.warmup_tokens, o.constant_tokens, o.decay_tokens)
        st = self.trainer.step(mbs, self.objective, lr)
        self.tokens += cfg.batch.batch_size * seq_len
        rec = {"tokens": self.tokens, "lr": lr, "grad_norm": st["grad_norm"]}
        for k in range(1, 1 + cfg.num_nextn_predict_layers):
            rec[f"mtp{k}_loss"] = st[f"mtp{k}_loss_sum"] / max(st[f"n_mtp{k}"], 1)
            rec[f"mtp{k}_acc"] = st[f"mtp{k}_correct"] / max(st[f"n_mtp{k}"], 1)
        return rec

    def evaluate(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"tokens": self.tokens, "loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.tokens = state["tokens"]
        self.loader.load_state_dict(state["loader"])


def main(cfg: MTPExtendConfig, resume: bool = False, overwrite: bool = False) -> dict:
    rt = init_runtime(cfg.train.device, cfg.train.dtype)
    run = Run(cfg.train, to_dict(cfg), stage="mtp-extend", rt=rt, resume=resume, overwrite=overwrite,
              compatible_keys=("init", "num_nextn_predict_layers", "data"))
    run_dir = run.run_dir
    seed_everything(cfg.train.seed)
    if rt.is_main:
        dump(cfg, run_dir / "config.yaml")
    init = Path(cfg.init)
    base = load_model(init, dtype=torch.float32, device=rt.device)
    if base.config.num_nextn_predict_layers < 1:
        raise ConfigError(f"key 'init': {init} has no trained MTP layer")
    tok = load_tokenizer(cfg.data.tokenizer or init)
    sources = dict(cfg.data.sources)
    init_data = WorldRunData.of_checkpoint(init)  # the init run's world: its shards and held-out texts
    if not sources:
        sources = {s: str(init_data.shards(s)) for s in WORLD_SOURCES if init_data.shards(s).is_dir()}
        if not sources:
            raise ConfigError(f"key 'data.sources' is empty and {init_data.shards()} has no shards")
    texts = []
    for src in ("math", "web"):
        p = init_data.text(src, "val")
        if p.is_file():
            texts += [r["text"] for r in read_jsonl(p, 32)]
    stage_cfg = cfg.stages[0]
    if not cfg.keep_rope_theta:
        base.config.rope_theta = stage_cfg.rope_theta
    model = extend_model(base, cfg.num_nextn_predict_layers)
    model.fused_loss = cfg.train.fused_loss
    model.eval()
    before = mtp_accuracy(model, tok, texts, seq_len=stage_cfg.seq_len, device=rt.device)  # of the init checkpoint
    model_cfg = model.config
    parallelize(model, rt)  # FSDP2 under torchrun; nothing on one process
    o = cfg.optim
    opt = build_optimizer(model, o.lr, o.betas, o.eps, o.weight_decay, rt.device)
    loader = MixtureLoader(sources, stage_cfg.mixture, seed=cfg.train.seed, rank=rt.rank, world_size=rt.world_size)
    stage = MTPExtendStage(cfg, Trainer(model, opt, rt, o.grad_clip), loader, rt.world_size)
    state = run.begin(model, opt)
    if state is not None:
        stage.load_state_dict(state)
    out = run.train(stage)
    model.eval()
    after = mtp_accuracy(model, tok, texts, seq_len=stage_cfg.seq_len, device=rt.device)  # every rank: collective
    for p in model.parameters():
        p.requires_grad_(True)
    if rt.distributed:
        export_hf(model, run_dir / "final", tok, cfg, rt, model_cfg=model_cfg)
    else:
        model.save_pretrained(run_dir / "final", tokenizer=tok, extra_files={CONFIG_FILE: config_yaml(cfg)})
    result = {"steps": run.step, "tokens": stage.tokens, "time_s": out["time_s"],
              "acc_before": before, "acc_after": after}
    run.metrics.log({"final": result}, step=run.step)
    run.close()
    fmt = lambda a: ", ".join(f"{x:.3f}" for x in a[1:])  # noqa: E731
    run.print(f"{run.step} steps, {stage.tokens} tokens in {result['time_s']:.0f}s; per-depth MTP accuracy "
               f"before [{fmt(before)}] after [{fmt(after)}] (main next-token {after[0]:.3f}); -> {run_dir / 'final'}")
    return result


def add_arguments(parser):
    config_args(parser, resume=True, example="num_nextn_predict_layers=3 train.max_steps=10")


def run(args):
    main(load_stage_config(MTPExtendConfig, args), resume=args.resume, overwrite=args.overwrite)
