"""Sampling as pure functions over a batch of logits (no host sync, per-row parameters)."""

from __future__ import annotations

import torch


def process_logits(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                   top_k: torch.Tensor) -> torch.Tensor:
    """Log-probabilities after temperature, top-k and top-p filtering, per row.

    logits: (B, V); temperature/top_p/top_k: (B,).  Rows with temperature 0 are greedy: only
    the arg-max keeps probability 1.  top_k <= 0 and top_p >= 1 disable those filters.
    """
    logits = logits.float()
    greedy = temperature <= 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    scaled = logits / t[:, None]
    V = logits.shape[-1]
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
    ranks = torch.arange(V, device=logits.device)[None]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, V))
    remove = ranks >= k[:, None]
    probs = torch.softmax(sorted_logits, dim=-1)
    cum_before = torch.cumsum(probs, dim=-1) - probs
    remove = remove | (cum_before >= top_p[:, None].float())
    remove[:, 0] = False  # always keep the most likely token
    remove = remove | (greedy[:, None] & (ranks > 0))
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    filtered = torch.empty_like(scaled).scatter_(-1, order, sorted_logits)
    return torch.log_softmax(filtered, dim=-1)


def sample(logprobs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from log-probabilities (B, V) -> (B,)."""
    probs = logprobs.exp()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# -- counter-based sampling ----------------------------------------------------------------------
# Random numbers are a hash of (seed, position, stream, vocabulary index), not a generator's state.
# A request's samples therefore depend only on its seed and its tokens, never on which other
# requests share the batch, the step they ran in, or the device; and the whole draw is a few
# element-wise integer ops (no host sync, capturable in a CUDA graph).  Streams keep the draws of
# different roles (plain sampling, MTP drafts, accept tests, residual draws) independent.
STREAM_SAMPLE, STREAM_DRAFT, STREAM_ACCEPT, STREAM_RESIDUAL = 0, 1, 2, 3
_M32 = 0xFFFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding 32-bit values (wrap-around is harmless)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def uniform_noise(seed: torch.Tensor, position: torch.Tensor, stream: int, width: int | None = None) -> torch.Tensor:
    """Uniforms in (0, 1) from a hash of (seed, position, stream[, column]).

    seed, position: broadcastable integer tensors (e.g. (B,) and (B, T)); with ``width`` a last
    axis of that many columns is added.  23 bits of resolution, so the float32 value is exact and never 0 or 1.
    """
    h = _fmix32(seed.long() * 0x9E3779B1 + stream * 0x632BE5AB)
    h = _fmix32(h ^ _fmix32(position.long() + 0x7F4A7C15))
    if width is not None:
        cols = torch.arange(width, device=h.device, dtype=torch.long)
        h = _fmix32(h[..., None] ^ _fmix32(cols * 0x27D4EB2F + 0x165667B1))
    return ((h >> 9).float() + 0.5) * (1.0 / (1 << 23))


def gumbel_sample(logprobs: torch.Tensor, seed: torch.Tensor, position: torch.Tensor,
                  stream: int = STREAM_SAMPLE) -> torch.Tensor:
    """One token per row of ``logprobs`` (..., V), exactly distributed as softmax(logprobs) (Gumbel-max).

    seed/position: broadcastable to logprobs.shape[:-1].  Rows with a single finite entry (greedy)
    return it.  ``logprobs`` must be finite on at least one entry per row.
    """
    u = uniform_noise(seed, position, stream, logprobs.shape[-1])
    g = -torch.log(-torch.log(u))
    return torch.argmax(logprobs.float() + g, dim=-1)


def first_tokens(logits: torch.Tensor, temp: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                 seeds: torch.Tensor, n_p: torch.Tensor) -> torch.Tensor:
    """The first generated token of each admitted sample from its prompt's last logits (N, V) and its sampling
    parameters (N,): float64 (N, 3) of token, raw log-prob and processed log-prob.  The engine runs it as one
    CUDA graph per padded sample count (see ``padded_count``)."""
    proc = process_logits(logits, temp, top_p, top_k)
    toks = gumbel_sample(proc, seeds, n_p, STREAM_SAMPLE)
    raw = torch.log_softmax(logits, -1).gather(-1, toks[:, None])[:, 0]
    plp = proc.gather(-1, toks[:, None])[:, 0]
    return torch.stack([toks.double(), raw.double(), plp.double()], 1)


def padded_count(n: int, base: int = 4) -> int:
    """The smallest power of ``base`` >= n: the sample counts the first-token graph is built for (powers of four
    keep it to four compiles up to 256 samples)."""
    p = 1
    while p < n:
        p *= base
    return p
