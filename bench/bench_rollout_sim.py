"""The paper's Table 2 in simulation: the five rollout modes on one synthetic trace (CPU, virtual clock).

    python bench/bench_rollout_sim.py [--steps 10] [--batch 32] [--n 16] [--slots 256]

The trace: mean pass rate ~40% (12% of problems always solved, 30% never, the rest Beta), log-normal
response lengths (median 600 tokens, sigma 0.9, capped at 8192; wrong answers 1.5x longer).  The
generator: ``slots`` concurrent sequences, a decode step of 20 ms + 20 us per active sequence.  Rewards:
``--reward-workers`` workers, 50 ms + 20 us per response token each.  Every mode sees the same problems
in the same order (no easy pool, so draws do not depend on the mode) and the same samples per launch.
Prints a Markdown table: time per step, speed-up over naive dynamic sampling, GPU idle ratio, sample
waste ratio, launches, aborted tokens per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

from openmimo.rl.backends import SimBackend, SimRewards, SyntheticTrace
from openmimo.rl.rollout import MODES, RolloutConfig, SeamlessRollout
from openmimo.rl.sampler import ProblemSampler


def run_mode(mode: str, args) -> dict:
    trace = SyntheticTrace(num_problems=args.problems, pass_rate=args.pass_rate, seed=args.seed)
    be = SimBackend(trace, slots=args.slots, step_s=0.02, per_seq_s=2e-5)
    rw = SimRewards(be.clock, workers=args.reward_workers, latency_s=0.05, per_token_s=2e-5)
    sampler = ProblemSampler(args.problems, seed=args.seed, use_easy_pool=False)
    ro = SeamlessRollout(be, rw, sampler, [{} for _ in range(args.problems)],
                         RolloutConfig(mode=mode, n=args.n, batch_groups=args.batch))
    ms = [ro.collect()[1] for _ in range(args.steps)]
    keys = ("time_s", "gpu_idle_ratio", "sample_waste_ratio", "launches", "aborted_tokens", "pass_rate",
            "valid_group_fraction", "reward_wait_s")
    return {k: statistics.mean(m[k] for m in ms) for k in keys}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="groups (prompts) per training batch")
    ap.add_argument("--n", type=int, default=16, help="samples per prompt")
    ap.add_argument("--slots", type=int, default=256, help="concurrent sequences of the generator")
    ap.add_argument("--reward-workers", type=int, default=16)
    ap.add_argument("--problems", type=int, default=4096)
    ap.add_argument("--pass-rate", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    res = {m: run_mode(m, args) for m in MODES}
    base = res["naive"]["time_s"]
    print(f"batch {args.batch} x {args.n} samples, {args.slots} slots, {args.steps} steps per mode, "
          f"trace pass rate {res['none']['pass_rate']:.2f} (simulated in {time.time() - t0:.1f} s of CPU)\n")
    print("| mode | time/step (virtual s) | vs naive | GPU idle | sample waste | launches/step | aborted tok/step |")
    print("|---|---|---|---|---|---|---|")
    for m in MODES:
        r = res[m]
        print(f"| {m} | {r['time_s']:.1f} | {base / r['time_s']:.2f}x | {100 * r['gpu_idle_ratio']:.1f}% | "
              f"{100 * r['sample_waste_ratio']:.1f}% | {r['launches']:.1f} | {r['aborted_tokens']:.0f} |")


if __name__ == "__main__":
    main()
