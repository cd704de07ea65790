"""RL learning curve: does GRPO raise held-out pass@1, and how fast?

    python bench/bench_rl_learning.py --model CKPT --train JSONL [JSONL ...] --held-out JSONL
        [--levels 1] [--iters 150] [--eval-every 50] [--eval-problems 96] [--eval-n 16]
        [--config configs/rl_tiny.yaml] [override ...]

Builds :class:`openmimo.rl.trainer.RLRun` from ``--config`` (default the tiny preset) with the given
checkpoint and training problems, then alternates ``--eval-every`` training iterations (rollout,
update, weight sync: exactly what ``openmimo rl`` does per step) with a held-out measurement:
``--eval-problems`` problems of ``--held-out`` (filtered by ``--levels``) x ``--eval-n`` samples through
:meth:`RLRun.validate` (the config's evaluation protocol: temperature 0.6 / top-p 0.95).  The many
samples keep the standard error near one point (a 48 x 4 validation has about three), which is what
a "+5 points" claim needs.  ``--fixed`` trains on the first ``--eval-problems`` training problems only
and measures on those same problems (can the update learn what it is trained on?).

Prints a Markdown table: iterations, held-out pass@1, rollout pass rate, entropy, wall seconds.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from openmimo.config import load
from openmimo.rl.config import RLConfig
from openmimo.rl.problems import load_problems
from openmimo.rl.trainer import RLRun


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--held-out", required=True)
    ap.add_argument("--levels", type=int, nargs="*", default=[1])
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-problems", type=int, default=96)
    ap.add_argument("--eval-n", type=int, default=16)
    ap.add_argument("--fixed", action="store_true", help="train and measure on the same first --eval-problems")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "rl_tiny.yaml"))
    ap.add_argument("--out-dir", default="runs/bench_rl_learning")
    ap.add_argument("overrides", nargs="*", help="RL config overrides, e.g. actor.lr=2e-4")
    a = ap.parse_args(argv)

    ov = [f"train.model_path={a.model}", f"train.out_dir={a.out_dir}", f"data.train_path=[{', '.join(a.train)}]",
          "data.val_path=", f"data.levels=[{', '.join(map(str, a.levels))}]"]
    if a.fixed:
        ov.append(f"data.max_problems={a.eval_problems}")
    cfg = load(RLConfig, a.config, ov + list(a.overrides))
    run = RLRun(cfg)
    try:
        if a.fixed:
            held = run.problems[: a.eval_problems]
        else:
            held = load_problems(a.held_out, cfg.data.kind, run.tok, cfg.data.max_prompt_tokens, a.eval_problems,
                                 a.levels)[0]

        # RLRun.validate is the measurement: the same engine and rewards, at the config's evaluation protocol
        # (train.val_temperature / val_top_p: 0.6 / 0.95), over these problems x --eval-n samples
        run.val, cfg.train.val_n = held, a.eval_n

        def measure() -> float:
            return run.validate()["pass@1"]

        rows = [{"iters": 0, "pass@1": measure(), "rollout_pass": float("nan"), "entropy": float("nan"), "wall_s": 0.0}]
        print(f"[bench] {len(run.problems)} training problems, {len(held)} held-out x {a.eval_n}: "
              f"pass@1 {100 * rows[0]['pass@1']:.1f}%", flush=True)
        t0, roll_pass, ents = time.perf_counter(), [], []
        for it in range(1, a.iters + 1):
            groups, roll = run.rollout.collect()
            roll_pass.append(roll["pass_rate"])
            if groups:
                upd = run.update(groups)
                run.engine.update_weights(run.model)
                ents.append(upd["entropy"])
            if it % a.eval_every == 0 or it == a.iters:
                wall = time.perf_counter() - t0
                rows.append({"iters": it, "pass@1": measure(), "rollout_pass": sum(roll_pass) / len(roll_pass),
                             "entropy": sum(ents) / max(len(ents), 1), "wall_s": wall})
                roll_pass, ents = [], []
                print(f"[bench] {it} iterations ({wall:.0f}s): held-out pass@1 {100 * rows[-1]['pass@1']:.1f}%",
                      flush=True)
        n = len(held) * a.eval_n
        t = cfg.train
        print(f"\nheld-out: {len(held)} problems x {a.eval_n} samples (T={t.val_temperature}, top-p {t.val_top_p}); "
              f"one-sample standard error at p=0.2: {100 * math.sqrt(0.16 / n):.1f} points; lr {cfg.actor.lr}, "
              f"batch {cfg.rollout.batch_groups} x {cfg.rollout.n}\n")
        print("| RL iterations | held-out pass@1 | rollout pass rate (since last row) | entropy | wall (training) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['iters']} | {100 * r['pass@1']:.1f}% | {r['rollout_pass']:.3f} | {r['entropy']:.3f} | "
                  f"{r['wall_s']:.0f} s |")
        return rows
    finally:
        run.close()


if __name__ == "__main__":
    main()
