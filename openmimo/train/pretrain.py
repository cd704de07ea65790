"""`openmimo pretrain CONFIG`: pre-training with the LM + MTP objective and the three-stage schedule.

Per optimizer step, all as functions of the tokens seen so far: the data stage (mixture weights,
context length, RoPE theta), the batch size (warm-up), the learning rate (warm-up, constant,
cosine decay) and the MTP loss weight (0.3, then 0.1).  The step itself is the shared
:class:`openmimo.train.loop.Trainer` and the run around it the shared :class:`openmimo.train.run.Run`
(cadences, time limit, checkpoints that continue bitwise with `--resume`); the final model is
exported in the Hugging Face layout to ``OUT_DIR/final``.
"""

from __future__ import annotations

import torch

from openmimo.config import config_args, dump, load_stage_config, to_dict
from openmimo.model.mimo import set_attention_backend
from openmimo.model.parallel import build_parallel_model, export_hf
from openmimo.runtime import init_runtime, seed_everything
from openmimo.train.data import build_loader, prepare_data
from openmimo.train.loop import Trainer, build_optimizer
from openmimo.train.config import PretrainConfig
from openmimo.train.run import Run
from openmimo.train.schedule import batch_size_at, lr_at, mtp_weight_at, stage_at


class PretrainObjective:
    """Main loss + weight * mean over depths of the MTP losses, each a global token mean."""

    def __init__(self, n_mtp: int, mtp_weight: float):
        self.n_mtp, self.mtp_weight = n_mtp, mtp_weight

    def denominators(self, micro_batches) -> torch.Tensor:
        from openmimo.model.mimo import document_ids, target_mask

        counts = torch.zeros(1 + self.n_mtp, dtype=torch.float64)
        for mb in micro_batches:
            pos = mb.get("position_ids")  # absent: one document per row
            doc = document_ids(pos) if pos is not None else None
            for s in range(1 + self.n_mtp):
                if s + 1 < mb["labels"].shape[1]:
                    counts[s] += float(target_mask(mb["labels"], mb.get("attention_mask"), doc, s + 1).sum())
        return counts

    def __call__(self, model, mb, denoms):
        out = model(mb["input_ids"], position_ids=mb.get("position_ids"), labels=mb["labels"],
                    compute_mtp=self.n_mtp > 0)
        loss = out.loss_sums[0] / denoms[0].clamp(min=1).item()
        # Device tensors, read by Trainer.step after backward is queued (an .item() here would stall the
        # GPU between forward and backward).
        stats = {"loss_sum": out.loss_sums[0].detach(), "n_main": out.num_targets[0], "correct_main": out.num_correct[0]}
        for k in range(1, 1 + self.n_mtp):
            loss = loss + self.mtp_weight / self.n_mtp * out.loss_sums[k] / denoms[k].clamp(min=1).item()
            stats[f"mtp{k}_loss_sum"] = out.loss_sums[k].detach()
            stats[f"n_mtp{k}"] = out.num_targets[k]
        return loss, stats


