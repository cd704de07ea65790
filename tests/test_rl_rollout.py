"""Seamless Rollout Engine: FIFO rule (hand cases + randomised properties) and the schedulers on the CPU simulator."""

import random
import warnings

import pytest

from openmimo.rl.backends import SimBackend, SimRewards, SyntheticTrace
from openmimo.rl.rollout import MODES, RolloutConfig, SeamlessRollout, fifo_select
from openmimo.rl.sampler import ProblemSampler


# -- the FIFO rule ----------------------------------------------------------------------------------
def test_fifo_hand_cases():
    d = fifo_select(["valid", "running", "valid", "valid"], 2)
    assert d.selected == [0, 2] and not d.complete and d.abort == []  # group 1 could still be valid
    d = fifo_select(["valid", "invalid", "valid", "running", "valid", "running"], 2)
    assert d.selected == [0, 2] and d.complete and d.abort == [3, 5]
    # a later valid group that finished first is NOT selected over an earlier one
    d = fifo_select(["running", "valid", "valid"], 2)
    assert d.selected == [1, 2] and not d.complete
    d = fifo_select(["invalid", "valid", "valid"], 2)
    assert d.complete and d.abort == []
    assert not fifo_select(["valid", "invalid", "running"], 2).complete  # too few valid so far
    assert fifo_select(["aborted", "valid"], 1).selected == [1]


@pytest.mark.parametrize("seed", range(30))
def test_fifo_properties_under_random_completion_orders(seed):
    rng = random.Random(seed)
    n, batch = rng.randint(1, 25), rng.randint(1, 8)
    truth = [rng.random() < 0.45 for _ in range(n)]  # validity revealed when the group finishes
    order = list(range(n))
    rng.shuffle(order)  # completion order: arbitrary (e.g. short responses first)
    statuses = ["running"] * n
    decision, decided_at = None, None
    prev_complete = False
    for t, g in enumerate(order):
        statuses[g] = "valid" if truth[g] else "invalid"
        d = fifo_select(statuses, batch)
        assert not prev_complete  # we stop at the first complete decision
        if d.complete:
            decision, decided_at = d, t
            break
        prev_complete = d.complete
    first_valid = [i for i in range(n) if truth[i]][:batch]
    if len(first_valid) < batch:
        assert decision is None  # never complete without enough valid groups
        return
    assert decision is not None
    # selection depends on launch order only, never on completion order
    assert decision.selected == first_valid
    last = first_valid[-1]
    finished = set(order[:decided_at + 1])
    assert all(i in finished for i in range(last + 1))  # everything launched before is done
    assert set(decision.abort) == {i for i in range(n) if i > last and i not in finished}
    # and it is the earliest moment: the group that completed the prefix was the last finished one
    assert order[decided_at] <= last


# -- schedulers on the simulator ----------------------------------------------------------------------
def _rollout(mode, trace, n_problems, batch=8, n=8, slots=64, pool=False, latency=0.05, seed=1, **kw):
    be = SimBackend(trace, slots=slots, step_s=0.01)
    rw = SimRewards(be.clock, workers=4, latency_s=latency)
    sampler = ProblemSampler(n_problems, seed=seed, use_easy_pool=pool, **kw)
    return SeamlessRollout(be, rw, sampler, [{} for _ in range(n_problems)],
                           RolloutConfig(mode=mode, n=n, batch_groups=batch))


TRACE = SyntheticTrace(num_problems=400, pass_rate=0.4, median_len=200, max_len=2000, seed=3)


def _run(mode, steps=4):
    ro = _rollout(mode, TRACE, 400, batch=16, slots=128)
    out = [ro.collect() for _ in range(steps)]
    return ro, out


@pytest.fixture(scope="module")
def runs():
    return {m: _run(m) for m in MODES}


def test_every_mode_fills_the_batch_and_dynamic_sampling_keeps_only_valid_groups(runs):
    for mode, (ro, out) in runs.items():
        for sel, m in out:
            assert len(sel) == 16 and all(len(g.samples) == 8 for g in sel)
            assert m["selected_groups"] == 16 and m["gpu_idle_ratio"] >= 0
            if mode != "none":
                assert all(max(g.rewards) > min(g.rewards) for g in sel), mode
    none_sel = [g for sel, _ in runs["none"][1] for g in sel]
    assert any(max(g.rewards) == min(g.rewards) for g in none_sel)  # no filtering there
    assert all(m["launches"] == 16 and m["sample_waste_ratio"] == 0 for _, m in runs["none"][1])


def test_early_termination_selects_the_same_groups_as_waiting_for_everything(runs):
    """FIFO by launch order: aborting changes the time, never which groups form the batch."""
    a = [[(g.problem, tuple(g.rewards)) for g in sel] for sel, _ in runs["async_rewards"][1]]
    e = [[(g.problem, tuple(g.rewards)) for g in sel] for sel, _ in runs["early_termination"][1]]
    assert a[0] == e[0]
    ro, out = runs["early_termination"]
    sel, m = out[-1]
    first = min(g.gid for g in sel)
    last = max(g.gid for g in sel)
    groups = {g.gid: g for g in ro._groups.values()}
    assert all(not groups[gid].aborted for gid in range(first, last + 1))
    assert all(groups[gid].valid is False for gid in range(first, last + 1) if gid not in {g.gid for g in sel})
    assert sum(x["aborted_tokens"] for _, x in out) > 0 and all(groups[g].aborted for g in groups if g > last and groups[g].valid is None)


