"""Dynamic sampling filter and the easy-data pool (MiMo-7B section 4.3; DAPO's dynamic sampling).

Dynamic sampling: a group whose rewards are all equal (all pass or all fail) has zero advantage for
every token and so contributes no gradient; it is dropped and more groups are launched to keep the
batch full.  "All equal" allows float noise (``tol``).

Easy-data pool: a problem whose group pass rate reaches 1 leaves the main rotation and enters the
pool; every draw comes from the pool with probability ``alpha`` (default 0.1, the paper's), from
the main rotation otherwise.  A pool problem that is later drawn and no longer solved every time
goes back to the main rotation.  The main rotation walks a seeded permutation of the problems, one
epoch after another (``max_epochs``; 0 = forever).  ``draw()`` returns None when nothing is left,
and the caller trains on what it has (see :mod:`openmimo.rl.rollout`).

Everything is seeded and ``state_dict()``/``load_state_dict()`` round-trip exactly, so a resumed
run draws the same problems.
"""

from __future__ import annotations

import random
from typing import Sequence


def is_zero_variance(rewards: Sequence[float], tol: float = 1e-6) -> bool:
    """True when every reward of the group lies within ``tol`` of the others (no learning signal)."""
    if len(rewards) == 0:
        return True
    return max(rewards) - min(rewards) <= tol


def valid_groups(groups: Sequence[Sequence[float]], tol: float = 1e-6) -> list[bool]:
    """Dynamic-sampling filter over several groups: True = keep."""
    return [not is_zero_variance(g, tol) for g in groups]


def group_pass_rate(rewards: Sequence[float], threshold: float = 1.0) -> float:
    """Share of the group's samples with reward >= threshold (a sample that passed every test)."""
    if not rewards:
        return 0.0
    return sum(1 for r in rewards if r >= threshold - 1e-9) / len(rewards)


class ProblemSampler:
    """Seeded problem order with the easy-data pool; see the module docstring."""

    def __init__(self, num_problems: int, seed: int = 0, easy_pool_alpha: float = 0.1, shuffle: bool = True,
                 max_epochs: int = 0, use_easy_pool: bool = True):
        if num_problems < 1:
            raise ValueError("the problem set is empty")
        if not 0.0 <= easy_pool_alpha <= 1.0:
            raise ValueError(f"easy_pool_alpha must be in [0, 1], got {easy_pool_alpha}")
        self.n, self.seed, self.alpha, self.shuffle = num_problems, seed, easy_pool_alpha, shuffle
        self.max_epochs, self.use_easy_pool = max_epochs, use_easy_pool
        self.rng = random.Random(seed)
        self.epoch, self.pos = 0, 0
        self.order = self._permutation()
        self.pool: list[int] = []  # easy problems, in insertion order
        self.draws = {"main": 0, "pool": 0}

    def _permutation(self) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def draw(self) -> tuple[int, bool] | None:
        """Next problem index and whether it came from the easy pool; None when the data is used up."""
        if self.pool and self.alpha > 0 and self.rng.random() < self.alpha:
            self.draws["pool"] += 1
            return self.pool[self.rng.randrange(len(self.pool))], True
        pool_set = set(self.pool)
        while True:
            if self.pos >= len(self.order):
                if self.max_epochs and self.epoch + 1 >= self.max_epochs:
                    return None
                if len(pool_set) >= self.n:  # every problem is easy: only the pool is left
                    if not self.pool:
                        return None
                    self.draws["pool"] += 1
                    return self.pool[self.rng.randrange(len(self.pool))], True
                self.epoch += 1
                self.pos = 0
                self.order = self._permutation()
            idx = self.order[self.pos]
            self.pos += 1
            if idx not in pool_set:
                self.draws["main"] += 1
                return idx, False

    def report(self, index: int, pass_rate: float) -> None:
        """Record a finished group: pass rate 1 moves the problem into the pool, < 1 takes it out."""
        if not self.use_easy_pool:
            return
        if pass_rate >= 1.0 - 1e-9:
            if index not in self.pool:
                self.pool.append(index)
        elif index in self.pool:
            self.pool.remove(index)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "epoch": self.epoch, "pos": self.pos, "pool": list(self.pool),
                "draws": dict(self.draws), "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ValueError(f"sampler state is for {state['n']} problems, this data set has {self.n}")
        self.seed = state["seed"]
        self.rng.setstate(state["rng"])
        self.epoch, self.pos = state["epoch"], state["pos"]
        self.order = self._permutation()
        self.pool = list(state["pool"])
        self.draws = dict(state["draws"])
