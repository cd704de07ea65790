"""Rollout backends, reward services and clocks for the Seamless Rollout Engine (:mod:`openmimo.rl.rollout`).

Backend interface (what the scheduler needs from a generator)::

    backend.slots                         sequences decoded concurrently (generation capacity)
    backend.clock                         .now() in seconds (wall clock, or virtual in simulation)
    backend.submit(gid, prompt_ids, n)    launch a group of n samples of one prompt
    backend.poll(until=None)              advance generation (one engine step; in simulation up to the
                                          next finished sequence or ``until``) -> list[Finished]
    backend.abort(gid) -> (tokens, busy)  drop a group's unfinished samples; tokens and slot-seconds lost
    backend.active()                      number of sequences queued or decoding
    backend.update_weights(weights)       the trainer's new weights (a module or a state dict) for generation

``Finished.busy_s`` is the slot-time the sequence held (the sum, over the decode steps it took part
in, of each step's duration): the GPU idle ratio is ``1 - sum(busy_s of finished sequences) /
(slots * rollout wall time)`` (see docs/rl.md).

Reward services take a finished sample and return its score, either at once (``score_sync``,
blocking the caller: the naive baseline) or asynchronously (``submit`` / ``poll`` / ``next_done``).
:class:`PoolRewards` runs a scoring function in :class:`openmimo.rewards.pool.RewardPool`
processes (:func:`make_score_fn`: each problem scored through its task); :class:`SimRewards` models W
workers with a per-sample latency on a virtual clock.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import heapq
import math
import random
import time
from dataclasses import dataclass, field

from openmimo.eval.tasks import get_task
from openmimo.rl.problems import RL_TASKS


@dataclass
class Finished:
    gid: int
    index: int
    token_ids: list
    logprobs: list
    finish_reason: str
    busy_s: float
    meta: dict = field(default_factory=dict)  # simulation: the trace's verdict for this sample


class WallClock:
    def now(self) -> float:
        return time.perf_counter()


class VirtualClock:
    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)


# -- the generation engine ------------------------------------------------------------------------
class EngineBackend:
    """Adapter over :class:`openmimo.infer.engine.Engine` (one request of n samples per group)."""

    def __init__(self, engine, params, seed: int = 0):
        self.engine, self.params, self.seed = engine, params, seed
        self.slots = engine.slots
        self.clock = WallClock()
        self._seqs: dict[tuple[int, int], dict] = {}
        self._n: dict[int, int] = {}

    def submit(self, gid: int, prompt_ids, n: int, meta=None) -> None:
        p = dataclasses.replace(self.params, n=n, seed=(self.seed * 1_000_003 + gid) & 0x7FFFFFFF)
        self.engine.add_request(prompt_ids, p, request_id=f"g{gid}")
        self._n[gid] = n
        for i in range(n):
            self._seqs[(gid, i)] = {"tokens": [], "logprobs": [], "busy": 0.0}

    def poll(self, until: float | None = None) -> list[Finished]:
        if not self.engine.has_unfinished():
            return []
        t0 = time.perf_counter()
        outs = self.engine.step()
        dt = time.perf_counter() - t0
        done = []
        for o in outs:
            gid = int(o.request_id[1:])
            s = self._seqs.get((gid, o.index))
            if s is None or o.finish_reason == "abort":
                continue
            s["tokens"] += o.token_ids
            s["logprobs"] += o.logprobs
            s["busy"] += dt
            if o.finish_reason:
                del self._seqs[(gid, o.index)]
                done.append(Finished(gid, o.index, s["tokens"], s["logprobs"], o.finish_reason, s["busy"]))
        return done

    def abort(self, gid: int) -> tuple[int, float]:
        self.engine.abort(f"g{gid}")
        tokens, busy = 0, 0.0
        for i in range(self._n.get(gid, 0)):
            s = self._seqs.pop((gid, i), None)
            if s is not None:
                tokens += len(s["tokens"])
                busy += s["busy"]
        return tokens, busy

    def active(self) -> int:
        return len(self._seqs)

    def update_weights(self, weights) -> None:
        """The engine's weights, copied in place (``Engine.update_weights``)."""
        self.engine.update_weights(weights)


