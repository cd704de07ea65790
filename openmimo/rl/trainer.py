"""`openmimo rl CONFIG`: MiMo's modified GRPO driven by the Seamless Rollout Engine (colocated with the actor).

One iteration: ``SeamlessRollout.collect()`` (generation engine + asynchronous rewards + dynamic
sampling + easy pool + FIFO early termination) -> group-normalised advantages -> ``ppo_epochs`` passes
over the batch in mini-batches of ``ppo_mini_batch_size`` groups, each one :meth:`Trainer.step` with
:class:`RLObjective` (token-level global normalisation) -> the new weights copied into the engine's
model (``Engine.update_weights``).  Periodic validation streams through the same engine and rewards
(avg@k, unbiased pass@k).  Checkpoints hold model, optimizer, sampler, rollout counters and RNG, so
``--resume`` continues the run exactly.

Old log-probs are the engine's (temperature-1, unfiltered — the same numbers a training forward
gives in float32); ``recompute_old_logprobs`` recomputes them with the training model instead
(for bf16 engines, whose numbers drift from the trainer's).
No reference model unless kl_coef > 0 (which keeps a frozen copy).  Under torchrun each rank holds one FSDP2 shard
of the actor and its own engine and prompts (:mod:`openmimo.rl.sharded`: ``rollout.batch_groups`` and
``actor.ppo_mini_batch_size`` are global and split over the ranks, the update equals one rank's over the whole
batch, the new weights are all-gathered into every engine, validation is split over the ranks).

The pieces it drives live beside it: the configuration in :mod:`openmimo.rl.config`, the problems in
:mod:`openmimo.rl.problems`, their scoring in :mod:`openmimo.rl.backends` (``make_score_fn``), the batches in
:mod:`openmimo.rl.batching`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from openmimo.config import ConfigError, config_args, load_stage_config, to_dict
from openmimo.eval.passk import summarise_validation
from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.hf import load_model
from openmimo.model.mimo import build_model
from openmimo.model.parallel import is_sharded, parallelize
from openmimo.rewards.math import require_math_verify
from openmimo.rewards.pool import RewardPool
from openmimo.rewards.ray_pool import RayRewardPool
from openmimo.rl.advantage import group_advantages
from openmimo.rl.backends import EngineBackend, PoolRewards, make_score_fn
from openmimo.rl.batching import build_sequences, collate, response_logprobs
from openmimo.rl.config import RLConfig
from openmimo.rl.loss import RLObjective, summarise_step
from openmimo.rl.problems import load_problems
from openmimo.rl.ray_rollout import RayRolloutBackend
from openmimo.rl.rollout import SeamlessRollout, generate_and_score
from openmimo.rl.sampler import ProblemSampler
from openmimo.rl.sharded import equalize, gathered_state_dict, per_rank
from openmimo.runtime import init_runtime, seed_everything
from openmimo.tokenizer import load_tokenizer
from openmimo.train.loop import Trainer, build_optimizer
from openmimo.train.run import Run
from openmimo.train.schedule import lr_at_progress


class RLRun:
    """The Python API: ``RLRun(cfg).train()``; also ``validate()``.  Owns model, engine, pool, sampler."""

    def __init__(self, cfg: RLConfig, resume: bool = False, overwrite: bool = False):
        self.cfg, t = cfg, cfg.train
        self.rt = init_runtime(t.device, t.dtype)
        self.run = Run(t, to_dict(cfg), stage="rl", rt=self.rt, resume=resume, overwrite=overwrite,
                       compatible_keys=("train.model_path", "data"))
        self.run_dir = self.run.run_dir
        seed_everything(t.seed)
        self.tok = load_tokenizer(t.model_path)
        dev = self.rt.device
        self.model = load_model(t.model_path, dtype=torch.float32, device=dev)
        # RL's loss is the main model's next token only: the MTP layers (kept for speculative decoding) get no
        # gradient, so they are frozen -- without optimizer state they could not be checkpointed and resumed
        self.model.model.mtp_layers.requires_grad_(False)
        gen_model = load_model(t.model_path, dtype=self.rt.dtype if dev.type == "cuda" else torch.float32, device=dev)
        self.ref = copy.deepcopy(self.model).eval() if cfg.actor.kl_coef > 0 else None
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.actor.ema_decay > 0 else None
        a = cfg.actor
        self.model_config = self.model.config
        rank = self.rt.rank
        self.mini_groups = per_rank(a.ppo_mini_batch_size, self.rt, "actor.ppo_mini_batch_size")
        rollout_cfg = dataclasses.replace(cfg.rollout, batch_groups=per_rank(cfg.rollout.batch_groups, self.rt,
                                                                               "rollout.batch_groups"))
        parallelize(self.model, self.rt, offload=t.cpu_offload)  # FSDP2 under torchrun or offload; else nothing
        opt_dev = torch.device("cpu") if t.cpu_offload else dev  # where the optimizer state and step live
        self.optimizer = build_optimizer(self.model, a.lr, (0.9, 0.999), 1e-8, a.weight_decay, opt_dev)
        self.trainer = Trainer(self.model, self.optimizer, self.rt, a.grad_clip)
        d = cfg.data
        self.problems, self.data_counts = load_problems(d.train_path, d.kind, self.tok, d.max_prompt_tokens,
                                                        d.max_problems, d.levels, d.prompt_style)
        n_main = len(self.problems)
        if d.easy_path:
            easy, easy_counts = load_problems(d.easy_path, d.kind, self.tok, d.max_prompt_tokens, 0, d.levels,
                                              d.prompt_style)
            self.problems = self.problems + easy
            self.data_counts = {**self.data_counts, "easy_pool": easy_counts["kept"]}
        self.val = load_problems(d.val_path, d.kind, self.tok, d.max_prompt_tokens, d.val_problems,
                                 d.val_levels, d.prompt_style)[0] if d.val_path else []
        if any(p["reward_kind"] == "math" for p in self.problems + self.val):
            require_math_verify()
        g = cfg.gen
        stop = tuple(x for x in (self.tok.eos_id,) if x is not None)
        self.params = SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                     stop_ids=stop)
        gen_seed = t.seed + 7919 * rank
        scope = "block" if g.release_during_update else g.compile_scope
        if g.backend == "ray":  # rollout workers on Ray, each with its own engine (openmimo/rl/ray_rollout.py)
            self.engine = None
            self.backend = RayRolloutBackend(
                gen_model.config.to_hf_dict(), gen_model.state_dict(), self.params, workers=g.workers, seed=gen_seed,
                engine_kwargs={"max_slots": g.max_slots, "max_len": g.max_len, "compile_scope": scope},
                gpus_per_worker=g.gpus_per_worker,
                address=t.ray_address or None, extra_cpus=t.reward_workers if t.reward_backend == "ray" else 0,
                weight_sync=g.weight_sync)
            del gen_model
        else:
            self.engine = Engine(gen_model, max_slots=g.max_slots, max_len=g.max_len, seed=gen_seed,
                                 compile_scope=scope)
            self.backend = EngineBackend(self.engine, self.params, seed=gen_seed)
        if t.reward_backend == "ray":
            self.pool = RayRewardPool(t.reward_workers, timeout=t.reward_timeout, address=t.ray_address or None)
        else:
            self.pool = RewardPool(t.reward_workers, timeout=t.reward_timeout)
        self.rewards = PoolRewards(make_score_fn(d.kind, self.tok, self.pool, t.reward_timeout, t.code_reward,
                                                   d.prompt_style))
        self.sampler = ProblemSampler(len(self.problems), seed=t.seed + 104729 * rank)  # a prompt stream per rank
        self.sampler.pool.extend(range(n_main, len(self.problems)))  # the curated easy pool
        self.rollout = SeamlessRollout(self.backend, self.rewards, self.sampler, self.problems, rollout_cfg)
        self.metrics = self.run.metrics
        state = self.run.begin(self.model, self.optimizer)
        if state is not None:
            self.load_state_dict(state)

    # the run's counters: the step and the wall time so far, across resumes (what the time guard and lr_horizon read)
    @property
    def step(self) -> int:
        return self.run.step

    @step.setter
    def step(self, value: int) -> None:
        self.run.step = value

    @property
    def elapsed_s(self) -> float:
        return self.run.elapsed_s

    @elapsed_s.setter
    def elapsed_s(self, value: float) -> None:
        self.run.elapsed_s = value

    # -- the stage interface of openmimo.train.run.Run ------------------------------------------------
    def state_dict(self) -> dict:
        mine = {"sampler": self.sampler.state_dict(), "rollout": self.rollout.state_dict(),
                "backend_seed": self.backend.seed}
        ema = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        if not self.rt.distributed:
            return {**mine, **ema}
        ranks = [None] * self.rt.world_size  # rank 0 writes the checkpoint: it holds every rank's streams
        dist.all_gather_object(ranks, mine)
        return {"ranks": ranks, **ema}

    def load_state_dict(self, state: dict) -> None:
        if "ranks" in state or self.rt.distributed:
            if len(state.get("ranks", ())) != self.rt.world_size:
                raise ConfigError(f"{self.run_dir}: the checkpoint was written by {len(state.get('ranks', [0]))} "
                                  f"rank(s); resume it with as many (this run has {self.rt.world_size})")
            mine = state["ranks"][self.rt.rank]
        else:
            mine = state
        self.sampler.load_state_dict(mine["sampler"])
        self.rollout.load_state_dict(mine["rollout"])
        self.backend.seed = mine["backend_seed"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if "ema" in state else self.weights())
        self.backend.update_weights(self.weights())

    def weights(self):
        """The actor's weights for the engine: the model itself on one rank, all-gathered under FSDP2 (collective)."""
        return gathered_state_dict(self.model) if is_sharded(self.model) else self.model

    def done(self) -> bool:
        return self.step >= self.cfg.train.max_steps

    def progress(self) -> float:
        return self.step / max(self.cfg.train.max_steps, 1)

    def evaluate(self) -> dict:
        return {"val": self.validate()}

    def save(self) -> Path:
        return self.run.save(self.state_dict())

    def lr(self) -> float:
        """This iteration's learning rate: the schedule at the share of the run done (steps, or the time budget)."""
        a, t = self.cfg.actor, self.cfg.train
        progress = self.step / max(t.max_steps, 1)
        if a.lr_horizon == "budget" and t.time_limit_s:
            progress = max(progress, self.elapsed_s / t.time_limit_s)
        return lr_at_progress(progress, a.lr, a.lr_scheduler_type, a.min_lr_ratio, self.step, a.lr_warmup_steps)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * weights, after each iteration's updates."""
        w = 1.0 - self.cfg.actor.ema_decay
        weights = gathered_state_dict(self.model) if is_sharded(self.model) else dict(self.model.named_parameters())
        for name, e in self.ema.named_parameters():
            e.lerp_(weights[name].detach(), w)

    def validate(self) -> dict:
        """avg@k and pass@k on the held-out problems, streamed through the engine with async rewards."""
        if not self.val:
            return {}
        t = self.cfg.train
        saved = self.backend.params
        self.backend.params = dataclasses.replace(saved, temperature=t.val_temperature, top_p=t.val_top_p)
        if self.ema is not None:  # validate what is exported: the averaged weights
            self.backend.update_weights(self.ema)
        rank, world = self.rt.rank, self.rt.world_size
        mine = [(p["prompt_ids"], p) for p in self.val[rank::world]]  # each rank validates every world-th problem
        scores = generate_and_score(self.backend, self.rewards, mine, t.val_n) if mine else []
        if self.rt.distributed:
            parts = [None] * world
            dist.all_gather_object(parts, scores)
            scores = [parts[i % world][i // world] for i in range(len(self.val))]
        if self.ema is not None:
            self.backend.update_weights(self.weights())
        self.backend.params = saved
        ks = sorted({1, t.val_n})
        out = summarise_validation(scores, ks=ks)
        kinds = sorted({p["reward_kind"] for p in self.val})
        if len(kinds) > 1:  # mixed math + code: each kind on its own too
            for k in kinds:
                out[k] = summarise_validation([s for s, p in zip(scores, self.val) if p["reward_kind"] == k], ks=ks)
        return out

    def update(self, groups) -> dict:
        """Advantages, then ppo_epochs x mini-batches of Trainer.step with the RL objective."""
        a, pad = self.cfg.actor, self.tok.pad_id if self.tok.pad_id is not None else 0
        advs = [group_advantages([g.rewards], std_floor=a.std_floor)[0] for g in groups]
        objective = RLObjective(a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode, a.kl_coef, a.entropy_coeff)
        n = self.cfg.rollout.n
        seqs = build_sequences(groups, advs, pad)
        if a.recompute_old_logprobs or self.ref is not None:
            for i in range(0, len(seqs), a.ppo_micro_batch_size_per_gpu):
                part = seqs[i:i + a.ppo_micro_batch_size_per_gpu]
                mb = collate(part, pad)
                if a.recompute_old_logprobs:
                    lp = response_logprobs(self.model, mb)
                    for s, row in zip(part, lp):
                        s["old"] = row[: len(s["ids"])].tolist()
                if self.ref is not None:
                    lp = response_logprobs(self.ref, mb)
                    for s, row in zip(part, lp):
                        s["ref"] = row[: len(s["ids"])].tolist()
        totals: dict = {}
        lr = self.lr()
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 7919 + self.step)
        updates = 0
        for _ in range(a.ppo_epochs):
            order = torch.randperm(len(groups), generator=gen).tolist()
            for i in range(0, len(order), self.mini_groups):
                mini = [s for gi in order[i:i + self.mini_groups] for s in seqs[gi * n:(gi + 1) * n]]
                mbs = []
                for j in range(0, len(mini), a.ppo_micro_batch_size_per_gpu):
                    part = mini[j:j + a.ppo_micro_batch_size_per_gpu]
                    mb = collate(part, pad)
                    if self.ref is not None:
                        mb["ref_logprobs"] = collate([{**s, "old": s["ref"]} for s in part], pad)["old_logprobs"]
                    mbs.append(mb)
                st = self.trainer.step(mbs, objective, lr)
                updates += 1
                for k, v in st.items():
                    totals[k] = totals.get(k, 0.0) + v
        out = summarise_step(totals, objective.extrema)
        if self.ema is not None:
            self.update_ema()
        out.update({"lr": lr, "updates": updates, "grad_norm": totals.get("grad_norm", 0.0) / max(updates, 1),
                    "update_time_s": totals.get("step_time_s", 0.0)})
        return out

    def train_step(self) -> dict:
        """One iteration: rollout, update, weight sync; returns its metrics record."""
        groups, roll = self.rollout.collect()
        groups, dropped = equalize(groups, self.rt)  # every rank enters the same number of optimizer steps
        rec = {f"rollout/{k}": v for k, v in roll.items()}
        if self.rt.distributed:
            rec["rollout/groups_dropped_to_equalize"] = dropped
        if roll.get("reward_errors"):
            warnings.warn(f"rl step {self.step + 1}: {roll['reward_errors']} rewards crashed or timed out "
                          f"({100 * roll['reward_error_rate']:.0f}%), scored 0", RuntimeWarning, stacklevel=1)
        if groups:
            if self.cfg.gen.release_during_update:  # the update gets the engine's device memory
                rec["gen/released_gb"] = self.engine.sleep(offload_weights=True) / 1e9
            upd = self.update(groups)
            t0 = time.perf_counter()
            if self.engine is not None:
                self.engine.wake()  # no-op unless it slept
            self.backend.update_weights(self.weights())
            rec["time/weight_sync_s"] = time.perf_counter() - t0
            rec.update({f"actor/{k}": v for k, v in upd.items()})
            total = torch.tensor([sum(sum(g.rewards) for g in groups), len(groups) * self.cfg.rollout.n],
                                 dtype=torch.float64)
            if self.rt.distributed:
                dist.all_reduce(total)
            rec["reward_mean"] = float(total[0] / total[1])
        rec["loss"] = rec.get("actor/pg_loss", 0.0)
        return rec

    def train(self) -> dict:
        history = {}
        if self.step == 0:
            history["val_start"] = self.validate()
            self.metrics.log({"val": history["val_start"]}, step=0)
            self.run.print(f"step 0 validation: {history['val_start']}")
        out = self.run.train(self)
        history["steps"] = self.step
        history["val_end"] = self.validate()
        self.metrics.log({"val_final": history["val_end"]}, step=self.step)
        self.export(self.run_dir / "final")
        self.run.print(f"{self.step} steps in {out['time_s']:.0f}s; validation {history['val_end']}; "
                       f"model -> {self.run_dir / 'final'}")
        return history

    def export(self, path: Path) -> None:
        """The final model (the averaged weights with ema_decay) in the Hugging Face layout; rank 0 writes."""
        if self.ema is not None or not is_sharded(self.model):
            if self.rt.is_main:
                (self.ema if self.ema is not None else self.model).save_pretrained(path, tokenizer=self.tok)
        else:
            weights = gathered_state_dict(self.model)
            if self.rt.is_main:
                out = build_model(self.model_config, device="cpu", dtype=torch.float32, init=False)
                out.load_state_dict({k: v.cpu() for k, v in weights.items()})
                out.save_pretrained(path, tokenizer=self.tok)
        if self.rt.distributed:
            dist.barrier()

    def close(self) -> None:
        self.pool.close()
        if hasattr(self.backend, "close"):  # Ray rollout workers
            self.backend.close()
        self.run.close()


def main(cfg: RLConfig, resume: bool = False, overwrite: bool = False) -> dict:
    run = RLRun(cfg, resume=resume, overwrite=overwrite)
    try:
        return run.train()
    finally:
        run.close()


def add_arguments(parser):
    config_args(parser, resume=True, example="train.model_path=runs/tiny/final actor.lr=1e-4 train.max_steps=10")


def run(args):
    main(load_stage_config(RLConfig, args), resume=args.resume, overwrite=args.overwrite)
