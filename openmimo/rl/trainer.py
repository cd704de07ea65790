"""`openmimo rl CONFIG`: MiMo's modified GRPO driven by the Seamless Rollout Engine (colocated, one device).

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
Simplified: one process, one device; no reference model (kl_coef > 0 keeps a frozen copy).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from openmimo.rl.rollout import RolloutConfig
from openmimo.train.run import RunConfig


@dataclass
class RLDataConfig:
    # JSONL file(s) of problems (math: problem, answer; code: question_content + tests)
    train_path: str | list[str] = ""
    val_path: str | list[str] = ""  # held-out JSONL file(s) for validation ("" = no validation)
    # problems the model already solves (openmimo curate's <stem>.easy.jsonl): in the easy pool from the start,
    # drawn at the easy-pool rate; one that stops being solved every time joins the main data
    easy_path: str | list[str] = ""
    kind: str = "math"  # math | code | auto (auto: per record, code if it has "tests", math otherwise)
    max_problems: int = 0  # use only the first N training problems of each file (0 = all)
    val_problems: int = 32  # validation problems (first N of each val file)
    max_prompt_tokens: int = 256  # longer prompts are dropped (counted)
    # keep only training records of these "level"s ([] = all); records without a level (code) are kept
    levels: list[int] = field(default_factory=list)
    # the same filter for validation records ([] = all): measure on the distribution RL trains on
    val_levels: list[int] = field(default_factory=list)

    def check(self):
        if self.kind not in ("math", "code", "auto"):
            raise ValueError(f"key 'kind' must be math, code or auto, got {self.kind!r}")


def _paths(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass
class ActorConfig:  # verl's actor_rollout_ref.actor names
    lr: float = 1e-5  # peak learning rate
    lr_scheduler_type: str = "constant"  # constant | cosine | linear (decay to min_lr_ratio * lr at the run's end)
    min_lr_ratio: float = 0.0
    lr_warmup_steps: int = 0
    # what "the run's end" is for the decay: steps (train.max_steps) or budget (whichever of train.max_steps and
    # train.time_limit_s comes first, so a time-guarded run still ends annealed)
    lr_horizon: str = "steps"
    ema_decay: float = 0.0  # > 0: an exponential moving average of the weights is validated and exported
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_ratio_low: float = 0.2  # eps_low
    clip_ratio_high: float = 0.28  # eps_high (clip-higher)
    loss_agg_mode: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum
    kl_coef: float = 0.0  # 0 = no KL and no reference model
    entropy_coeff: float = 0.0
    ppo_mini_batch_size: int = 4  # groups per optimizer step (the paper: 32 of 512)
    ppo_micro_batch_size_per_gpu: int = 16  # sequences per forward
    ppo_epochs: int = 1  # passes over the batch per iteration
    std_floor: float = 1e-6  # advantages: (r - mean) / max(std, floor)
    recompute_old_logprobs: bool = False

    def check(self):
        if self.lr <= 0 or self.ppo_mini_batch_size < 1 or self.ppo_micro_batch_size_per_gpu < 1 or self.ppo_epochs < 1:
            raise ValueError("key 'lr', 'ppo_mini_batch_size', 'ppo_micro_batch_size_per_gpu', 'ppo_epochs' must be positive")
        if self.lr_scheduler_type not in ("constant", "cosine", "linear"):
            raise ValueError(f"key 'lr_scheduler_type' must be constant, cosine or linear, got {self.lr_scheduler_type!r}")
        if self.lr_horizon not in ("steps", "budget"):
            raise ValueError(f"key 'lr_horizon' must be steps or budget, got {self.lr_horizon!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0 or not 0.0 <= self.ema_decay < 1.0 or self.lr_warmup_steps < 0:
            raise ValueError("key 'min_lr_ratio' must be in [0, 1], 'ema_decay' in [0, 1), 'lr_warmup_steps' >= 0")


@dataclass
class GenConfig:
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    max_slots: int = 64  # engine slots (concurrent sequences)
    max_len: int = 512


@dataclass
class RLTrainConfig(RunConfig):
    """The shared run section (:class:`openmimo.train.run.RunConfig`; ``max_steps``: rollout + update
    iterations, also the learning-rate horizon) plus RL's own keys."""

    RENAMED = {"steps": "max_steps", "val_every": "eval_every"}
    out_dir: str = "runs/rl"
    max_steps: int = 20  # rollout + update iterations
    dtype: str = "float32"
    eval_every: int = 10  # iterations between validations (0 = only at the start and the end)
    ckpt_every: int = 10
    model_path: str = ""  # HF-layout checkpoint with tokenizer (e.g. runs/tiny/final)
    val_n: int = 4  # samples per validation problem (avg@k, pass@k)
    val_temperature: float = 0.6  # the evaluation protocol (MiMo's): temperature 0.6, top-p 0.95
    val_top_p: float = 0.95
    reward_workers: int = 2
    reward_timeout: float = 10.0
    # code reward (MiMo's test-difficulty reward): binary (all tests pass) | strict | soft, over each record's
    # test_levels (written by openmimo curate / calibrate-tests); without levels soft = the fraction passed
    code_reward: str = "soft"
    reward_backend: str = "process"  # process (worker processes) | ray (Ray tasks: pip install openmimo[ray])
    ray_address: str = ""  # reward_backend ray: "" = a local Ray instance; "auto" / "ray://host:10001" = a cluster

    def check(self):
        super().check()
        if self.max_steps < 1:
            raise ValueError("key 'max_steps' must be >= 1 (RL's iterations; the learning-rate horizon)")
        if self.code_reward not in ("binary", "strict", "soft"):
            raise ValueError(f"key 'code_reward' must be binary, strict or soft, got {self.code_reward!r}")
        if self.reward_backend not in ("process", "ray"):
            raise ValueError(f"key 'reward_backend' must be process or ray, got {self.reward_backend!r}")
        if self.ray_address and self.reward_backend != "ray":
            raise ValueError("key 'ray_address' is only used with reward_backend: ray")
        if self.reward_backend == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise ValueError("key 'reward_backend': ray needs Ray: pip install openmimo[ray]")


