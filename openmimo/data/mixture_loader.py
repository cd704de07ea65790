"""Mixture of token sources: every sequence draws its source from the mixture weights.

``MixtureLoader(sources, weights, seed, rank, world_size)`` takes named sources (a
:class:`~openmimo.data.shards.PackedBatches`, a shard folder, or a list of folders).  Each call of
``next_batch(batch_size, seq_len)`` draws the source of each of the ``batch_size * world_size``
sequences of the global batch with an RNG seeded by ``(seed, call number)`` — the same on every
rank — so the realised mixture follows the weights.  Each source keeps its own cursor and hands out
its sequences in order; rank r gets rows ``[r*batch_size, (r+1)*batch_size)`` of the global batch.
The state (call number, per-source cursors, counts) resumes at the exact sample.  A mixture's own
``rank``/``world_size`` apply; those of the PackedBatches passed in are ignored.

Changing ``weights`` between pre-training stages: build a new loader over the same sources and load
the previous loader's per-source cursors (``state_dict()["cursors"]``) with :meth:`MixtureLoader.set_cursors`.
"""

from __future__ import annotations

import os

import numpy as np

from openmimo.config import ConfigError
from openmimo.data.shards import PackedBatches, to_batch


def _check_weights(weights: dict[str, float], sources) -> None:
    unknown = sorted(set(weights) - set(sources))
    if unknown:
        raise ConfigError(f"mixture weights name unknown source(s) {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(sources))})")
    bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
        raise ConfigError(f"mixture weights must be non-negative numbers, got {bad}")
    total = float(sum(weights.values()))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"mixture weights must sum to 1 (got {total:.8g}: {weights})")


class MixtureLoader:
    def __init__(self, sources: dict, weights: dict[str, float], seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, chunk_tokens: int = 32768):
        if not sources:
            raise ConfigError("mixture has no sources")
        _check_weights(weights, sources)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.names = sorted(sources)
        self.sources: dict[str, PackedBatches] = {}
        for name in self.names:
            src = sources[name]
            if not isinstance(src, PackedBatches):
                if not isinstance(src, (str, os.PathLike, list, tuple)):
                    raise ConfigError(f"mixture source '{name}': expected shard folder(s) or PackedBatches")
                src = PackedBatches(src, seed=seed, shuffle=shuffle, chunk_tokens=chunk_tokens)
            self.sources[name] = src
        self._set_weights(weights)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.calls = 0
        self.counts = {n: 0 for n in self.names}  # sequences drawn per source (global batch)

    def draw_sources(self, n: int) -> np.ndarray:
        """Source index of each of the next ``n`` global sequences (does not advance)."""
        u = np.random.default_rng([self.seed, self.calls]).random(n)
        return np.searchsorted(self.cdf, u, side="right").clip(max=len(self.names) - 1)

    def next_batch(self, batch_size: int, seq_len: int) -> dict:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive (got {batch_size}, {seq_len})")
        n = batch_size * self.world_size
        picks = self.draw_sources(n)
        mine = range(self.rank * batch_size, (self.rank + 1) * batch_size)
        rows: dict[int, tuple] = {}
        for k, name in enumerate(self.names):
            slots = np.flatnonzero(picks == k)
            if slots.size == 0:
                continue
            local = [i for i, j in enumerate(slots) if j in mine]
            got = self.sources[name].take(len(slots), seq_len, local)
            rows.update({int(slots[i]): w for i, w in zip(local, got)})
            self.counts[name] += int(slots.size)
        self.calls += 1
        self.last_sources = [self.names[int(picks[j])] for j in mine]
        return to_batch([rows[j] for j in mine])

    def _set_weights(self, weights: dict[str, float]) -> None:
        self.weights = np.array([float(weights.get(n, 0.0)) for n in self.names])
        self.cdf = np.cumsum(self.weights)
        self.cdf[-1] = max(self.cdf[-1], 1.0)  # guard against round-off at the top end

    def set_mixture(self, weights: dict[str, float]) -> None:
        """Change the weights (a new pre-training stage); cursors and the call count go on."""
        _check_weights(weights, self.sources)
        self._set_weights(weights)

    def set_cursors(self, cursors: dict[str, int]) -> None:
        for name, c in cursors.items():
            if name in self.sources:
                self.sources[name].cursor = int(c)

    def state_dict(self) -> dict:
        return {"calls": self.calls, "seed": self.seed, "counts": dict(self.counts),
                "cursors": {n: s.cursor for n, s in self.sources.items()},
                "sources": {n: s.state_dict() for n, s in self.sources.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.names) - set(state.get("sources", {})))
        if missing or state.get("seed") != self.seed:
            raise ValueError(f"mixture state does not match this loader (missing sources {missing}, "
                             f"seed {state.get('seed')} vs {self.seed})")
        for n in self.names:
            self.sources[n].load_state_dict(state["sources"][n])
        self.calls = int(state["calls"])
        self.counts = {n: int(state["counts"].get(n, 0)) for n in self.names}
