"""`openmimo quickstart`: the recipe in miniature on CPU — pre-train the tiny model, RL on math and code, compare.

1. ``openmimo.train.pretrain.main`` with ``configs/tiny.yaml`` (the embedded world, 1.4M tokens, about 4-5
   minutes on 2 cores; guard ``PRETRAIN_GUARD_S``);
2. ``openmimo.rl.trainer`` with ``configs/rl_tiny.yaml`` on the world's math and code train splits
   (one run, reward per problem: Math-Verify-style answer check or the code judge), its time guard cut to
   what the whole command's budget (``--budget-s``) leaves;
3. prints held-out pass@1 (averaged over ``val_n`` >= 4 samples per problem; the world's math and
   code test splits, each on its own) of the pre-trained model and of the RL model.
"""

from __future__ import annotations

import time
from pathlib import Path

# The whole command's budget (the target: 15 minutes on 2 cores), split at run time.  Pre-training stops on its
# token count (about 4 minutes on 2 idle cores); its guard here is longer than the tiny preset's 5 minutes, so that a
# slower machine still reaches the phase change the RL needs (a run cut at 0.76M of 1.4M tokens started RL at 1%).
# RL gets what is left, less the final validation's reserve.
BUDGET_S = 870.0
PRETRAIN_GUARD_S = 420.0
FINAL_RESERVE_S = 75.0


def rl_time_limit(configured_s: float, budget_s: float, elapsed_s: float, reserve_s: float = FINAL_RESERVE_S,
                  floor_s: float = 30.0) -> float:
    """RL's time guard: the configured one (0 = none), cut to what the budget leaves, never below ``floor_s``."""
    left = budget_s - elapsed_s - reserve_s
    limit = min(configured_s, left) if configured_s > 0 else left
    return max(limit, floor_s)


def main(out_dir: str = "runs/quickstart", rl_steps: int | None = None, overrides=(), budget_s: float = BUDGET_S) -> dict:
    from openmimo.config import load
    from openmimo.rl.trainer import RLConfig
    from openmimo.rl.trainer import main as rl_main
    from openmimo.train.config import PretrainConfig
    from openmimo.train.pretrain import main as pretrain_main

    root = Path(__file__).resolve().parent.parent / "configs"
    out = Path(out_dir)
    t0 = time.time()
    pcfg = load(PretrainConfig, root / "tiny.yaml", [f"train.out_dir={out / 'pretrain'}",
                                                    f"train.time_limit_s={PRETRAIN_GUARD_S}"])
    pretrain_main(pcfg)
    world = out / "pretrain" / "data" / "world"
    ov = [f"train.model_path={out / 'pretrain' / 'final'}", f"train.out_dir={out / 'rl'}",
          f"data.train_path=[{world / 'math' / 'train.jsonl'}, {world / 'code' / 'train.jsonl'}]",
          f"data.val_path=[{world / 'math' / 'test.jsonl'}, {world / 'code' / 'test.jsonl'}]", *overrides]
    if rl_steps is not None:
        ov.append(f"train.steps={rl_steps}")
    rcfg = load(RLConfig, root / "rl_tiny.yaml", ov)
    rcfg.train.time_limit_s = rl_time_limit(rcfg.train.time_limit_s, budget_s, time.time() - t0)
    print(f"[quickstart] pre-training took {time.time() - t0:.0f} s; RL time guard {rcfg.train.time_limit_s:.0f} s "
          f"(budget {budget_s:.0f} s for the whole command)")
    hist = rl_main(rcfg)
    before, after = hist.get("val_start", {}), hist.get("val_end", {})
    k = rcfg.train.val_n
    kinds = [kd for kd in ("math", "code") if kd in after] or ["all"]  # per kind when both were validated
    for kind in kinds:
        b, a = before.get(kind, before), after.get(kind, after)
        print(f"[quickstart] held-out {kind} pass@1 (avg over {k} samples at temperature {rcfg.train.val_temperature}, "
              f"top-p {rcfg.train.val_top_p}; {a.get('n_problems', 0)} problems): "
              f"before RL {100 * b.get('pass@1', 0):.1f}% -> after RL {100 * a.get('pass@1', 0):.1f}%")
    return {"before": before, "after": after}


def add_arguments(parser):
    parser.add_argument("--out-dir", default="runs/quickstart", help="run folder (pretrain/ and rl/ inside)")
    parser.add_argument("--rl-steps", type=int, default=None, help="RL iterations (default: configs/rl_tiny.yaml)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="seconds for the whole command; RL's time guard gets what pre-training leaves")
    parser.add_argument("overrides", nargs="*", help="RL config overrides, e.g. actor.lr=1e-4")


def run(args):
    main(args.out_dir, args.rl_steps, args.overrides, args.budget_s)