def test_each_idea_saves_time(runs):
    t = {m: sum(x["time_s"] for _, x in out) for m, (_, out) in runs.items()}
    idle = {m: sum(x["gpu_idle_ratio"] for _, x in out) / 3 for m, (_, out) in runs.items()}
    waste = {m: sum(x["sample_waste_ratio"] for _, x in out) / 3 for m, (_, out) in runs.items()}
    assert t["early_termination"] < t["async_rewards"] < t["continuous"] < t["naive"]
    assert idle["early_termination"] < idle["naive"]
    assert waste["early_termination"] < waste["naive"]
    assert runs["continuous"][1][0][1]["reward_wait_s"] == pytest.approx(0.05 * 8 * runs["continuous"][1][0][1]["launches"])
    assert runs["async_rewards"][1][0][1]["reward_wait_s"] < runs["continuous"][1][0][1]["reward_wait_s"]


def test_idle_ratio_hand_computed():
    """Two samples of 10 tokens, 1 s per decode step, 2 slots; then 2 rewards of 1 s each, one by one.
    Time 10 + 2 = 12 s; useful slot-time 2 x 10 = 20 of 2 x 12 = 24 -> idle 1/6."""
    trace = SyntheticTrace.from_records([{"pass_rate": 0.5, "lengths": [10]}])
    for slots, idle in ((2, 1 / 6), (4, 1 - 20 / 48)):
        be = SimBackend(trace, slots=slots, step_s=1.0, per_seq_s=0.0)
        ro = SeamlessRollout(be, SimRewards(be.clock, workers=1, latency_s=1.0), ProblemSampler(1),
                             [{}], RolloutConfig(mode="none", n=2, batch_groups=1))
        _, m = ro.collect()
        assert m["time_s"] == pytest.approx(12.0) and m["reward_wait_s"] == pytest.approx(2.0)
        assert m["gpu_idle_ratio"] == pytest.approx(idle)


def test_waste_counts_valid_groups_beyond_the_batch():
    # every problem: one sample passes, one fails -> every group valid; naive rounds of 3 for a batch of 2
    trace = SyntheticTrace.from_records([{"pass_rate": 0.5, "lengths": [5]}] * 20)
    be = SimBackend(trace, slots=64, step_s=1.0)
    trace.sample = lambda p, launch, j: (5, j == 0)
    ro = SeamlessRollout(be, SimRewards(be.clock, workers=1, latency_s=0.0), ProblemSampler(20), [{}] * 20,
                         RolloutConfig(mode="naive", n=2, batch_groups=2, naive_round_groups=3))
    sel, m = ro.collect()
    assert len(sel) == 2 and m["launches"] == 3 and m["sample_waste_ratio"] == pytest.approx(0.5)


def test_data_that_cannot_fill_a_batch_warns_and_trains_on_what_there_is():
    trace = SyntheticTrace(num_problems=6, pass_rate=0.4, median_len=20, seed=0)
    for mode in MODES:
        ro = _rollout(mode, trace, 6, batch=8, n=4, max_epochs=1)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            sel, m = ro.collect()
        assert len(sel) < 8 and any("training on them" in str(x.message) for x in w), mode
        assert m["launches"] == 6


def test_all_invalid_data_stops_at_the_launch_limit():
    trace = SyntheticTrace.from_records([{"pass_rate": 0.0, "lengths": [3]}] * 5)
    ro = _rollout("early_termination", trace, 5, batch=2, n=2)
    ro.cfg.max_launch_factor = 3
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        sel, m = ro.collect()
    assert sel == [] and m["launches"] == 6 and m["valid_group_fraction"] == 0


def test_rollout_state_round_trip_and_config_errors():
    ro, _ = _run("early_termination", steps=1)
    s = ro.state_dict()
    ro2 = _rollout("early_termination", TRACE, 400, batch=16, slots=128)
    ro2.load_state_dict(s)
    assert ro2.state_dict() == s and ro2.valid_rate() == ro.valid_rate()
    with pytest.raises(ValueError, match="mode"):
        RolloutConfig(mode="fast").check()
    with pytest.raises(ValueError, match="'n'"):
        RolloutConfig(n=1).check()


def test_crashed_rewards_are_counted_and_scored_zero():
    """A reward that raises scores 0 (training goes on) and the step's metrics count it, so a broken
    verifier (e.g. math-verify missing on the machine) shows up instead of looking like a 0% pass rate."""
    import concurrent.futures as cf

    from openmimo.rl.backends import PoolRewards, SimBackend, SyntheticTrace
    from openmimo.rl.rollout import RolloutConfig, SeamlessRollout
    from openmimo.rl.sampler import ProblemSampler

    def score(problem, fin):
        f = cf.Future()
        if fin.index % 2:
            f.set_exception(ImportError("No module named 'math_verify'"))
        else:
            f.set_result(1.0)
        return f

    trace = SyntheticTrace(num_problems=8, pass_rate=0.5, seed=0)
    be = SimBackend(trace, slots=16)
    ro = SeamlessRollout(be, PoolRewards(score, clock=be.clock), ProblemSampler(8, seed=0, use_easy_pool=False),
                         [{} for _ in range(8)], RolloutConfig(mode="none", n=4, batch_groups=2))
    groups, m = ro.collect()
    assert m["reward_errors"] == 4 and m["reward_error_rate"] == 0.5
    assert all(g.rewards == [1.0, 0.0, 1.0, 0.0] for g in groups)
    assert all(g.reasons[1].startswith("error: ImportError") for g in groups)


def test_missing_math_verify_is_a_startup_error(monkeypatch):
    import builtins

    from openmimo.config import ConfigError
    from openmimo.rewards.math import require_math_verify

    require_math_verify()  # installed here
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "math_verify":
            raise ImportError("No module named 'math_verify'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ConfigError, match="math-verify"):
        require_math_verify()
