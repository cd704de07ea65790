"""The tiny recipe under every CPU kernel path, seed and thread count: does it keep its promise everywhere?

    python bench/bench_tiny_matrix.py [--stage quickstart|pretrain] [--caps default,avx2,avx512]
        [--seeds 0,1,2] [--threads 1,2] [--jobs N] [--out-dir runs/tiny_matrix]
        [--variant NAME=KEY=VALUE[,KEY=VALUE...]] ... [override ...]

Each cell of caps x seeds x threads (x variants) is one whole, fixed-work command in a subprocess:
``openmimo quickstart --seed S`` (pre-training, RL, held-out pass@1 before and after) or ``openmimo pretrain
configs/tiny.yaml train.seed=S`` (held-out greedy math accuracy only), with ``ATEN_CPU_CAPABILITY`` set to the
kernel path (``default`` is ATen's scalar path; ``native`` leaves the variable unset: the best this CPU offers)
and ``OMP_NUM_THREADS`` to the thread count.  ``--jobs`` cells run side by side: the work is fixed, so
their results do not depend on contention, only their wall times do (the table marks them as such when
``--jobs`` > 1).  Overrides (``key=value``) go to every cell's pre-training; a ``--variant`` adds its own.

Prints one Markdown row per cell and a summary per variant: min / median / max of the pre-RL score, of the
RL gain, and of the whole command's wall time.  ``--json PATH`` also writes every row.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cell_command(stage: str, out: Path, seed: int, overrides: list[str]) -> list[str]:
    if stage == "quickstart":
        ov = [f"pretrain.{o}" for o in overrides]
        return [sys.executable, "-m", "openmimo.cli", "quickstart", "--out-dir", str(out), "--seed", str(seed), *ov]
    return [sys.executable, "-m", "openmimo.cli", "pretrain", str(ROOT / "configs" / "tiny.yaml"),
            f"train.out_dir={out}", f"train.seed={seed}", *overrides]


def read_result(stage: str, out: Path) -> dict:
    """The cell's figures from its run folders (quickstart.json, or pre-training's final metrics line)."""
    if stage == "quickstart":
        q = json.loads((out / "quickstart.json").read_text())
        return {"pre": q["pretrain_math_acc"], "before": q["before"]["math"]["pass@1"],
                "after": q["after"]["math"]["pass@1"], "rl_steps": q["rl_steps"]}
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "final_eval" in line]
    return {"pre": final[-1]["final_eval"]["math_acc"]}


def run_cell(stage: str, out_dir: Path, variant: str, extra: list[str], cap: str, seed: int, threads: int) -> dict:
    name = f"{variant}-{cap}-s{seed}-t{threads}"
    out = out_dir / name
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap != "native":
        env["ATEN_CPU_CAPABILITY"] = cap
    t0 = time.time()
    log = out_dir / f"{name}.log"
    with open(log, "w") as f:
        rc = subprocess.call(cell_command(stage, out, seed, extra), env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    row = {"variant": variant, "cap": cap, "seed": seed, "threads": threads, "rc": rc, "wall_s": time.time() - t0}
    if rc == 0:
        row.update(read_result(stage, out))
    else:
        row["error"] = log.read_text()[-400:]
    return row


def summary(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return "-"
    scale = 1 if key == "wall_s" else 100
    return " / ".join(f"{scale * v:.1f}" for v in (min(vals), statistics.median(vals), max(vals)))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["quickstart", "pretrain"], default="quickstart")
    ap.add_argument("--caps", default="default,avx2,avx512")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out-dir", default="runs/tiny_matrix")
    ap.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE...]")
    ap.add_argument("--json", default="")
    ap.add_argument("overrides", nargs="*", help="pre-training overrides for every cell")
    a = ap.parse_args(argv)

    variants = {"preset": []}
    if a.variant:
        variants = {}
        for v in a.variant:
            name, _, kvs = v.partition("=")
            variants[name] = [kv for kv in kvs.split(",") if kv]
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = list(itertools.product(variants, a.caps.split(","), map(int, a.seeds.split(",")),
                                   map(int, a.threads.split(","))))
    import torch

    print(f"# {a.stage} matrix: {len(cells)} cells, {a.jobs} at a time; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, best CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    with ThreadPoolExecutor(a.jobs) as pool:
        futs = [pool.submit(run_cell, a.stage, out_dir, v, a.overrides + variants[v], c, s, t) for v, c, s, t in cells]
        rows = []
        for f in futs:
            r = f.result()
            rows.append(r)
            print(json.dumps(r), flush=True)
    qs = a.stage == "quickstart"
    print("\n| variant | kernel path | seed | threads | pre-training math | before RL | after RL | gain | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for k in ("before", "after"):
            r.setdefault(k, None)
        if qs and r.get("after") is not None:
            r["gain"] = r["after"] - r["before"]
        fmt = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
        print(f"| {r['variant']} | {r['cap']} | {r['seed']} | {r['threads']} | {fmt(r.get('pre'))} | {fmt(r['before'])} "
              f"| {fmt(r['after'])} | {fmt(r.get('gain'))} | {r['wall_s']:.0f}{'' if r['rc'] == 0 else ' FAILED'} |")
    print(f"\n| variant | cells | pre-training math min / median / max | before RL | gain | wall s{' (contended)' if a.jobs > 1 else ''} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v in variants:
        vr = [r for r in rows if r["variant"] == v]
        print(f"| {v} | {len(vr)} | {summary(vr, 'pre')} | {summary(vr, 'before')} | {summary(vr, 'gain')} "
              f"| {summary(vr, 'wall_s')} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
