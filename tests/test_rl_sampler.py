"""Dynamic-sampling filter and the easy-data pool: hand cases, seeded statistics, exact resume."""

import pytest

from openmimo.rl.sampler import ProblemSampler, group_pass_rate, is_zero_variance, valid_groups


def test_zero_variance_filter_with_float_tolerance():
    assert valid_groups([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5 + 1e-9, 0.5]]) == [False, False, True, False]
    assert not is_zero_variance([0.3, 0.3 + 1e-4])
    assert is_zero_variance([0.3, 0.3 + 1e-4], tol=1e-3)
    assert is_zero_variance([])
    assert group_pass_rate([1, 1, 0.5, 0]) == 0.5 and group_pass_rate([1.0, 1.0]) == 1.0


def test_one_epoch_is_a_seeded_permutation():
    s = ProblemSampler(10, seed=3, easy_pool_alpha=0.1)
    first = [s.draw() for _ in range(10)]
    assert sorted(i for i, _ in first) == list(range(10)) and not any(p for _, p in first)
    assert [i for i, _ in first] != list(range(10))
    assert [i for i, _ in (ProblemSampler(10, seed=3).draw() for _ in range(1))] == [first[0][0]]


def test_easy_problems_leave_rotation_and_are_drawn_with_probability_alpha():
    s = ProblemSampler(100, seed=0, easy_pool_alpha=0.1)
    for i in range(50):
        s.report(i, 1.0)  # half the problems are solved every time
    draws = [s.draw() for _ in range(4000)]
    from_pool = [i for i, p in draws if p]
    from_main = [i for i, p in draws if not p]
    assert abs(len(from_pool) / 4000 - 0.1) < 0.02  # binomial sd ~0.005
    assert set(from_pool) <= set(range(50)) and all(i >= 50 for i in from_main)
    s.report(7, 0.75)  # an easy problem that failed once goes back to the rotation
    assert 7 not in s.pool and len(s.pool) == 49


def test_pool_disabled_and_alpha_zero():
    s = ProblemSampler(4, seed=0, use_easy_pool=False)
    s.report(0, 1.0)
    assert s.pool == []
    s = ProblemSampler(4, seed=0, easy_pool_alpha=0.0)
    for i in range(3):
        s.report(i, 1.0)
    assert all(s.draw() == (3, False) for _ in range(5))


def test_exhaustion_returns_none_and_all_easy_falls_back_to_pool():
    s = ProblemSampler(3, seed=0, max_epochs=1)
    assert [s.draw() is None for _ in range(4)] == [False, False, False, True]
    s = ProblemSampler(2, seed=0, easy_pool_alpha=0.1)
    s.report(0, 1.0)
    s.report(1, 1.0)
    assert all(s.draw()[1] for _ in range(20))


def test_state_dict_round_trip_is_exact():
    a = ProblemSampler(20, seed=5)
    for _ in range(13):
        i, _ = a.draw()
        a.report(i, 1.0 if i % 3 == 0 else 0.5)
    b = ProblemSampler(20, seed=5)
    b.load_state_dict(a.state_dict())
    assert [a.draw() for _ in range(50)] == [b.draw() for _ in range(50)]
    with pytest.raises(ValueError, match="21 problems|20 problems"):
        ProblemSampler(21).load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        ProblemSampler(0)