# -- simulation ---------------------------------------------------------------------------------
class SyntheticTrace:
    """Per-problem pass probability and response-length distribution (skewed, long tail).

    Pass probabilities are drawn from a mixture: a share of problems always solved, a share never,
    the rest Beta-distributed, tuned so that the mean pass rate is ``pass_rate``.  Lengths are
    log-normal (median ``median_len``, ``sigma``) capped at ``max_len``; wrong answers are longer by
    ``wrong_len_factor`` (as in real reasoning traces).  Sample j of the g-th launch is a pure
    function of (seed, problem, g, j), so every scheduler sees the same samples for the same launch.
    """

    def __init__(self, num_problems: int = 2048, pass_rate: float = 0.4, median_len: int = 600, sigma: float = 0.9,
                 max_len: int = 8192, wrong_len_factor: float = 1.5, easy_share: float = 0.12,
                 hard_share: float = 0.3, seed: int = 0):
        rng = random.Random(seed)
        self.seed, self.median_len, self.sigma, self.max_len = seed, median_len, sigma, max_len
        self.wrong_len_factor = wrong_len_factor
        mid_share = 1 - easy_share - hard_share
        mid_mean = min(max((pass_rate - easy_share) / max(mid_share, 1e-9), 0.02), 0.98)
        self.p = []
        for _ in range(num_problems):
            u = rng.random()
            if u < easy_share:
                self.p.append(1.0)
            elif u < easy_share + hard_share:
                self.p.append(0.0)
            else:
                self.p.append(rng.betavariate(2 * mid_mean, 2 * (1 - mid_mean)))

    @classmethod
    def from_records(cls, records: list[dict], seed: int = 0) -> "SyntheticTrace":
        """A recorded trace: [{"pass_rate": p, "lengths": [..]}] per problem (lengths are resampled)."""
        t = cls(num_problems=0, seed=seed)
        t.p = [float(r["pass_rate"]) for r in records]
        t.lengths = [list(r["lengths"]) for r in records]
        return t

    def sample(self, problem: int, launch: int, j: int) -> tuple[int, bool]:
        rng = random.Random(hash((self.seed, problem, launch, j)) & 0xFFFFFFFFFFFF)
        correct = rng.random() < self.p[problem]
        recorded = getattr(self, "lengths", None)
        if recorded is not None and recorded[problem]:
            return int(rng.choice(recorded[problem])), correct
        L = self.median_len * math.exp(self.sigma * rng.gauss(0, 1)) * (1 if correct else self.wrong_len_factor)
        return max(1, min(int(L), self.max_len)), correct


class SimBackend:
    """A virtual-clock generator with ``slots`` concurrent sequences: decode steps take
    ``step_s + per_seq_s * active`` seconds and emit one token per active sequence; prefill is
    ``prefill_s`` per group.  Groups are admitted whole, in launch order (like the engine)."""

    def __init__(self, trace: SyntheticTrace, slots: int = 256, step_s: float = 0.02, per_seq_s: float = 2e-5,
                 prefill_s: float = 0.0, clock: VirtualClock | None = None):
        self.trace, self.slots, self.step_s, self.per_seq_s, self.prefill_s = trace, slots, step_s, per_seq_s, prefill_s
        self.clock = clock or VirtualClock()
        self.waiting: list[tuple[int, int, int]] = []  # (gid, problem, n)
        self.running: dict[tuple[int, int], dict] = {}
        self.launch_counter: dict[int, int] = {}
        self.decode_steps = 0

    def submit(self, gid: int, prompt_ids, n: int, meta=None) -> None:
        self.waiting.append((gid, int(meta["problem"]), n))

    def _admit(self) -> None:
        while self.waiting and self.waiting[0][2] <= self.slots - len(self.running):
            gid, prob, n = self.waiting.pop(0)
            launch = self.launch_counter.get(prob, 0)
            self.launch_counter[prob] = launch + 1
            self.clock.advance_to(self.clock.now() + self.prefill_s)
            for j in range(n):
                L, ok = self.trace.sample(prob, launch, j)
                self.running[(gid, j)] = {"left": L, "len": L, "busy": 0.0, "correct": ok}

    def poll(self, until: float | None = None) -> list[Finished]:
        self._admit()
        if not self.running:
            if until is not None:
                self.clock.advance_to(until)
            return []
        dt = self.step_s + self.per_seq_s * len(self.running)
        k = min(s["left"] for s in self.running.values())
        if until is not None and self.clock.now() + k * dt > until:
            k = max(int((until - self.clock.now()) / dt), 1 if until > self.clock.now() + 1e-12 else 0)
            if k == 0:
                return []
        self.clock.advance_to(self.clock.now() + k * dt)
        self.decode_steps += k
        done = []
        for key, s in list(self.running.items()):
            s["left"] -= k
            s["busy"] += k * dt
            if s["left"] <= 0:
                del self.running[key]
                done.append(Finished(key[0], key[1], [0] * s["len"], [], "stop", s["busy"], {"correct": s["correct"]}))
        done.sort(key=lambda f: (f.gid, f.index))
        return done

    def abort(self, gid: int) -> tuple[int, float]:
        self.waiting = [w for w in self.waiting if w[0] != gid]
        tokens, busy = 0, 0.0
        for key in [k for k in self.running if k[0] == gid]:
            s = self.running.pop(key)
            tokens += s["len"] - s["left"]
            busy += s["busy"]
        return tokens, busy

    def active(self) -> int:
        return len(self.running) + sum(w[2] for w in self.waiting)


