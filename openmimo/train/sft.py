"""`openmimo sft CONFIG`: supervised fine-tuning on chat records with reasoning traces (MiMo's SFT stage).

From an HF-layout checkpoint (a pre-training run's ``final/``): records are rendered through the
checkpoint's own chat template with loss on assistant tokens only (``<think>`` blocks included),
decontaminated against the evaluation sets (n-gram overlap, counts per set), and packed into rows of
``data.seq_len`` tokens with per-sample attention and position ids (:mod:`openmimo.train.sft_data`).
The objective is pre-training's: the main next-token loss plus ``mtp_weight`` x the mean MTP loss, each
a token mean over the global batch's assistant tokens, so the MTP layers are tuned too (RL freezes
them).  The learning rate warms up over ``optim.warmup_steps`` and follows ``optim.lr_scheduler_type``
to ``min_lr_ratio * lr`` at the end of the epochs.  The run around the step is the shared
:class:`openmimo.train.run.Run` (checkpoints, ``--resume``, time limit, cadences); FSDP2 through
torchrun as in pre-training.  The result is exported in the Hugging Face layout to ``OUT_DIR/final``,
which ``openmimo rl`` and ``openmimo eval`` take directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from openmimo.config import ConfigError, config_args, dump, load_stage_config, to_dict
from openmimo.data.decontam import Decontaminator, eval_items
from openmimo.model.hf import load_model
from openmimo.model.mimo import set_attention_backend
from openmimo.model.parallel import export_hf, parallelize
from openmimo.runtime import init_runtime, seed_everything
from openmimo.tokenizer import load_tokenizer
from openmimo.train.loop import Trainer, build_optimizer
from openmimo.train.run import Run
from openmimo.train.sft_data import PackedSFTLoader, load_sft_samples, pack, row_tensors, world_traces
from openmimo.train.config import TrainConfig


@dataclass
class SFTDataConfig:
    train_path: str | list[str] = ""  # JSONL file(s): records with `messages`, or `prompt` + `response`
    val_path: str | list[str] = ""  # held-out records of the same format: masked loss at each evaluation
    seq_len: int = 4096  # tokens per packed row; longer samples are dropped (counted)
    epochs: int = 1  # passes over the training records
    max_samples: int = 0  # read only the first N records of each file (0 = all)
    val_samples: int = 64  # held-out records evaluated (first N)
    decontaminate: bool = True  # drop records that share an n-gram with an evaluation item
    benchmarks_dir: str = "../shared/benchmarks"  # evaluation sets to decontaminate against (skipped when absent)
    world_dir: str = ""  # an embedded world folder (OUT/data/world): its held-out math and code too
    # > 0: also train on this many verified <think> traces of world_dir's training math problems (the tiny recipe)
    world_traces: int = 0
    world_trace_levels: list[int] = field(default_factory=list)  # ...of these levels only ([] = all)
    world_trace_style: str = "long"  # long (restate, numbered steps, check, solution) | steps (steps, boxed answer)
    ngram: int = 16  # n-gram length of the decontamination (MiMo: 16)

    def check(self):
        if not self.train_path and not self.world_traces:
            raise ValueError("key 'train_path' is required (SFT records, JSONL) unless world_traces > 0")
        if self.world_traces and not self.world_dir:
            raise ValueError("key 'world_traces' needs 'world_dir' (an embedded world folder)")
        if self.world_trace_style not in ("long", "steps"):
            raise ValueError(f"key 'world_trace_style' must be long or steps, got {self.world_trace_style!r}")
        if self.seq_len < 2 or self.epochs < 1 or self.ngram < 1 or self.max_samples < 0:
            raise ValueError("key 'seq_len' must be >= 2, 'epochs' and 'ngram' >= 1, 'max_samples' >= 0")


@dataclass
class SFTOptimConfig:
    lr: float = 3e-5  # peak learning rate (MiMo's SFT: 3e-5)
    lr_scheduler_type: str = "cosine"  # constant | cosine | linear, to min_lr_ratio * lr at the end
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0  # linear warm-up steps
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0  # on matrices only
    grad_clip: float = 1.0  # 0 disables

    def check(self):
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError("key 'lr' must be positive, 'min_lr_ratio' in [0, 1], 'warmup_steps' >= 0")
        if self.lr_scheduler_type not in ("constant", "cosine", "linear"):
            raise ValueError(f"key 'lr_scheduler_type' must be constant, cosine or linear, got {self.lr_scheduler_type!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("key 'betas' must be two numbers in [0, 1)")


@dataclass
class SFTBatchConfig:
    batch_size: int = 128  # packed rows per optimizer step (global, over all ranks; MiMo: 128 of 32,768 tokens)
    micro_batch_size: int = 1  # rows per forward pass on one rank (gradient accumulation above it)

    def check(self):
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("key 'batch_size' and 'micro_batch_size' must be positive")


@dataclass
class SFTConfig:
    init: str = "runs/tiny/final"  # HF-layout checkpoint with tokenizer (a pre-training run's final/)
    mtp_weight: float = 0.1  # weight of the mean MTP loss next to the main loss (0 = MTP layers untouched)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optim: SFTOptimConfig = field(default_factory=SFTOptimConfig)
    batch: SFTBatchConfig = field(default_factory=SFTBatchConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/sft", ckpt_every=100))

    def check(self):
        if self.mtp_weight < 0:
            raise ValueError("key 'mtp_weight' must be >= 0")


def build_decontaminator(d: SFTDataConfig):
    """The evaluation items named by the config (benchmarks folder and/or world), or None when off or empty."""
    if not d.decontaminate:
        return None
    bench = d.benchmarks_dir if d.benchmarks_dir and Path(d.benchmarks_dir).is_dir() else None
    items = eval_items(bench, d.world_dir or None)
    return Decontaminator(items, ngram=d.ngram) if items else None


def traces_spec(d: SFTDataConfig) -> dict:
    """What the world traces depend on: the world (its folder and manifest), how many, which levels, which style."""
    manifest = Path(d.world_dir) / "manifest.json"
    world = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else None
    return {"world_dir": str(Path(d.world_dir).resolve()), "world_manifest": world, "n": d.world_traces,
            "levels": list(d.world_trace_levels), "style": d.world_trace_style}


def prepare_world_traces(d: SFTDataConfig, run_dir: Path, rt) -> Path:
    """Write the verified world traces to ``run_dir/data/world_traces.jsonl`` (reused while ``world_traces.spec.json``
    matches the config's :func:`traces_spec`: on resume, and by a fresh run of the same data; rewritten otherwise)."""
    path = run_dir / "data" / "world_traces.jsonl"
    spec_path = path.with_name("world_traces.spec.json")
    spec = traces_spec(d)
    held = json.loads(spec_path.read_text()) if spec_path.is_file() and path.is_file() else None
    if rt.is_main and held != spec:
        if held is not None:
            print(f"[sft] {path} holds traces of another world or setting: rewriting it", flush=True)
        recs, counts = world_traces(d.world_dir, d.world_traces, d.world_trace_levels, seed=0,
                                    style=d.world_trace_style)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in recs))
        os.replace(tmp, path)
        spec_path.write_text(json.dumps(spec, indent=1) + "\n")
        print(f"[sft] world traces: {counts['verified']} of {counts['problems']} verified by the math reward "
              f"(rejected: {counts['rejected'] or 'none'}) -> {path}", flush=True)
    if rt.distributed:
        dist.barrier()
    return path


