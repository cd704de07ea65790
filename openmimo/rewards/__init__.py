"""Rule-based rewards: Math-Verify math reward, the isolated code judge, the test-difficulty code reward.

* :mod:`openmimo.rewards.math` -- ``math_reward(response, gold) -> RewardResult``
* :mod:`openmimo.rewards.pool` -- ``RewardPool``: worker processes with per-task timeouts
* :mod:`openmimo.rewards.sandbox` -- ``judge(code, tests, limits) -> list[Verdict]``, ``Judge``
* :mod:`openmimo.rewards.code` -- calibration into difficulty levels, binary/strict/soft schemes
* :mod:`openmimo.rewards.adapters` -- verl ``compute_score`` and TRL reward functions

Nothing heavy is imported here (Math-Verify loads in the workers, sandboxes start on first use).
"""

from openmimo.rewards.pool import RewardPool, RewardResult
from openmimo.rewards.sandbox import Judge, Limits, Verdict, judge

__all__ = ["RewardPool", "RewardResult", "Judge", "Limits", "Verdict", "judge"]
