"""Math reward throughput: responses per second on MATH-500 through the RewardPool.

Each MATH-500 gold answer is scored twice: once in a correct boxed response and once in a wrong
one (the gold with "+1" appended), so both the match and the mismatch paths of Math-Verify run.
Reports responses/s with ``--workers`` worker processes (default: one per core), after a warm-up
that starts the workers and imports Math-Verify in them.

    python bench/bench_math_reward.py [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "math" / "math_500_test.jsonl"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--data", default=str(BENCH))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"MATH-500 not found at {args.data}", file=sys.stderr)
        return 2
    from openmimo.rewards.math import math_rewards, normalise_gold
    from openmimo.rewards.pool import RewardPool

    golds = [json.loads(x)["answer"] for x in Path(args.data).read_text().splitlines() if x.strip()]
    right = [f"<think>work</think>So the answer is $\\boxed{{{normalise_gold(g)}}}$." for g in golds]
    wrong = [f"<think>work</think>So the answer is $\\boxed{{{normalise_gold(g)}+1}}$." for g in golds]
    res = {"workers": args.workers, "cores": os.cpu_count(), "responses": 2 * len(golds), "loadavg_before": os.getloadavg()}
    with RewardPool(workers=args.workers, timeout=10.0) as pool:
        math_rewards(right[:4 * args.workers], golds[:4 * args.workers], pool=pool)  # warm-up
        t0 = time.perf_counter()
        r = math_rewards(right + wrong, golds + golds, pool=pool)
        dt = time.perf_counter() - t0
    res["seconds"] = dt
    res["responses_per_s"] = 2 * len(golds) / dt
    res["correct_scored_1"] = sum(x.score == 1.0 for x in r[:len(golds)])
    res["wrong_scored_0"] = sum(x.score == 0.0 for x in r[len(golds):])
    res["timeouts"] = sum("timeout" in x.reason for x in r)
    res["loadavg_after"] = os.getloadavg()
    for k, v in res.items():
        print(f"{k:20s} {v:.1f}" if isinstance(v, float) else f"{k:20s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
