"""RewardPool: results, per-task timeouts, crashes and errors score 0 with a reason; workers are replaced."""

import operator
import os
import time

import pytest

from openmimo.rewards.pool import RewardPool, RewardResult


@pytest.fixture(scope="module")
def pool():
    p = RewardPool(workers=2, timeout=5.0)
    yield p
    p.close()


def test_results_come_back_in_futures(pool):
    futs = [pool.submit(operator.add, i, 1) for i in range(20)]
    assert [f.result() for f in futs] == list(range(1, 21))
    assert pool.map(operator.mul, [2, 3], [4, 5]) == [8, 15]


def test_timeout_scores_zero_and_worker_is_replaced(pool):
    before = pool.restarts
    t0 = time.time()
    r = pool.submit(time.sleep, 60, timeout=0.5).result(timeout=30)
    assert r == RewardResult(0.0, "timeout after 0.5s")
    assert time.time() - t0 < 10
    assert pool.restarts == before + 1
    assert pool.submit(operator.add, 2, 2).result(timeout=30) == 4  # the replacement works


def test_crash_and_error_score_zero(pool):
    r = pool.submit(os._exit, 3).result(timeout=30)
    assert r.score == 0.0 and "crashed" in r.reason and "3" in r.reason
    r = pool.submit(operator.truediv, 1, 0).result(timeout=30)
    assert r.score == 0.0 and r.reason.startswith("error: ZeroDivisionError")
    assert pool.submit(operator.add, 1, 1).result(timeout=30) == 2


def test_unpicklable_task_does_not_break_the_pool(pool):
    r = pool.submit(lambda: 1).result(timeout=30)
    assert r.score == 0.0 and "could not send" in r.reason
    assert pool.submit(operator.add, 1, 2).result(timeout=30) == 3


def test_custom_fallback():
    with RewardPool(workers=1, timeout=0.3, fallback=lambda why: -1.0) as p:
        assert p.submit(time.sleep, 30).result(timeout=30) == -1.0
        assert p.timeouts == 1
