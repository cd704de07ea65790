"""`openmimo quickstart`: the recipe in miniature on CPU — pre-train the tiny model, RL on math and code, compare.

1. ``openmimo.train.pretrain.main`` with ``configs/tiny.yaml`` (the embedded world, a fixed token count);
2. ``openmimo.rl.trainer`` with ``configs/rl_tiny.yaml`` on the world's math and code train splits for a fixed
   number of GRPO steps (reward per problem: Math-Verify-style answer check or the code judge);
3. prints held-out pass@1 (averaged over ``val_n`` samples per problem; the world's math and code test splits,
   each on its own) of the pre-trained model and of the RL model, next to the range measured on 2 CPU cores.

``--recipe sft-rl`` runs MiMo's order next to it: after RL-zero (step 2), ``openmimo.train.sft`` with
``configs/sft_tiny.yaml`` on the world's verified ``<think>`` traces, then the same RL on the SFT model with chat
prompts, and prints base, RL-zero, SFT and SFT+RL side by side (the paper's Table 5, in miniature).

The work is fixed (tokens, steps), never a time budget: a slower machine takes longer and gets the same kind of
result.  Each stage prints its progress and ETA.  ``OUT_DIR/quickstart.json`` holds the figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from openmimo.config import load
from openmimo.rl.config import RLConfig
from openmimo.rl.trainer import main as rl_main
from openmimo.train.config import PretrainConfig
from openmimo.train.data import WorldRunData
from openmimo.train.pretrain import main as pretrain_main
from openmimo.train.sft import SFTConfig
from openmimo.train.sft import main as sft_main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Below this held-out greedy math accuracy the tiny base model has not made the arithmetic phase change: most
# GRPO groups then have no correct sample (zero reward variance) and RL has almost nothing to learn from.
RL_READY_MATH = 0.15
RECIPES = ("rl", "sft-rl")
# What seeds 0-2 gave on the 2-core development VM (x86, AVX-512 kernels; docs/tiny_tuning.md, docs/benchmarks.md):
# greedy held-out math after pre-training, and the RL gain in math pass@1 (it shrinks the further pre-training got).
EXPECTED = ("45-85% greedy after pre-training, 36-67% pass@1 before RL, RL gain +10.2 to +29.2 (median +17.7 over "
            "10 runs on the generator's clean text); through the data pipeline, seeds 0 and 1: 54.2% and 68.8% greedy, "
            "+21.4 and +14.7")


def split_overrides(overrides) -> tuple[list[str], list[str], list[str]]:
    """``pretrain.KEY=VALUE`` goes to pre-training and ``sft.KEY=VALUE`` to SFT (as ``KEY=VALUE``), every other
    override to RL (both RL runs of the sft-rl recipe)."""
    pre, sft, rl = [], [], []
    for o in overrides:
        if o.startswith("pretrain."):
            pre.append(o[len("pretrain."):])
        elif o.startswith("sft."):
            sft.append(o[len("sft."):])
        else:
            rl.append(o)
    return pre, sft, rl


def readiness_note(math_acc: float, threshold: float = RL_READY_MATH) -> str | None:
    """A plain warning when pre-training ended below the level where RL can learn; None when it did not."""
    if math_acc >= threshold:
        return None
    return (f"pre-training ended at {100 * math_acc:.1f}% held-out math, below the {100 * threshold:.0f}% where the "
            f"tiny model has made the arithmetic phase change: most RL groups will have no correct sample, and RL "
            f"will add little. The result depends on the seed and on the CPU's kernels; see docs/tiny_tuning.md.")


def rl_config(model: Path, out: Path, world: WorldRunData, seed: int, rl_steps: int | None, overrides,
              style: str = "base") -> RLConfig:
    """configs/rl_tiny.yaml on the world's math and code splits, from ``model``, into ``out``."""
    ov = [f"train.model_path={model}", f"train.out_dir={out}", f"train.seed={seed}",
          f"data.train_path=[{world.records('math', 'train')}, {world.records('code', 'train')}]",
          f"data.val_path=[{world.records('math', 'test')}, {world.records('code', 'test')}]", "train.time_limit_s=0",
          f"data.prompt_style={style}"]
    if rl_steps is not None:
        ov.append(f"train.max_steps={rl_steps}")
    return load(RLConfig, CONFIGS / "rl_tiny.yaml", ov + list(overrides))


def pass_at_1(val: dict, kind: str) -> float:
    """A validation's pass@1 for ``kind`` (the whole validation when it was not split by kind)."""
    return val.get(kind, val).get("pass@1", 0.0)