class SFTStage:
    """SFT's data and objective for the shared :class:`openmimo.train.run.Run`."""

    def __init__(self, cfg: SFTConfig, model, trainer, loader, rt, val_batches):
        from openmimo.train.pretrain import PretrainObjective

        self.cfg, self.model, self.trainer, self.loader, self.rt = cfg, model, trainer, loader, rt
        self.val_batches = val_batches
        self.n_mtp = model.config.num_nextn_predict_layers if cfg.mtp_weight > 0 else 0
        self.objective = PretrainObjective(self.n_mtp, cfg.mtp_weight)
        self.samples = self.tokens = self.steps = 0

    def done(self) -> bool:
        return self.loader.done()

    def progress(self) -> float:
        return self.loader.progress()

    def lr(self) -> float:
        from openmimo.train.schedule import lr_at_progress

        o = self.cfg.optim
        return lr_at_progress(self.progress(), o.lr, o.lr_scheduler_type, o.min_lr_ratio, self.steps, o.warmup_steps)

    def train_step(self) -> dict:
        lr = self.lr()
        batch = self.loader.next_batch(self.cfg.batch.batch_size)
        n_samples, n_tokens, n_rows = batch.pop("samples"), batch.pop("tokens"), batch.pop("rows")
        mb_size = self.cfg.batch.micro_batch_size
        rows = batch["input_ids"].shape[0]
        mbs = [{k: v[i:i + mb_size] for k, v in batch.items()} for i in range(0, rows, mb_size)]
        stats = self.trainer.step(mbs, self.objective, lr)
        self.steps += 1
        self.samples += n_samples
        self.tokens += n_tokens
        rec = {"epoch": self.progress() * self.cfg.data.epochs, "lr": lr, "loss": stats["loss_sum"] / max(stats["n_main"], 1),
               "acc": stats["correct_main"] / max(stats["n_main"], 1), "grad_norm": stats["grad_norm"],
               "samples": self.samples, "tokens": self.tokens, "rows": n_rows, "target_tokens": stats["n_main"],
               "fill": n_tokens / max(n_rows * self.cfg.data.seq_len, 1),
               "tok_per_s": n_rows * self.cfg.data.seq_len / stats["step_time_s"], "step_time_s": stats["step_time_s"]}
        for k in range(1, 1 + self.n_mtp):
            rec[f"mtp{k}_loss"] = stats[f"mtp{k}_loss_sum"] / max(stats[f"n_mtp{k}"], 1)
        return rec

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Token-mean loss and accuracy on the held-out records' assistant tokens (main and each MTP depth)."""
        if not self.val_batches:
            return {}
        self.model.eval()
        n = [0.0] * (1 + self.n_mtp)
        loss = [0.0] * (1 + self.n_mtp)
        correct = 0.0
        for b in self.val_batches:
            b = {k: v.to(self.rt.device) for k, v in b.items()}
            with self.rt.autocast():
                out = self.model(b["input_ids"], position_ids=b["position_ids"], labels=b["labels"],
                                 compute_mtp=self.n_mtp > 0)
            for k in range(1 + self.n_mtp):
                loss[k] += float(out.loss_sums[k])
                n[k] += float(out.num_targets[k])
            correct += float(out.num_correct[0])
        self.model.train()
        ev = {"loss": loss[0] / max(n[0], 1), "acc": correct / max(n[0], 1), "targets": int(n[0])}
        for k in range(1, 1 + self.n_mtp):
            ev[f"mtp{k}_loss"] = loss[k] / max(n[k], 1)
        return {"val": ev}

    def state_dict(self) -> dict:
        from openmimo.config import to_dict

        return {"loader": self.loader.state_dict(), "samples": self.samples, "tokens": self.tokens,
                "steps": self.steps, "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state["loader"])
        self.samples, self.tokens, self.steps = state["samples"], state["tokens"], state["steps"]


def val_batches(samples, seq_len: int, pad_id: int, batch_rows: int) -> list[dict]:
    rows = pack([len(s[0]) for s in samples], range(len(samples)), seq_len)
    return [row_tensors(samples, rows[i:i + batch_rows], seq_len, pad_id) for i in range(0, len(rows), batch_rows)]


def main(cfg: SFTConfig, resume: bool = False, overwrite: bool = False) -> dict:
    rt = init_runtime(cfg.train.device, cfg.train.dtype)
    run = Run(cfg.train, to_dict(cfg), stage="sft", rt=rt, resume=resume, overwrite=overwrite,
              compatible_keys=("init", "data"))
    run_dir = run.run_dir
    seed_everything(cfg.train.seed)
    if rt.is_main:
        dump(cfg, run_dir / "config.yaml")
    init = Path(cfg.init)
    if not init.is_dir():
        raise ConfigError(f"key 'init': checkpoint folder {init} not found")
    tok = load_tokenizer(init)
    d = cfg.data
    paths = [d.train_path] if isinstance(d.train_path, str) else list(d.train_path)
    paths = [p for p in paths if p]
    if d.world_traces:
        paths.append(str(prepare_world_traces(d, run_dir, rt)))
    dec = build_decontaminator(d)
    samples, counts = load_sft_samples(paths, tok, d.seq_len, dec, d.max_samples)
    by = f" {counts['contaminated_by']}" if counts["contaminated_by"] else ""
    run.print(f"data: {counts['read']} records, {counts['kept']} kept; dropped {counts['contaminated']} contaminated"
              f"{by}, {counts['too_long']} longer than {d.seq_len} tokens, "
              f"{counts['no_target']} without assistant tokens" + ("" if dec else "; no decontamination"))
    pad = tok.pad_id if tok.pad_id is not None else 0
    val = []
    if d.val_path:
        vs, _ = load_sft_samples(d.val_path, tok, d.seq_len, None, d.val_samples)
        val = val_batches(vs, d.seq_len, pad, cfg.batch.micro_batch_size)
    set_attention_backend(cfg.train.attention_backend)
    model = load_model(init, dtype=torch.float32, device=rt.device)
    model_cfg = model.config
    if model_cfg.num_nextn_predict_layers == 0 or cfg.mtp_weight == 0:
        model.model.mtp_layers.requires_grad_(False)
    model.fused_loss = cfg.train.fused_loss
    model = parallelize(model, rt, compile=cfg.train.compile, activation_checkpointing=cfg.train.activation_checkpointing,
                        scope=cfg.train.compile_scope)
    o = cfg.optim
    optimizer = build_optimizer(model, o.lr, o.betas, o.eps, o.weight_decay, rt.device)
    loader = PackedSFTLoader(samples, d.seq_len, seed=cfg.train.seed, pad_id=pad, epochs=d.epochs,
                             rank=rt.rank, world_size=rt.world_size)
    stage = SFTStage(cfg, model, Trainer(model, optimizer, rt, o.grad_clip), loader, rt, val)
    state = run.begin(model, optimizer)
    if state is None:
        run.metrics.log({"data": counts}, step=0)
        if val:
            start = stage.evaluate()
            run.metrics.log(start, step=0)
            run.print(f"step 0 held-out loss {start['val']['loss']:.4f}")
    else:
        stage.load_state_dict(state)
    out = run.train(stage)
    for p in model.parameters():
        p.requires_grad_(True)
    export_hf(model, run_dir / "final", tok, cfg, rt, model_cfg=model_cfg)
    final = stage.evaluate()
    run.metrics.log({"final": {"steps": run.step, "samples": stage.samples, "tokens": stage.tokens,
                               "val": final.get("val", {})}}, step=run.step)
    run.close()
    msg = f"held-out loss {final['val']['loss']:.4f}; " if final else ""
    run.print(f"{run.step} steps, {stage.samples} samples ({stage.tokens} tokens) in {out['time_s']:.0f}s; {msg}"
              f"model -> {run_dir / 'final'}")
    return {"steps": run.step, "samples": stage.samples, "tokens": stage.tokens, "data": counts, **final}


def add_arguments(parser):
    config_args(parser, resume=True, example="init=runs/tiny/final data.train_path=sft.jsonl train.max_steps=10")


def run(args):
    main(load_stage_config(SFTConfig, args), resume=args.resume, overwrite=args.overwrite)
