"""The configuration of `openmimo rl`: its five sections (data, rollout, actor, gen, train) as dataclasses.

``RLConfig`` is what ``openmimo rl CONFIG key=value ...`` loads (:func:`openmimo.config.load_stage_config`);
each ``check`` names the key it refuses.  The actor's names are verl's ``actor_rollout_ref.actor`` ones.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

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
    # how problems are put to the model: base (the pre-training text's "Problem: ...\nSolution:") or chat (the
    # checkpoint's own chat template with the generation prompt: an SFT model); answers are read after the
    # reasoning block either way
    prompt_style: str = "base"

    def check(self):
        if self.kind not in ("math", "code", "auto"):
            raise ValueError(f"key 'kind' must be math, code or auto, got {self.kind!r}")
        if self.prompt_style not in ("base", "chat"):
            raise ValueError(f"key 'prompt_style' must be base or chat, got {self.prompt_style!r}")


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
    max_slots: int = 64  # engine slots (concurrent sequences), per engine
    max_len: int = 512
    # local: one engine in the trainer's process | ray: `workers` rollout workers on Ray (openmimo/rl/ray_rollout.py),
    # each with its own engine of max_slots slots, `gpus_per_worker` GPUs each, weights sent after every update
    backend: str = "local"
    workers: int = 2
    gpus_per_worker: float = 0.0
    # backend ray: object_store (through Ray's object store, host memory) | collective (one broadcast over a
    # process group of the trainer and the workers: NCCL between GPUs, gloo otherwise)
    weight_sync: str = "object_store"
    # local backend: free the engine's KV cache and move its weights to host memory during each update (the
    # update then has the device to itself); the engine compiles per block so that its graphs re-capture cheaply
    release_during_update: bool = False
    # what the engines compile on GPU (Engine's compile_scope): block (regions shared by every layer: seconds of
    # warm-up) | step (each decode variant whole); release_during_update needs and implies block
    compile_scope: str = "block"

    def check(self):
        if self.backend not in ("local", "ray"):
            raise ValueError(f"key 'backend' must be local or ray, got {self.backend!r}")
        if self.workers < 1 or self.gpus_per_worker < 0:
            raise ValueError("key 'workers' must be >= 1 and 'gpus_per_worker' >= 0")
        if self.compile_scope not in ("step", "block"):
            raise ValueError(f"key 'compile_scope' must be step or block, got {self.compile_scope!r}")
        if self.weight_sync not in ("object_store", "collective"):
            raise ValueError(f"key 'weight_sync' must be object_store or collective, got {self.weight_sync!r}")
        if self.release_during_update and self.backend != "local":
            raise ValueError("key 'release_during_update' is for backend: local (Ray workers are other processes)")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("key 'backend': ray needs Ray: pip install openmimo[ray]")


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
    # FSDP2 CPU offload of the actor: fp32 weights, gradients and AdamW state in CPU memory, the optimizer step on
    # the CPU (one GPU then holds a model whose 16 bytes a parameter it cannot: MiMo-7B's 125 GB); CUDA only
    cpu_offload: bool = False
    # code reward (MiMo's test-difficulty reward): binary (all tests pass) | strict | soft, over each record's
    # test_levels (written by openmimo curate / calibrate-tests); without levels soft = the fraction passed
    code_reward: str = "soft"
    reward_backend: str = "process"  # process (worker processes) | ray (Ray tasks: pip install openmimo[ray])
    # reward_backend or gen.backend ray: "" = a local Ray instance; "auto" / "ray://host:10001" = a cluster
    ray_address: str = ""

    def check(self):
        super().check()
        if self.max_steps < 1:
            raise ValueError("key 'max_steps' must be >= 1 (RL's iterations; the learning-rate horizon)")
        if self.code_reward not in ("binary", "strict", "soft"):
            raise ValueError(f"key 'code_reward' must be binary, strict or soft, got {self.code_reward!r}")
        if self.reward_backend not in ("process", "ray"):
            raise ValueError(f"key 'reward_backend' must be process or ray, got {self.reward_backend!r}")
        if self.reward_backend == "ray":
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
        if self.train.ray_address and "ray" not in (self.train.reward_backend, self.gen.backend):
            raise ValueError("key 'train.ray_address' is only used with train.reward_backend: ray or gen.backend: ray")