def main(out_dir: str = "runs/quickstart", rl_steps: int | None = None, overrides=(), seed: int = 0,
         overwrite: bool = False, recipe: str = "rl") -> dict:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    out = Path(out_dir)
    pre_ov, sft_ov, rl_ov = split_overrides(overrides)
    n_stages = 2 if recipe == "rl" else 4
    t0 = time.time()
    pcfg = load(PretrainConfig, CONFIGS / "tiny.yaml",
                [f"train.out_dir={out / 'pretrain'}", f"train.seed={seed}", "train.time_limit_s=0", *pre_ov])
    print(f"[quickstart] 1/{n_stages} pre-training: {sum(s.tokens for s in pcfg.stages):,} tokens, seed {seed}",
          flush=True)
    pre = pretrain_main(pcfg, overwrite=overwrite)
    t_pre = time.time() - t0
    pre_acc = pre["eval"]["math_acc"]
    note = readiness_note(pre_acc)
    if note:
        print(f"[quickstart] WARNING: {note}", flush=True)
    world = WorldRunData.of_run(out / "pretrain")  # the world pre-training wrote: RL's problems, SFT's traces
    rcfg = rl_config(out / "pretrain" / "final", out / "rl", world, seed, rl_steps, rl_ov)
    print(f"[quickstart] pre-training took {t_pre:.0f} s (held-out greedy math {100 * pre_acc:.1f}%); "
          f"2/{n_stages} RL: {rcfg.train.max_steps} GRPO steps", flush=True)
    hist = rl_main(rcfg, overwrite=overwrite)
    wall = time.time() - t0
    before, after = hist.get("val_start", {}), hist.get("val_end", {})
    k = rcfg.train.val_n
    kinds = [kd for kd in ("math", "code") if kd in after] or ["all"]  # per kind when both were validated
    for kind in kinds:
        print(f"[quickstart] held-out {kind} pass@1 (avg over {k} samples at temperature {rcfg.train.val_temperature}, "
              f"top-p {rcfg.train.val_top_p}; {after.get(kind, after).get('n_problems', 0)} problems): "
              f"before RL {100 * pass_at_1(before, kind):.1f}% -> after RL {100 * pass_at_1(after, kind):.1f}%")
    if "math" in after or kinds == ["all"]:
        b, a = pass_at_1(before, "math"), pass_at_1(after, "math")
        print(f"[quickstart] math: {100 * b:.1f}% before RL, gain {100 * (a - b):+.1f} points; "
              f"{wall / 60:.1f} minutes in all.  Measured with seeds 0-2 on a 2-core AVX-512 VM: {EXPECTED}")
        if note:
            print(f"[quickstart] (pre-training was below the RL-ready level: {100 * pre_acc:.1f}%)")
    result = {"seed": seed, "recipe": recipe, "pretrain_math_acc": pre_acc, "pretrain_tokens": pre["tokens"],
              "pretrain_s": t_pre, "rl_steps": int(hist.get("steps", rcfg.train.max_steps)), "before": before,
              "after": after, "wall_s": wall, "below_rl_ready": note is not None}
    if recipe == "sft-rl":
        result["sft_rl"] = sft_then_rl(out, world, seed, rl_steps, sft_ov, rl_ov, overwrite, n_stages)
        result["wall_s"] = time.time() - t0
        print_table(result, kinds)
    (out / "quickstart.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def sft_then_rl(out: Path, world: WorldRunData, seed: int, rl_steps, sft_ov, rl_ov, overwrite: bool,
                n_stages: int) -> dict:
    """SFT on the world's verified traces from the pre-trained model, then RL on the SFT model (chat prompts)."""
    t0 = time.time()
    scfg = load(SFTConfig, CONFIGS / "sft_tiny.yaml",
                [f"init={out / 'pretrain' / 'final'}", f"data.world_dir={world.world}", f"train.out_dir={out / 'sft'}",
                 f"train.seed={seed}", "train.time_limit_s=0", *sft_ov])
    print(f"[quickstart] 3/{n_stages} SFT: {scfg.data.world_traces} world traces ({scfg.data.world_trace_style} "
          f"style), {scfg.data.epochs} epoch(s)", flush=True)
    sft = sft_main(scfg, overwrite=overwrite)
    t_sft = time.time() - t0
    rcfg = rl_config(out / "sft" / "final", out / "sft-rl", world, seed, rl_steps, rl_ov, style="chat")
    print(f"[quickstart] SFT took {t_sft:.0f} s ({sft['steps']} steps); 4/{n_stages} RL on the SFT model (chat "
          f"prompts): {rcfg.train.max_steps} GRPO steps", flush=True)
    hist = rl_main(rcfg, overwrite=overwrite)
    return {"sft_s": t_sft, "sft_steps": sft["steps"], "sft_data": sft.get("data"),
            "rl_steps": int(hist.get("steps", rcfg.train.max_steps)),
            "before": hist.get("val_start", {}), "after": hist.get("val_end", {}), "wall_s": time.time() - t0}


def print_table(result: dict, kinds: list[str]) -> None:
    """Base, RL-zero, SFT and SFT+RL held-out pass@1 per kind (the paper's Table 5, in miniature)."""
    sr = result["sft_rl"]
    print("[quickstart] held-out pass@1      base   RL-zero   SFT   SFT+RL")
    for kind in kinds:
        row = [pass_at_1(result["before"], kind), pass_at_1(result["after"], kind), pass_at_1(sr["before"], kind),
               pass_at_1(sr["after"], kind)]
        print(f"[quickstart]   {kind:<18}" + "".join(f"{100 * v:7.1f}%" for v in row))
    m = [pass_at_1(d, "math") for d in (result["after"], sr["after"])]
    verdict = "beats" if m[1] > m[0] else "does not beat"
    print(f"[quickstart] math: SFT then RL {verdict} RL-zero ({100 * m[1]:.1f}% vs {100 * m[0]:.1f}%); "
          f"{result['wall_s'] / 60:.1f} minutes in all", flush=True)


def add_arguments(parser):
    parser.add_argument("--out-dir", default="runs/quickstart", help="run folder (pretrain/ and rl/ inside)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the world, both models' init, data order, sampling")
    parser.add_argument("--rl-steps", type=int, default=None, help="GRPO steps (default: configs/rl_tiny.yaml)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart in --out-dir")
    parser.add_argument("--recipe", choices=RECIPES, default="rl",
                        help="rl: pre-train then RL (RL-zero); sft-rl: also SFT then RL, printed side by side")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides: pretrain.KEY=VALUE for pre-training, sft.KEY=VALUE for SFT, KEY=VALUE "
                             "for RL (actor.lr=1e-4)")


def run(args):
    main(args.out_dir, args.rl_steps, args.overrides, args.seed, args.overwrite, args.recipe)
