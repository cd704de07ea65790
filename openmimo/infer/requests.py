"""What a request asks of the engine and what it gets back: sampling parameters, per-step outputs, finished
completions, and the per-sample seed rule (sample i of a seeded request draws from ``sample_seed(seed, i)``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    max_new_tokens: int = 256  # tokens generated at most (finish_reason "length")
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus filter; 1 = off
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    stop_ids: tuple = ()  # generation ends after emitting one of these (finish_reason "stop"); the stop token is kept
    seed: int | None = None  # None = a random seed
    n: int = 1  # samples of this prompt (one shared prefill)

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass
class StepOutput:
    """What one sample of one request produced in one ``step()``."""

    request_id: str
    index: int  # sample index in 0..n-1
    token_ids: list  # new tokens (may be empty, e.g. on abort)
    logprobs: list  # temperature-1, unfiltered log-probs of those tokens
    sampling_logprobs: list  # log-probs under the processed sampling distribution
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None (still running)
    prompt_len: int = 0


@dataclass
class Completion:
    """A finished sample (what :meth:`Engine.generate` returns)."""

    request_id: str
    index: int
    prompt_ids: list
    token_ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    sampling_logprobs: list = field(default_factory=list)
    finish_reason: str | None = None

    def extend(self, out) -> bool:
        """Append a StepOutput of this sample; True when it finishes the sample."""
        self.token_ids += out.token_ids
        self.logprobs += out.logprobs
        self.sampling_logprobs += out.sampling_logprobs
        if out.finish_reason:
            self.finish_reason = out.finish_reason
        return bool(out.finish_reason)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a request seeded with ``seed``."""
    return seed if index == 0 else (seed + index * 0x9E3779B1) & 0x7FFFFFFF