def flops_per_token(model_cfg, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding matmul params, MTP layers and head included)
    + 12 x layers x heads x head_dim x seq_len for attention (PaLM's accounting)."""
    n = model_cfg.num_params(include_mtp=True) - model_cfg.vocab_size * model_cfg.hidden_size
    if model_cfg.tie_word_embeddings:
        n += model_cfg.vocab_size * model_cfg.hidden_size  # the head matmul still runs
    layers = model_cfg.num_hidden_layers + model_cfg.num_nextn_predict_layers
    return 6.0 * n + 12.0 * layers * model_cfg.num_attention_heads * model_cfg.head_size * seq_len


class PretrainStage:
    """Pre-training's data and objective for the shared :class:`openmimo.train.run.Run`: per step, the data stage,
    batch size, learning rate and MTP weight at the tokens seen so far."""

    def __init__(self, cfg: PretrainConfig, model, trainer, loader, rt, tokenizer, eval_data):
        self.cfg, self.model, self.trainer, self.loader, self.rt = cfg, model, trainer, loader, rt
        self.tokenizer, self.eval_data = tokenizer, eval_data
        self.tokens = 0
        self.stage_tokens = [s.tokens for s in cfg.stages]
        self.total_tokens = sum(self.stage_tokens)
        self.n_mtp = cfg.model.num_nextn_predict_layers
        self.peak = cfg.train.peak_tflops * 1e12 if cfg.train.peak_tflops else (989e12 if rt.device.type == "cuda" else 0.0)

    def done(self) -> bool:
        return stage_at(self.tokens, self.stage_tokens) is None

    def progress(self) -> float:
        return self.tokens / max(self.total_tokens, 1)

    def train_step(self) -> dict:
        cfg, rt, o, tokens = self.cfg, self.rt, self.cfg.optim, self.tokens
        stage = cfg.stages[stage_at(tokens, self.stage_tokens)]
        getattr(self.model, "config", cfg.model).rope_theta = stage.rope_theta
        bs = batch_size_at(tokens, cfg.batch.batch_size, cfg.batch.warmup_batch_size, cfg.batch.warmup_tokens,
                           multiple=rt.world_size)
        per_rank = max(bs // rt.world_size, 1)
        self.loader.set_mixture(stage.mixture)
        batch = self.loader.next_batch(per_rank, stage.seq_len)  # this rank's share of the global batch
        mbs = [{k: v[i:i + cfg.batch.micro_batch_size] for k, v in batch.items()}
               for i in range(0, per_rank, cfg.batch.micro_batch_size)]
        lr = lr_at(tokens, o.lr, o.min_lr, o.warmup_tokens, o.constant_tokens, o.decay_tokens)
        w = mtp_weight_at(tokens, cfg.mtp.weight, cfg.mtp.late_weight, cfg.mtp.switch_tokens)
        stats = self.trainer.step(mbs, PretrainObjective(self.n_mtp, w), lr)
        step_tokens = per_rank * rt.world_size * stage.seq_len
        self.tokens += step_tokens
        tps = step_tokens / stats["step_time_s"]
        rec = {"stage": stage.name, "tokens": self.tokens, "lr": lr, "mtp_weight": w, "batch_size": bs,
               "seq_len": stage.seq_len, "rope_theta": stage.rope_theta,
               "loss": stats["loss_sum"] / max(stats["n_main"], 1),
               "acc": stats["correct_main"] / max(stats["n_main"], 1),
               "grad_norm": stats["grad_norm"], "tok_per_s": tps, "step_time_s": stats["step_time_s"]}
        for k in range(1, 1 + self.n_mtp):
            rec[f"mtp{k}_loss"] = stats[f"mtp{k}_loss_sum"] / max(stats[f"n_mtp{k}"], 1)
        if self.peak:
            rec["mfu"] = tps * flops_per_token(cfg.model, stage.seq_len) / (self.peak * rt.world_size)
        return rec

    def evaluate(self) -> dict:
        from openmimo.train.evaluate import evaluate_pretrained

        return {"eval": evaluate_pretrained(self.model, self.tokenizer, self.eval_data, self.cfg, self.rt)}

    def state_dict(self) -> dict:
        from openmimo.config import to_dict

        return {"tokens": self.tokens, "loader": self.loader.state_dict(), "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        self.tokens = state["tokens"]
        self.loader.load_state_dict(state["loader"])


def main(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    rt = init_runtime(cfg.train.device, cfg.train.dtype)
    run = Run(cfg.train, to_dict(cfg), stage="pretrain", rt=rt, resume=resume, overwrite=overwrite,
              compatible_keys=("model", "data"))
    run_dir = run.run_dir
    seed_everything(cfg.train.seed)
    tokenizer, sources, eval_data = prepare_data(cfg, run_dir, rt)
    cfg.model.vocab_size = max(cfg.model.vocab_size, tokenizer.vocab_size) if cfg.data.tokenizer else tokenizer.vocab_size
    cfg.model.eos_token_id, cfg.model.bos_token_id = tokenizer.eos_id, tokenizer.bos_id
    if rt.is_main:
        dump(cfg, run_dir / "config.yaml")
    set_attention_backend(cfg.train.attention_backend)
    model = build_parallel_model(cfg.model, rt, seed=cfg.train.seed, compile=cfg.train.compile,
                                 activation_checkpointing=cfg.train.activation_checkpointing, scope=cfg.train.compile_scope)
    model.fused_loss = cfg.train.fused_loss
    o = cfg.optim
    optimizer = build_optimizer(model, o.lr, o.betas, o.eps, o.weight_decay, rt.device)
    stage = PretrainStage(cfg, model, Trainer(model, optimizer, rt, o.grad_clip), build_loader(cfg, sources, rt),
                          rt, tokenizer, eval_data)
    state = run.begin(model, optimizer)
    if state is not None:
        stage.load_state_dict(state)
        run.print(f"continuing at {stage.tokens} tokens")
    out = run.train(stage)
    result = {"step": run.step, "tokens": stage.tokens, "train_time_s": out["time_s"]}
    final = run_dir / "final"
    export_hf(model, final, tokenizer, cfg, rt)
    result["eval"] = stage.evaluate()["eval"]
    if rt.is_main:
        run.metrics.log({"final_eval": result["eval"], "tokens": stage.tokens}, step=run.step)
        ev = result["eval"]
        mtp_acc = ", ".join(f"{a:.3f}" for a in ev.get("mtp_acc", []))
        print(f"[pretrain] {run.step} steps, {stage.tokens} tokens in {result['train_time_s']:.0f}s; held-out math "
              f"accuracy {ev['math_acc']:.3f} ({ev['math_n']} problems); next-token acc {ev['main_acc']:.3f}; "
              f"MTP acc per depth [{mtp_acc}]; model -> {final}")
    run.close()
    return result


def add_arguments(parser):
    config_args(parser, resume=True, example="optim.lr=3e-4 train.max_steps=10")


def run(args):
    main(load_stage_config(PretrainConfig, args), resume=args.resume, overwrite=args.overwrite)
