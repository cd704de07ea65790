"""The Seamless Rollout Engine (MiMo-7B section 4.3) and the baselines it is measured against.

``SeamlessRollout(backend, rewards, sampler, problems, cfg).collect()`` returns one training batch of
``batch_groups`` groups of ``n`` samples, with rewards, plus the step's rollout metrics.  Modes
(``RolloutConfig.mode``), each adding one idea to the previous one (the paper's Table 2):

1. ``none``              launch a batch, wait for every sequence, score one by one, train on all groups
2. ``naive``             dynamic sampling, DAPO-style: rounds of (launch a round, wait for every
                         sequence, score one by one, drop zero-variance groups) until the batch is full
3. ``continuous``        continuous rollout: groups are launched while the in-flight ones are predicted
                         to be too few (running valid-group rate), scored as soon as a group finishes
                         (blocking generation meanwhile); the step ends when every launched group is done
4. ``async_rewards``     + rewards in a worker pool, never blocking generation
5. ``early_termination`` + MiMo's FIFO rule (:func:`fifo_select`): the batch is the earliest-*launched*
                         valid groups; in-flight groups are aborted once those fill the batch and every
                         group launched before them has finished

Metric definitions (per ``collect``; docs/rl.md explains them):

- ``gpu_idle_ratio = 1 - useful_slot_seconds / (slots * time_s)``; useful slot-seconds = the slot-time
  held by sequences whose group was not aborted; ``time_s`` = rollout + reward wall time of the step.
- ``sample_waste_ratio = (valid groups that finished but were not selected) / batch_groups``
  (valid samples generated beyond the batch, over the batch; groups have equal size).
- ``aborted_tokens`` / ``aborted_sequences``: generated tokens / sequences thrown away by aborts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from openmimo.rl.sampler import group_pass_rate, is_zero_variance

MODES = ("none", "naive", "continuous", "async_rewards", "early_termination")


@dataclass
class RolloutConfig:
    mode: str = "early_termination"  # one of MODES (see the module docstring)
    n: int = 8  # samples per prompt (verl: rollout.n; TRL: num_generations)
    batch_groups: int = 16  # prompts (groups) per training batch (verl: data.train_batch_size)
    max_inflight_groups: int = 0  # continuous modes: groups generating at once, at most (0 = max(2 x slots / n, batch))
    launch_margin: float = 0.0  # continuous modes: launch until predicted valid groups >= batch x (1 + margin)
    valid_rate_prior: float = 0.5  # the valid-group rate assumed before any group has finished
    max_launch_factor: float = 8.0  # stop launching after batch x this many groups in one step (data too easy/hard)
    naive_round_groups: int = 0  # naive mode: groups per round (0 = batch_groups)
    zero_variance_tol: float = 1e-6  # a group with max - min reward <= tol is dropped (dynamic sampling)
    pass_threshold: float = 1.0  # a sample "passes" (pass rate, easy pool) when its reward >= this

    def check(self):
        if self.mode not in MODES:
            raise ValueError(f"key 'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.n < 2 and self.mode != "none":
            raise ValueError("key 'n' must be >= 2 for dynamic sampling (a group of one always has zero variance)")
        if self.batch_groups < 1 or self.n < 1:
            raise ValueError("key 'batch_groups' must be >= 1")
        if self.max_launch_factor < 1:
            raise ValueError("key 'max_launch_factor' must be >= 1")


@dataclass
class FifoDecision:
    selected: list  # indices (launch order) of the groups that form the batch
    complete: bool  # the batch is final: abort the in-flight groups now
    abort: list  # indices of in-flight groups to abort (only when complete)


def fifo_select(statuses, batch: int) -> FifoDecision:
    """MiMo's first-in-first-out early-termination rule, over groups in *launch* order.

    ``statuses[i]`` is ``"running"`` (generating or being scored), ``"valid"``, ``"invalid"`` or
    ``"aborted"``.  The selected groups are the first ``batch`` valid ones in launch order — never
    the first to complete, which would favour short responses.  The batch is complete when it
    holds ``batch`` groups and no group launched before the last selected one is still running
    (a running one could still turn out valid and would belong in the batch).  Only then are the
    running groups — all launched after the last selected one — aborted.
    """
    selected = [i for i, s in enumerate(statuses) if s == "valid"][:batch]
    if len(selected) < batch or batch == 0:
        return FifoDecision(selected, batch == 0, [])
    last = selected[-1]
    if any(s == "running" for s in statuses[:last]):
        return FifoDecision(selected, False, [])
    return FifoDecision(selected, True, [i for i, s in enumerate(statuses) if s == "running" and i > last])


@dataclass
class GroupResult:
    gid: int  # launch order (global over the run)
    problem: int  # index into the problem list
    from_pool: bool  # drawn from the easy-data pool
    prompt_ids: list
    n: int
    samples: list = field(default_factory=list)  # Finished per sample index (None until finished)
    rewards: list = field(default_factory=list)  # float per sample (None until scored)
    reasons: list = field(default_factory=list)
    valid: bool | None = None
    aborted: bool = False

    @property
    def pass_rate(self) -> float:
        return group_pass_rate([r for r in self.rewards if r is not None])

    def done_generating(self) -> bool:
        return all(s is not None for s in self.samples)


class SeamlessRollout:
    """Drives a backend and a reward service through one of MODES; see the module docstring."""

    def __init__(self, backend, rewards, sampler, problems, cfg: RolloutConfig, prompt_key: str = "prompt_ids"):
        cfg.check()
        self.backend, self.rewards, self.sampler, self.problems, self.cfg = backend, rewards, sampler, problems, cfg
        self.prompt_key = prompt_key
        self.next_gid = 0
        self.finished_groups, self.valid_groups_total = 0, 0  # over the run: the valid-rate estimate

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"next_gid": self.next_gid, "finished": self.finished_groups, "valid": self.valid_groups_total}

    def load_state_dict(self, s: dict) -> None:
        self.next_gid, self.finished_groups, self.valid_groups_total = s["next_gid"], s["finished"], s["valid"]

    def valid_rate(self) -> float:
        w = 4.0  # pseudo-counts of the prior
        r = (self.valid_groups_total + w * self.cfg.valid_rate_prior) / (self.finished_groups + w)
        return min(max(r, 0.05), 1.0)

    # -- one step -----------------------------------------------------------------------------------
    def collect(self) -> tuple[list[GroupResult], dict]:
        cfg, clock = self.cfg, self.backend.clock
        self._t0 = clock.now()
        self._groups: dict[int, GroupResult] = {}
        self._order: list[int] = []
        self._exhausted = False
        self._reward_wait = 0.0
        self._aborted_tokens, self._aborted_seqs, self._rounds = 0, 0, 0
        self._max_launch = math.ceil(cfg.batch_groups * cfg.max_launch_factor)
        if cfg.mode in ("none", "naive"):
            selected = self._collect_rounds()
        else:
            selected = self._collect_continuous()
        if len(selected) < cfg.batch_groups:
            warnings.warn(f"rollout: only {len(selected)} of {cfg.batch_groups} groups for this batch "
                          f"({'data exhausted' if self._exhausted else 'launch limit reached'}); training on them",
                          RuntimeWarning, stacklevel=2)
        return selected, self._metrics(selected)

    def _status(self, g: GroupResult) -> str:
        if g.aborted:
            return "aborted"
        if g.valid is None:
            return "running"
        return "valid" if g.valid else "invalid"

    def _launch(self) -> bool:
        if len(self._order) >= self._max_launch:
            return False
        d = self.sampler.draw()
        if d is None:
            self._exhausted = True
            return False
        idx, from_pool = d
        rec = self.problems[idx]
        prompt = rec.get(self.prompt_key) if isinstance(rec, dict) else None
        gid = self.next_gid
        self.next_gid += 1
        n = self.cfg.n
        self.backend.submit(gid, prompt, n, meta={"problem": idx})
        self._groups[gid] = GroupResult(gid, idx, from_pool, list(prompt or []), n, [None] * n, [None] * n, [""] * n)
        self._order.append(gid)
        return True

    def _finalize(self, g: GroupResult) -> None:
        if self.cfg.mode == "none":
            g.valid = True
        else:
            g.valid = not is_zero_variance(g.rewards, self.cfg.zero_variance_tol)
        self.finished_groups += 1
        self.valid_groups_total += int(not is_zero_variance(g.rewards, self.cfg.zero_variance_tol))
        self.sampler.report(g.problem, group_pass_rate(g.rewards, self.cfg.pass_threshold))

    def _score_sync(self, g: GroupResult) -> None:
        clock = self.backend.clock
        for i, fin in enumerate(g.samples):
            t = clock.now()
            g.rewards[i], g.reasons[i] = self.rewards.score_sync((g.gid, i), self.problems[g.problem], fin)
            self._reward_wait += clock.now() - t
        self._finalize(g)

    def _on_reward(self, key, score, reason) -> None:
        g = self._groups.get(key[0])
        if g is None or g.aborted:
            return
        g.rewards[key[1]], g.reasons[key[1]] = score, reason
        if all(r is not None for r in g.rewards):
            self._finalize(g)

    def _collect_rounds(self) -> list[GroupResult]:
        cfg = self.cfg
        per_round = cfg.batch_groups if cfg.mode == "none" else (cfg.naive_round_groups or cfg.batch_groups)
        while True:
            start = len(self._order)
            for _ in range(per_round):
                if not self._launch():
                    break
            round_gids = self._order[start:]
            if not round_gids:
                break
            self._rounds += 1
            while self.backend.active():
                for fin in self.backend.poll():
                    self._groups[fin.gid].samples[fin.index] = fin
            for gid in round_gids:  # rewards one by one, after the whole round
                self._score_sync(self._groups[gid])
            if cfg.mode == "none":
                return [self._groups[g] for g in round_gids]
            n_valid = sum(1 for g in self._order if self._groups[g].valid)
            if n_valid >= cfg.batch_groups or self._exhausted or len(self._order) >= self._max_launch:
                break
        dec = fifo_select([self._status(self._groups[g]) for g in self._order], cfg.batch_groups)
        return [self._groups[self._order[i]] for i in dec.selected]

    def _should_launch(self) -> bool:
        cfg = self.cfg
        if self._exhausted or len(self._order) >= self._max_launch:
            return False
        statuses = [self._status(self._groups[g]) for g in self._order]
        running = statuses.count("running")
        generating = sum(1 for g in self._order if not self._groups[g].done_generating() and not self._groups[g].aborted)
        limit = cfg.max_inflight_groups or max(math.ceil(2 * self.backend.slots / cfg.n), cfg.batch_groups)
        if generating >= limit:
            return False
        valid = statuses.count("valid")
        if running == 0 and valid < cfg.batch_groups:
            return True  # never stall with a batch still short
        return valid + self.valid_rate() * running < cfg.batch_groups * (1 + cfg.launch_margin)

    def _collect_continuous(self) -> list[GroupResult]:
        cfg, clock = self.cfg, self.backend.clock
        is_async = cfg.mode in ("async_rewards", "early_termination")
        while True:
            while self._should_launch():
                self._launch()
            if self.backend.active():
                until = self.rewards.next_done() if is_async else None
                for fin in self.backend.poll(until):
                    g = self._groups.get(fin.gid)
                    if g is None or g.aborted:
                        continue
                    g.samples[fin.index] = fin
                    if is_async:
                        self.rewards.submit((fin.gid, fin.index), self.problems[g.problem], fin)
                    elif g.done_generating():
                        self._score_sync(g)  # blocks generation (the point of this baseline)
            elif is_async and self.rewards.pending():
                t = clock.now()
                self.rewards.wait_any()
                self._reward_wait += clock.now() - t
            if is_async:
                for key, score, reason in self.rewards.poll():
                    self._on_reward(key, score, reason)
            statuses = [self._status(self._groups[g]) for g in self._order]
            dec = fifo_select(statuses, cfg.batch_groups)
            if cfg.mode == "early_termination" and dec.complete:
                for i in dec.abort:
                    self._abort(self._groups[self._order[i]])
                break
            if "running" not in statuses and not self._should_launch():
                break
        dec = fifo_select([self._status(self._groups[g]) for g in self._order], cfg.batch_groups)
        return [self._groups[self._order[i]] for i in dec.selected]

    def _abort(self, g: GroupResult) -> None:
        tokens, _ = self.backend.abort(g.gid)
        self._aborted_tokens += tokens + sum(len(s.token_ids) for s in g.samples if s is not None)
        self._aborted_seqs += g.n
        self.rewards.cancel([(g.gid, i) for i in range(g.n)])
        g.aborted = True

    def _metrics(self, selected: list[GroupResult]) -> dict:
        cfg = self.cfg
        T = max(self.backend.clock.now() - self._t0, 1e-12)
        groups = [self._groups[g] for g in self._order]
        useful = sum(s.busy_s for g in groups if not g.aborted for s in g.samples if s is not None)
        scored = [g for g in groups if g.valid is not None and not g.aborted]
        n_valid_scored = sum(1 for g in scored if not is_zero_variance(g.rewards, cfg.zero_variance_tol))
        rewards = [r for g in scored for r in g.rewards]
        # rewards that crashed or timed out (scored 0): a step where most are errors trains on noise
        errors = sum(1 for g in scored for why in g.reasons if isinstance(why, str) and why.startswith("error"))
        sel_ids = {g.gid for g in selected}
        waste = 0 if cfg.mode == "none" else sum(1 for g in scored if g.valid and g.gid not in sel_ids)
        lens = [len(s.token_ids) for g in selected for s in g.samples]
        return {"mode": cfg.mode, "time_s": T, "reward_wait_s": self._reward_wait,
                "gpu_idle_ratio": max(0.0, 1.0 - useful / (self.backend.slots * T)),
                "sample_waste_ratio": waste / cfg.batch_groups, "aborted_tokens": self._aborted_tokens,
                "aborted_sequences": self._aborted_seqs, "launches": len(groups), "rounds": self._rounds,
                "pass_rate": sum(1 for r in rewards if r >= cfg.pass_threshold - 1e-9) / max(len(rewards), 1),
                "valid_group_fraction": n_valid_scored / max(len(scored), 1), "selected_groups": len(selected),
                "pool_draws": sum(1 for g in groups if g.from_pool),
                "reward_errors": errors, "reward_error_rate": errors / max(len(rewards), 1),
                "generated_tokens": sum(len(s.token_ids) for g in scored for s in g.samples),
                "response_len_mean": sum(lens) / max(len(lens), 1), "response_len_max": max(lens, default=0)}


def generate_and_score(backend, rewards, items, n: int, gid_base: int = 1 << 40) -> list[list[float]]:
    """Validation through the same backend and reward service: every item (prompt_ids, problem
    record) gets ``n`` samples, scored asynchronously; returns the scores per item."""
    scores = [[None] * n for _ in items]
    for k, (prompt, rec) in enumerate(items):
        backend.submit(gid_base + k, prompt, n, meta={"problem": rec.get("problem", k) if isinstance(rec, dict) else k})
    while backend.active() or rewards.pending():
        if backend.active():
            for fin in backend.poll(rewards.next_done()):
                k = fin.gid - gid_base
                rewards.submit((k, fin.index), items[k][1], fin)
        else:
            rewards.wait_any()
        for (k, i), score, _ in rewards.poll():
            scores[k][i] = score
    return [[0.0 if s is None else s for s in row] for row in scores]
