"""`openmimo quickstart`: the recipe in miniature on CPU — pre-train the tiny model, RL on math and code, compare.

1. ``openmimo.train.pretrain.main`` with ``configs/tiny.yaml`` (the embedded world, 1.4M tokens, about 5
   minutes on 2 cores);
2. ``openmimo.rl.trainer`` with ``configs/rl_tiny.yaml`` on the world's math and code train splits
   (one run, reward per problem: Math-Verify-style answer check or the code judge);
3. prints held-out pass@1 (averaged over ``val_n`` >= 4 samples per problem; the world's math and
   code test splits, each on its own) of the pre-trained model and of the RL model.
"""

from __future__ import annotations

from pathlib import Path


def main(out_dir: str = "runs/quickstart", rl_steps: int | None = None, overrides=()) -> dict:
    from openmimo.config import load
    from openmimo.rl.trainer import RLConfig
    from openmimo.rl.trainer import main as rl_main
    from openmimo.train.config import PretrainConfig
    from openmimo.train.pretrain import main as pretrain_main

    root = Path(__file__).resolve().parent.parent / "configs"
    out = Path(out_dir)
    pcfg = load(PretrainConfig, root / "tiny.yaml", [f"train.out_dir={out / 'pretrain'}"])
    pretrain_main(pcfg)
    world = out / "pretrain" / "data" / "world"
    ov = [f"train.model_path={out / 'pretrain' / 'final'}", f"train.out_dir={out / 'rl'}",
          f"data.train_path=[{world / 'math' / 'train.jsonl'}, {world / 'code' / 'train.jsonl'}]",
          f"data.val_path=[{world / 'math' / 'test.jsonl'}, {world / 'code' / 'test.jsonl'}]", *overrides]
    if rl_steps is not None:
        ov.append(f"train.steps={rl_steps}")
    rcfg = load(RLConfig, root / "rl_tiny.yaml", ov)
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
    parser.add_argument("overrides", nargs="*", help="RL config overrides, e.g. actor.lr=1e-4")


def run(args):
    main(args.out_dir, args.rl_steps, args.overrides)