@dataclass
class RLConfig:
    data: RLDataConfig = field(default_factory=RLDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    gen: GenConfig = field(default_factory=GenConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)

    def check(self):
        if not self.train.model_path:
            raise ValueError("key 'train.model_path' is required (an HF-layout checkpoint)")


# -- data -------------------------------------------------------------------------------------------
def load_problems(path, kind: str, tokenizer, max_prompt_tokens: int, limit: int = 0,
                  levels=()) -> tuple[list, dict]:
    """JSONL file(s) -> problem dicts with ``prompt_ids`` and ``reward_kind``; returns (problems,
    counts of kept/dropped and why, per kind).  ``limit`` applies to each file.

    ``kind`` "auto" decides per record: code when it has ``tests``, math otherwise.  ``levels``
    keeps only records whose ``level`` is listed (difficulty filtering, as MiMo curated its RL
    problems to those the starting model can sometimes solve); records without a level are kept."""
    from openmimo.config import ConfigError

    out, counts = [], {"kept": 0, "too_long": 0, "other_level": 0, "math": 0, "code": 0}
    for p in _paths(path):
        out += _load_file(Path(p), kind, tokenizer, max_prompt_tokens, limit, levels, counts)
    if not out:
        raise ConfigError(f"{', '.join(map(str, _paths(path)))}: no usable problems ({counts})")
    return out, counts


# the task (record format, base-model prompt, scorer) of each reward kind: the tiny world's formats
RL_TASKS = {"math": "world_math", "code": "world_code"}


def _load_file(p: Path, kind: str, tokenizer, max_prompt_tokens: int, limit: int, levels, counts: dict) -> list:
    from openmimo.eval.tasks import get_task
    from openmimo.jsonl import iter_jsonl

    out = []
    for ln, rec in iter_jsonl(p, what="problem file"):
        if levels and "level" in rec and rec["level"] not in levels:
            counts["other_level"] += 1
            continue
        rkind = kind if kind != "auto" else ("code" if "tests" in rec else "math")
        task = get_task(RL_TASKS[rkind])
        task.check(rec, f"{p}:{ln}")
        # the pre-training text's format (a code prompt opens the code fence)
        ids = tokenizer.encode(task.prompt(rec, style="base"))
        if len(ids) > max_prompt_tokens:
            counts["too_long"] += 1
            continue
        out.append({**rec, "prompt_ids": ids, "reward_kind": rkind})
        counts["kept"] += 1
        counts[rkind] += 1
        if limit and len(out) >= limit:
            break
    return out


def make_score_fn(kind: str, tokenizer, pool, timeout: float, code_scheme: str = "soft"):
    """(problem, Finished) -> Future[RewardResult] through the problem's task: math in the reward pool's
    processes, code in the judge (which already runs tests in parallel, isolated and time-limited) with
    ``code_scheme`` and the record's ``test_levels``.

    ``kind`` "auto" follows each problem's ``reward_kind`` (set by :func:`load_problems`)."""
    from openmimo.eval.tasks import get_task

    def score(problem, fin):
        text = tokenizer.decode(fin.token_ids, skip_special_tokens=True)
        task = get_task(RL_TASKS[problem.get("reward_kind", kind)])
        return task.submit_score(problem, text, style="base", pool=pool, timeout=timeout, scheme=code_scheme)

    return score


# -- batches ----------------------------------------------------------------------------------------
def build_sequences(groups, advantages, pad_id: int) -> list[dict]:
    """One record per sample: prompt + response ids, response mask, old log-probs, advantage."""
    seqs = []
    for g, adv in zip(groups, advantages):
        for s, a in zip(g.samples, adv.tolist()):
            ids = list(g.prompt_ids) + list(s.token_ids)
            P = len(g.prompt_ids)
            mask = [0] * P + [1] * len(s.token_ids)
            old = [0.0] * P + [float(x) for x in s.logprobs]
            seqs.append({"ids": ids, "mask": mask, "old": old, "adv": float(a)})
    return seqs


def collate(seqs: list[dict], pad_id: int) -> dict:
    T = max(len(s["ids"]) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask, old = torch.zeros(B, T), torch.zeros(B, T)
    for i, s in enumerate(seqs):
        n = len(s["ids"])
        ids[i, :n] = torch.tensor(s["ids"])
        mask[i, :n] = torch.tensor(s["mask"], dtype=torch.float32)
        old[i, :n] = torch.tensor(s["old"])
    return {"input_ids": ids, "response_mask": mask, "old_logprobs": old,
            "advantages": torch.tensor([s["adv"] for s in seqs])}


@torch.no_grad()
def _logprobs(model, mb: dict) -> torch.Tensor:
    from openmimo.rl.loss import token_logprobs_and_entropy

    ids = mb["input_ids"]
    lp, _ = token_logprobs_and_entropy(model(ids[:, :-1]).logits, ids[:, 1:])
    out = torch.zeros_like(mb["old_logprobs"])
    out[:, 1:] = lp.cpu() * mb["response_mask"][:, 1:]
    return out


# -- the run ----------------------------------------------------------------------------------------
class RLRun:
    """The Python API: ``RLRun(cfg).train()``; also ``validate()``.  Owns model, engine, pool, sampler."""

    def __init__(self, cfg: RLConfig, resume: bool = False, overwrite: bool = False):
        from openmimo.infer.engine import Engine, SamplingParams
        from openmimo.model.hf import load_model
        from openmimo.rewards.pool import RewardPool
        from openmimo.rl.backends import EngineBackend, PoolRewards
        from openmimo.rl.rollout import SeamlessRollout
        from openmimo.rl.sampler import ProblemSampler
        from openmimo.config import to_dict
        from openmimo.runtime import init_runtime, seed_everything
        from openmimo.tokenizer import load_tokenizer
        from openmimo.train.loop import Trainer, build_optimizer
        from openmimo.train.run import Run

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
        self.optimizer = build_optimizer(self.model, a.lr, (0.9, 0.999), 1e-8, a.weight_decay, dev)
        self.trainer = Trainer(self.model, self.optimizer, self.rt, a.grad_clip)
        d = cfg.data
        self.problems, self.data_counts = load_problems(d.train_path, d.kind, self.tok, d.max_prompt_tokens,
                                                        d.max_problems, d.levels)
        n_main = len(self.problems)
        if d.easy_path:
            easy, easy_counts = load_problems(d.easy_path, d.kind, self.tok, d.max_prompt_tokens, 0, d.levels)
            self.problems = self.problems + easy
            self.data_counts = {**self.data_counts, "easy_pool": easy_counts["kept"]}
        self.val = load_problems(d.val_path, d.kind, self.tok, d.max_prompt_tokens, d.val_problems,
                                 d.val_levels)[0] if d.val_path else []
        if any(p["reward_kind"] == "math" for p in self.problems + self.val):
            from openmimo.rewards.math import require_math_verify

            require_math_verify()
        g = cfg.gen
        self.engine = Engine(gen_model, max_slots=g.max_slots, max_len=g.max_len, seed=t.seed)
        stop = tuple(x for x in (self.tok.eos_id,) if x is not None)
        self.params = SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                                     stop_ids=stop)
        self.backend = EngineBackend(self.engine, self.params, seed=t.seed)
        if t.reward_backend == "ray":
            from openmimo.rewards.ray_pool import RayRewardPool

            self.pool = RayRewardPool(t.reward_workers, timeout=t.reward_timeout, address=t.ray_address or None)
        else:
            self.pool = RewardPool(t.reward_workers, timeout=t.reward_timeout)
        self.rewards = PoolRewards(make_score_fn(d.kind, self.tok, self.pool, t.reward_timeout, t.code_reward))
        self.sampler = ProblemSampler(len(self.problems), seed=t.seed)
        self.sampler.pool.extend(range(n_main, len(self.problems)))  # the curated easy pool
        self.rollout = SeamlessRollout(self.backend, self.rewards, self.sampler, self.problems, cfg.rollout)
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
        return {"sampler": self.sampler.state_dict(), "rollout": self.rollout.state_dict(),
                "backend_seed": self.backend.seed, **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.rollout.load_state_dict(state["rollout"])
        self.backend.seed = state["backend_seed"]
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if "ema" in state else self.model.state_dict())
        self.engine.update_weights(self.model)

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
        from openmimo.train.schedule import lr_at_progress

        a, t = self.cfg.actor, self.cfg.train
        progress = self.step / max(t.max_steps, 1)
        if a.lr_horizon == "budget" and t.time_limit_s:
            progress = max(progress, self.elapsed_s / t.time_limit_s)
        return lr_at_progress(progress, a.lr, a.lr_scheduler_type, a.min_lr_ratio, self.step, a.lr_warmup_steps)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * weights, after each iteration's updates."""
        w = 1.0 - self.cfg.actor.ema_decay
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), w)

    def validate(self) -> dict:
        """avg@k and pass@k on the held-out problems, streamed through the engine with async rewards."""
        import dataclasses

        from openmimo.eval.passk import summarise_validation
        from openmimo.rl.rollout import generate_and_score

        if not self.val:
            return {}
        t = self.cfg.train
        saved = self.backend.params
        self.backend.params = dataclasses.replace(saved, temperature=t.val_temperature, top_p=t.val_top_p)
        if self.ema is not None:  # validate what is exported: the averaged weights
            self.engine.update_weights(self.ema)
        scores = generate_and_score(self.backend, self.rewards, [(p["prompt_ids"], p) for p in self.val], t.val_n)
        if self.ema is not None:
            self.engine.update_weights(self.model)
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
        from openmimo.rl.advantage import group_advantages
        from openmimo.rl.loss import RLObjective, summarise_step

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
                    lp = _logprobs(self.model, mb)
                    for s, row in zip(part, lp):
                        s["old"] = row[: len(s["ids"])].tolist()
                if self.ref is not None:
                    lp = _logprobs(self.ref, mb)
                    for s, row in zip(part, lp):
                        s["ref"] = row[: len(s["ids"])].tolist()
        totals: dict = {}
        lr = self.lr()
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 7919 + self.step)
        updates = 0
        for _ in range(a.ppo_epochs):
            order = torch.randperm(len(groups), generator=gen).tolist()
            for i in range(0, len(order), a.ppo_mini_batch_size):
                mini = [s for gi in order[i:i + a.ppo_mini_batch_size] for s in seqs[gi * n:(gi + 1) * n]]
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
        rec = {f"rollout/{k}": v for k, v in roll.items()}
        if roll.get("reward_errors"):
            import warnings

            warnings.warn(f"rl step {self.step + 1}: {roll['reward_errors']} rewards crashed or timed out "
                          f"({100 * roll['reward_error_rate']:.0f}%), scored 0", RuntimeWarning, stacklevel=1)
        if groups:
            upd = self.update(groups)
            t0 = time.perf_counter()
            self.engine.update_weights(self.model)
            rec["time/weight_sync_s"] = time.perf_counter() - t0
            rec.update({f"actor/{k}": v for k, v in upd.items()})
            rec["reward_mean"] = sum(sum(g.rewards) for g in groups) / (len(groups) * self.cfg.rollout.n)
        rec["loss"] = rec.get("actor/pg_loss", 0.0)
        return rec

    def train(self) -> dict:
        history = {}
        if self.step == 0:
            history["val_start"] = self.validate()
            self.metrics.log({"val": history["val_start"]}, step=0)
            print(f"[rl] step 0 validation: {history['val_start']}")
        out = self.run.train(self)
        history["steps"] = self.step
        history["val_end"] = self.validate()
        self.metrics.log({"val_final": history["val_end"]}, step=self.step)
        (self.ema if self.ema is not None else self.model).save_pretrained(self.run_dir / "final", tokenizer=self.tok)
        print(f"[rl] {self.step} steps in {out['time_s']:.0f}s; validation {history['val_end']}; "
              f"model -> {self.run_dir / 'final'}")
        return history

    def close(self) -> None:
        self.pool.close()
        self.run.close()


def main(cfg: RLConfig, resume: bool = False, overwrite: bool = False) -> dict:
    run = RLRun(cfg, resume=resume, overwrite=overwrite)
    try:
        return run.train()
    finally:
        run.close()


def add_arguments(parser):
    from openmimo.config import config_args

    config_args(parser, resume=True, example="train.model_path=runs/tiny/final actor.lr=1e-4 train.max_steps=10")


def run(args):
    from openmimo.config import load_stage_config

    main(load_stage_config(RLConfig, args), resume=args.resume, overwrite=args.overwrite)