# -- rewards ----------------------------------------------------------------------------------------
def make_score_fn(kind: str, tokenizer, pool, timeout: float, code_scheme: str = "soft", style: str = "base"):
    """(problem, Finished) -> Future[RewardResult] through the problem's task: math in the reward pool's
    processes, code in the judge (which already runs tests in parallel, isolated and time-limited) with
    ``code_scheme`` and the record's ``test_levels``; ``style`` is the prompts' (base or chat: how the
    response is read, after its reasoning block either way).

    ``kind`` "auto" follows each problem's ``reward_kind`` (set by :func:`openmimo.rl.problems.load_problems`)."""

    def score(problem, fin):
        text = tokenizer.decode(fin.token_ids, skip_special_tokens=True)
        task = get_task(RL_TASKS[problem.get("reward_kind", kind)])
        return task.submit_score(problem, text, style=style, pool=pool, timeout=timeout, scheme=code_scheme)

    return score


class PoolRewards:
    """Real rewards: ``score_fn(problem_record, finished) -> Future[RewardResult]`` (e.g. a submit to
    :class:`~openmimo.rewards.pool.RewardPool`, which already times out and replaces crashed workers)."""

    def __init__(self, score_fn, clock=None):
        self.score_fn, self.clock = score_fn, clock or WallClock()
        self._futs: dict = {}

    def score_sync(self, key, problem, fin: Finished) -> tuple[float, str]:
        return _unpack(self.score_fn(problem, fin))

    def submit(self, key, problem, fin: Finished) -> None:
        self._futs[key] = self.score_fn(problem, fin)

    def poll(self) -> list[tuple]:
        done = [k for k, f in self._futs.items() if f.done()]
        return [(k, *_unpack(self._futs.pop(k))) for k in done]

    def wait_any(self, timeout: float = 0.05) -> None:
        if self._futs:
            cf.wait(list(self._futs.values()), timeout=timeout, return_when=cf.FIRST_COMPLETED)

    def next_done(self) -> float | None:
        return None

    def pending(self) -> int:
        return len(self._futs)

    def cancel(self, keys) -> None:
        for k in keys:
            self._futs.pop(k, None)


def _unpack(fut) -> tuple[float, str]:
    try:
        r = fut.result() if hasattr(fut, "result") else fut
    except Exception as e:  # noqa: BLE001 -- a reward never stops training
        return 0.0, f"error: {type(e).__name__}: {e}"[:200]
    return float(getattr(r, "score", r)), str(getattr(r, "reason", ""))


class SimRewards:
    """``workers`` reward workers on the backend's virtual clock; each sample takes ``latency_s`` +
    ``per_token_s`` x its length (a code judge is slow, a math check quick); the score is the trace's verdict."""

    def __init__(self, clock: VirtualClock, workers: int = 8, latency_s: float = 0.2, per_token_s: float = 0.0):
        self.clock, self.latency_s, self.per_token_s = clock, latency_s, per_token_s
        self.free_at = [0.0] * workers
        self._heap: list = []
        self._n = 0

    def _cost(self, fin: Finished) -> float:
        return self.latency_s + self.per_token_s * len(fin.token_ids)

    def score_sync(self, key, problem, fin: Finished) -> tuple[float, str]:
        self.clock.advance_to(self.clock.now() + self._cost(fin))
        return (1.0, "sim pass") if fin.meta.get("correct") else (0.0, "sim fail")

    def submit(self, key, problem, fin: Finished) -> None:
        w = min(range(len(self.free_at)), key=lambda i: self.free_at[i])
        start = max(self.free_at[w], self.clock.now())
        self.free_at[w] = start + self._cost(fin)
        self._n += 1
        heapq.heappush(self._heap, (self.free_at[w], self._n, key, 1.0 if fin.meta.get("correct") else 0.0))

    def poll(self) -> list[tuple]:
        out = []
        while self._heap and self._heap[0][0] <= self.clock.now() + 1e-12:
            _, _, key, score = heapq.heappop(self._heap)
            out.append((key, score, "sim"))
        return out

    def wait_any(self, timeout: float = 0.0) -> None:
        if self._heap:
            self.clock.advance_to(self._heap[0][0])

    def next_done(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return len(self._heap)

    def cancel(self, keys) -> None:
        ks = set(keys)
        self._heap = [h for h in self._heap if h[2] not in ks]
        heapq.heapify(self._heap)
