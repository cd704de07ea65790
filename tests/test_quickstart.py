"""The quickstart's time budget: RL gets what pre-training leaves (hand-computed cases)."""

from openmimo.quickstart import BUDGET_S, FINAL_RESERVE_S, PRETRAIN_GUARD_S, rl_time_limit


def test_rl_guard_is_the_configured_one_when_the_budget_allows():
    assert rl_time_limit(570, budget_s=870, elapsed_s=200, reserve_s=75) == 570  # 595 left


def test_rl_guard_shrinks_to_what_a_slow_pretraining_leaves():
    assert rl_time_limit(570, budget_s=870, elapsed_s=400, reserve_s=75) == 395
    assert rl_time_limit(0, budget_s=870, elapsed_s=400, reserve_s=75) == 395  # no configured guard


def test_rl_guard_keeps_a_floor_when_nothing_is_left():
    assert rl_time_limit(570, budget_s=870, elapsed_s=900, reserve_s=75, floor_s=30) == 30


def test_the_budget_fits_the_15_minute_target_with_room_for_both_stages():
    assert BUDGET_S <= 900 and PRETRAIN_GUARD_S + FINAL_RESERVE_S < BUDGET_S - 300
