"""RayRewardPool (the optional Ray reward backend): the process pool's truth table -- values come back,
timeouts, exceptions and dead workers score 0 with a reason, the pool keeps working -- and the
config / missing-Ray errors (those run without Ray)."""

import operator
import os
import subprocess
import sys
import time

import pytest

from openmimo.config import ConfigError, load
from openmimo.rewards.pool import RewardResult, zero_result
from openmimo.rewards.ray_pool import RayRewardPool
from openmimo.rl.config import RLConfig


@pytest.fixture(scope="module")
def pool():
    pytest.importorskip("ray")
    try:  # a private local Ray instance: start-up is slow, share it
        p = RayRewardPool(workers=2, timeout=30.0)
    except (RuntimeError, ConnectionError, TimeoutError) as e:  # a sandbox where Ray's processes cannot start
        pytest.skip(f"a local Ray instance cannot start here: {e}")
    yield p
    p.close()


def test_a_normal_task_returns_its_value(pool):
    assert pool.submit(operator.add, 2, 3).result(timeout=60) == 5
    # openmimo's own functions (the real rewards) run in the Ray workers too
    assert pool.submit(zero_result, "why", timeout=30).result(timeout=60) == RewardResult(0.0, "why")


def test_a_task_past_its_timeout_is_cancelled_and_scores_the_fallback(pool):
    before = pool.timeouts
    t0 = time.time()
    r = pool.submit(time.sleep, 60, timeout=1.5).result(timeout=60)
    assert r == RewardResult(0.0, "timeout after 1.5s")
    assert time.time() - t0 < 20 and pool.timeouts == before + 1
    assert pool.submit(operator.add, 2, 2).result(timeout=60) == 4  # the pool keeps working


def test_a_task_that_raises_scores_the_fallback_with_the_exception(pool):
    r = pool.submit(operator.truediv, 1, 0).result(timeout=60)
    assert r == RewardResult(0.0, "error: ZeroDivisionError: division by zero")


def test_a_task_that_kills_its_worker_scores_the_fallback(pool):
    r = pool.submit(os._exit, 1).result(timeout=60)
    assert r.score == 0.0 and "crashed" in r.reason
    assert pool.submit(operator.add, 1, 1).result(timeout=60) == 2


def test_more_tasks_than_workers_all_complete_and_map_keeps_order(pool):
    futs = [pool.submit(operator.add, i, 1) for i in range(12)] + [pool.submit(time.sleep, 0.2) for _ in range(3)]
    assert [f.result(timeout=120) for f in futs] == list(range(1, 13)) + [None] * 3
    assert pool.map(operator.mul, [2, 3, 4, 5], [10, 10, 10, 10]) == [20, 30, 40, 50]


# -- without Ray ------------------------------------------------------------------------------------
def test_importing_the_module_does_not_import_ray():
    code = "import sys, openmimo.rewards.ray_pool; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_without_ray_the_pool_and_the_config_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(ImportError, match=r"pip install openmimo\[ray\]"):
        RayRewardPool(workers=1)
    with pytest.raises(ConfigError, match=r"reward_backend.*pip install openmimo\[ray\]"):
        load(RLConfig, None, ["train.model_path=x", "train.reward_backend=ray"])


def test_reward_backend_config_is_checked():
    with pytest.raises(ConfigError, match="key 'train.reward_backend' must be process or ray"):
        load(RLConfig, None, ["train.model_path=x", "train.reward_backend=bogus"])
    with pytest.raises(ConfigError, match="train.ray_address"):
        load(RLConfig, None, ["train.model_path=x", "train.ray_address=auto"])
    assert load(RLConfig, None, ["train.model_path=x"]).train.reward_backend == "process"
