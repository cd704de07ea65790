"""Configuration dataclasses of the training stages (pre-training, MTP extension, smoke run)."""

from __future__ import annotations

from dataclasses import dataclass, field

from openmimo.model.config import MiMoConfig
from openmimo.train.run import RunConfig


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak learning rate
    min_lr: float = 3e-4  # learning rate at the end of the cosine decay (and after it)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.1  # decoupled weight decay on matrices (not on norms, biases)
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables
    warmup_tokens: int = 20_000  # linear warm-up from 0 to lr
    constant_tokens: int = 0  # tokens held at the peak lr after warm-up
    decay_tokens: int = 1_000_000  # cosine decay from lr to min_lr over this many tokens

    def check(self):
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("key 'betas' must be two numbers in [0, 1)")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("key 'lr' must be positive and >= min_lr")
        for k in ("warmup_tokens", "constant_tokens", "decay_tokens"):
            if getattr(self, k) < 0:
                raise ValueError(f"key '{k}' must be >= 0")


@dataclass
class BatchConfig:
    batch_size: int = 16  # sequences per optimizer step (global, over all ranks) after warm-up
    micro_batch_size: int = 16  # sequences per forward pass on one rank (gradient accumulation above it)
    warmup_batch_size: int = 0  # batch-size warm-up: start at this many sequences (0 = no warm-up)
    warmup_tokens: int = 0  # ...and grow linearly to batch_size over this many tokens

    def check(self):
        if self.batch_size <= 0 or self.micro_batch_size <= 0:
            raise ValueError("key 'batch_size' and 'micro_batch_size' must be positive")
        if self.warmup_batch_size < 0 or self.warmup_batch_size > self.batch_size:
            raise ValueError("key 'warmup_batch_size' must be between 0 and batch_size")


@dataclass
class MTPLossConfig:
    weight: float = 0.3  # MTP loss weight (mean over depths) at the start
    late_weight: float = 0.1  # weight after `switch_tokens`
    switch_tokens: int = 1_000_000  # token count at which the weight drops

    def check(self):
        if self.weight < 0 or self.late_weight < 0:
            raise ValueError("key 'weight' must be >= 0")


@dataclass
class StageConfig:
    name: str = "stage1"  # label in metrics
    tokens: int = 1_000_000  # tokens trained in this stage
    seq_len: int = 256  # context length of this stage
    rope_theta: float = 10000.0  # RoPE base used in this stage
    mixture: dict[str, float] = field(default_factory=lambda: {"web": 1.0})  # source -> weight (sums to 1)

    def check(self):
        if self.tokens <= 0 or self.seq_len <= 1:
            raise ValueError("key 'tokens' and 'seq_len' must be positive (seq_len >= 2)")
        if self.rope_theta <= 0:
            raise ValueError("key 'rope_theta' must be positive")
        if not self.mixture or any(w < 0 for w in self.mixture.values()):
            raise ValueError("key 'mixture' must map sources to non-negative weights")
        if abs(sum(self.mixture.values()) - 1.0) > 1e-6:
            raise ValueError(f"key 'mixture': weights sum to {sum(self.mixture.values()):.6g}, not 1")


@dataclass
class DataConfig:
    sources: dict[str, str] = field(default_factory=dict)  # source name -> token-shard folder
    world: bool = True  # build the embedded tiny world (+ tokenizer + shards) into the run folder when missing
    world_scale: float = 1.0  # size multiplier of the embedded world
    world_arithmetic: int = 0  # level-1 training problems of the world (0 = the world's default x world_scale)
    tokenizer: str = ""  # tokenizer folder; "" = train a byte-level BPE on the world (tiny default)
    tokenizer_vocab: int = 2048  # vocabulary size when training the tokenizer
    world_pipeline: bool = False  # world shards through `openmimo data` (configs/data_tiny.yaml: raw pages, dedup, tags)


@dataclass
class TrainConfig(RunConfig):
    """The shared run section (:class:`openmimo.train.run.RunConfig`) plus the model-training knobs."""

    out_dir: str = "runs/pretrain"  # run folder: metrics.jsonl, config.yaml, checkpoints/, final/
    compile: bool = False  # torch.compile the model (see compile_scope)
    compile_scope: str = "auto"  # whole (the forward, losses included) | blocks (each block) | auto: whole on one device
    activation_checkpointing: bool = False  # recompute block activations in backward
    attention_backend: str = "auto"  # CUDA SDPA kernel of unpacked rows: auto | flash | cudnn | efficient
    fused_loss: bool = False  # each head's loss in row chunks (model/fused_ce.py): no whole (tokens, vocab) logits
    eval_problems: int = 64  # held-out math problems in an evaluation
    peak_tflops: float = 0.0  # accelerator peak for MFU; 0 = 989 on CUDA (H100 bf16), none on CPU

    def check(self):
        super().check()
        from openmimo.model.mimo import ATTENTION_BACKENDS

        from openmimo.model.parallel import COMPILE_SCOPES

        if self.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"key 'compile_scope': {self.compile_scope!r} is not one of {', '.join(COMPILE_SCOPES)}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"key 'attention_backend': {self.attention_backend!r} is not one of "
                             f"{', '.join(ATTENTION_BACKENDS)}")


@dataclass
class PretrainConfig:
    model: MiMoConfig = field(default_factory=MiMoConfig)  # architecture (HF field names)
    data: DataConfig = field(default_factory=DataConfig)  # sources, tokenizer, embedded world
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])  # the data schedule
    optim: OptimConfig = field(default_factory=OptimConfig)  # AdamW and LR schedule
    batch: BatchConfig = field(default_factory=BatchConfig)  # batch size and its warm-up
    mtp: MTPLossConfig = field(default_factory=MTPLossConfig)  # MTP loss weight schedule
    train: TrainConfig = field(default_factory=TrainConfig)  # run folder, device, checkpoints

    def check(self):
        if not self.stages:
            raise ValueError("key 'stages' must list at least one stage")
        for i, s in enumerate(self.stages):
            if s.seq_len > self.model.max_position_embeddings:
                raise ValueError(f"key 'stages[{i}].seq_len': {s.seq_len} is longer than the model supports "
                                 f"(model.max_position_embeddings={self.model.max_position_embeddings})")
            if self.data.sources:
                unknown = [k for k in s.mixture if k not in self.data.sources]
                if unknown:
                    raise ValueError(f"key 'stages[{i}].mixture': unknown source '{unknown[0]}' "
                                     f"(data.sources has {sorted(self.data.sources)})")
            elif not self.data.world:
                raise ValueError("key 'data.sources' is empty and data.world is false: nothing to train on")
        if self.batch.batch_size % self.batch.micro_batch_size and self.batch.batch_size > self.batch.micro_batch_size:
            raise ValueError("key 'batch.batch_size' must be a multiple of batch.micro_batch_size")
