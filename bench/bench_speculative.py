"""MTP speculative decoding: acceptance per depth and speed-up over plain decoding, on a trained model.

    python bench/bench_speculative.py --model OUT/final --prompts prompts.jsonl --batch 1 16
    python bench/bench_speculative.py --build runs/spec --batch 1 16 --k 1 3   # self-contained (one GPU)
    python bench/bench_speculative.py --tiny       # CPU dry run: tiny random model + tokenizer in a temp folder

``--build DIR`` makes the bench self-contained: when DIR/final does not hold a checkpoint yet, it pre-trains one
with ``openmimo pretrain`` on ``--build-config`` (default configs/spec.yaml: a 16-layer, 768-wide MiMo with three
MTP layers trained jointly, on the embedded world, about two minutes on one H100/H200; ``--build-set key=value``
overrides its keys), then measures that checkpoint on the first ``--num-prompts`` of the world's held-out math
problems (DIR/data/world/math/test.jsonl, level 1 first).  The drafts are the trained MTP layers' own: nothing
is forced.  A second run on the same DIR reuses the checkpoint.

For each batch size B the engine runs with ``max_slots=B`` over the same ``--num-prompts`` prompts
(continuous batching: at B=1 they run one after another), once plain (``spec_k=0``) and once per
``k`` in ``--k`` (default 1..number of MTP layers), each at every temperature in ``--temperatures``
(default 0 and 1; no top-p / top-k; per-prompt seed = prompt index, so runs are reproducible).

- Warm-up excluded: each engine first generates one request (no stop token) that starts at the
  shortest prompt's length and runs to the longest prompt + ``--new-tokens``, so every attention-length
  bucket the timed runs can use is compiled before timing (on GPU), then every prompt is prefilled
  once (first-call kernel set-up of each prompt length); counters and SpecStats are reset after it.
- Speed: *decode* tokens/s, as bench/bench_decode.py: (generated tokens - one per sequence, which
  comes from the prefill) / time inside the engine's decode steps (drafting + verify + one host sync
  per step; prefill excluded).  The end-to-end rate (all generated tokens / wall time of
  ``Engine.generate``, prefill included) is reported too.  Speed-up = rate / plain rate at the same
  batch size and temperature.
- Acceptance per depth = accepted / drafted from the engine's ``SpecStats`` (depth j counts as
  accepted only if depths < j were); mean accepted length = accepted drafts per verify step
  (tokens per step = this + 1).
- Correctness: greedy speculative outputs are compared token by token with greedy plain outputs at
  the same batch size; differing sequences are reported as ``MISMATCH``.  In bf16 the (k+1)-token
  verify forward and the 1-token plain forward use different kernels, so a near-tie can flip an
  arg-max; re-run with ``--dtype fp32`` to tell numerics from a bug.

Generation stops at the tokenizer's eos token (``--ignore-eos`` to always generate ``--new-tokens``).
Prints a markdown table; ``--json FILE`` also writes the rows.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_tiny(folder: Path, n_mtp: int = 2) -> Path:
    """A tiny random MiMo with ``n_mtp`` MTP layers, a tokenizer trained on world-math text, and a
    prompts file (both record kinds), written to ``folder``; returns the prompts file."""
    import random

    from openmimo.data.world_math import LEVELS, math_text
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import train_tokenizer

    rng = random.Random(0)
    recs = []
    for i in range(200):
        _, problem, solution, _ = LEVELS[1 + i % len(LEVELS)](rng)
        recs.append({"problem": problem, "solution": solution})
    tok = train_tokenizer([math_text(r) for r in recs], vocab_size=400)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     num_nextn_predict_layers=n_mtp, tie_word_embeddings=False, torch_dtype="float32")
    build_model(cfg, seed=0).save_pretrained(folder, tokenizer=tok)
    prompts = folder / "prompts.jsonl"
    lines = [json.dumps({"problem": r["problem"]}) for r in recs[:15]]
    lines.append(json.dumps({"prompt": "Problem: What is 2 + 2?\nSolution:"}))
    prompts.write_text("\n".join(lines) + "\n")
    return prompts


def build_checkpoint(run_dir: Path, config: str, overrides: list[str]) -> tuple[Path, Path, dict]:
    """Pre-train ``config`` into ``run_dir`` unless ``run_dir``/final already holds a model; returns (checkpoint,
    held-out math prompts, {"build_seconds", "cached", "eval"})."""
    from openmimo.config import load
    from openmimo.train.config import PretrainConfig
    from openmimo.train.data import WorldRunData
    from openmimo.train.pretrain import main as pretrain

    final = run_dir / "final"
    prompts = WorldRunData.of_run(run_dir).world / "math" / "test.jsonl"
    if (final / "config.json").is_file() and prompts.is_file():
        print(f"build: reusing {final}", file=sys.stderr, flush=True)
        return final, prompts, {"build_seconds": 0.0, "cached": True, "eval": None}
    cfg = load(PretrainConfig, config, [f"train.out_dir={run_dir}", *overrides])
    t0 = time.perf_counter()
    result = pretrain(cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    print(f"build: {result['tokens']} tokens, {result['train_time_s']:.0f} s of training, {seconds:.0f} s in all; "
          f"MTP accuracy per depth {[round(a, 3) for a in result['eval'].get('mtp_acc', [])]}",
          file=sys.stderr, flush=True)
    return final, prompts, {"build_seconds": seconds, "cached": False, "eval": result["eval"],
                            "tokens": result["tokens"], "train_seconds": result["train_time_s"]}


def read_prompts(path, tok, limit: int, max_prompt_len: int) -> list[list[int]]:
    """Token ids of the first ``limit`` usable records ("problem" via math_prompt, or "prompt" as-is)."""
    from openmimo.data.world_math import math_prompt

    out, skipped = [], 0
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if "problem" in rec:
                text = math_prompt(rec["problem"])
            elif "prompt" in rec:
                text = rec["prompt"]
            else:
                raise SystemExit(f"{path}:{n}: record has neither 'problem' nor 'prompt'")
            ids = tok.encode(text)
            if not ids or len(ids) > max_prompt_len:
                skipped += 1
                continue
            out.append(ids)
            if len(out) == limit:
                break
    if skipped:
        print(f"note: skipped {skipped} empty or too long prompts (> {max_prompt_len} tokens)", file=sys.stderr)
    if not out:
        raise SystemExit(f"{path}: no usable prompts")
    return out


def reset(engine) -> None:
    engine.reset_stats()


def timed_run(engine, prompts, temperature: float, new_tokens: int, stop_ids: tuple) -> dict:
    from openmimo.infer.engine import SamplingParams

    params = [SamplingParams(max_new_tokens=new_tokens, temperature=temperature, stop_ids=stop_ids, seed=i)
              for i in range(len(prompts))]
    reset(engine)
    sync(engine.device)
    t0 = time.perf_counter()
    comps = engine.generate(prompts, params)
    sync(engine.device)
    wall = time.perf_counter() - t0
    c = engine.counters
    gen = c["generated_tokens"]
    st = engine.spec_stats
    return {
        "outputs": [cs[0].token_ids for cs in comps],
        "decode_tok_s": (gen - len(prompts)) / c["decode_seconds"] if c["decode_seconds"] else 0.0,
        "e2e_tok_s": gen / wall,
        "generated": gen,
        "decode_steps": c["decode_steps"],
        "decode_seconds": c["decode_seconds"],
        "prefill_seconds": c["prefill_seconds"],
        "acceptance": st.acceptance_rate() if engine.k else [],
        "mean_accepted_length": st.mean_accepted_length() if engine.k else 0.0,
        "verify_steps": st.steps,
    }


def compare(spec: list, plain: list) -> tuple[int, list]:
    """(number of differing sequences, first differing position of each)."""
    firsts = []
    for a, b in zip(spec, plain):
        if a != b:
            firsts.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
    return len(firsts), firsts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF-layout checkpoint folder with trained MTP layers and a tokenizer")
    ap.add_argument("--prompts", help="JSONL: records with 'problem' (formatted by math_prompt) or 'prompt'")
    ap.add_argument("--build", metavar="DIR", help="pre-train the measured model into DIR first (reused when "
                    "DIR/final exists); prompts default to its world's held-out math problems")
    ap.add_argument("--build-config", default=str(Path(__file__).resolve().parents[1] / "configs" / "spec.yaml"),
                    help="pre-training config of --build (default configs/spec.yaml)")
    ap.add_argument("--build-set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of --build-config")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run on a tiny random model in a temp folder "
                    "(caps: 24 new tokens, 4 prompts, batch 4)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--num-prompts", type=int, default=16, help="prompts run at every batch size (first N usable)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, nargs="+", help="draft depths (default 1..number of MTP layers)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default bf16 on GPU, fp32 on CPU")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile the decode step (default: on for CUDA, off for CPU)")
    ap.add_argument("--compile-scope", choices=["step", "block"], default="block",
                    help="what torch.compile compiles (Engine's compile_scope; default block: 10-30 s of warm-up per "
                         "engine instead of 70-110 s, so the whole bench fits in 5 minutes): the whole decode step, "
                         "or regions (block, MTP depth, head) with the step captured as one CUDA graph")
    ap.add_argument("--compile-prefill", action="store_true",
                    help="also compile the prefill (one graph for every prompt length; off by default: on an H100 it "
                         "added about 170 s to a 0.5B engine's warm-up)")
    ap.add_argument("--max-prefill-tokens", type=int, default=8192,
                    help="padded prompt tokens per prefill forward (1 = one prompt per forward, the old engine)")
    ap.add_argument("--kv-buckets", action=argparse.BooleanOptionalAction, default=None,
                    help="one compiled graph per attention-length bucket (the engine's default) instead of one "
                         "per sampling mode over the whole capacity (default here: off when compiling, so the "
                         "warm-up compiles 2 graphs per engine, not 2 per bucket)")
    ap.add_argument("--prefill-graph", action=argparse.BooleanOptionalAction, default=None,
                    help="short admissions prefilled window by window through one CUDA graph (default: on when "
                         "compiled)")
    ap.add_argument("--ignore-eos", action="store_true", help="always generate --new-tokens (no stop token)")
    ap.add_argument("--device", help="default cuda when available (cpu with --tiny)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    if not args.tiny and not args.build and not (args.model and args.prompts):
        ap.error("--model and --prompts are required (or --build DIR, or --tiny)")
    device = torch.device(args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    compile = device.type == "cuda" if args.compile is None else args.compile
    kv_buckets = (not compile) if args.kv_buckets is None else args.kv_buckets
    if args.tiny:  # keep the dry run short on a laptop CPU
        args.new_tokens, args.num_prompts = min(args.new_tokens, 24), min(args.num_prompts, 4)
        args.batch = [min(b, 4) for b in args.batch]  # batch 16 -> 4: all slots decode every step

    import openmimo
    from openmimo.infer.engine import Engine, SamplingParams

    t_bench = time.perf_counter()

    tmp, build = None, None
    if args.build:
        model_path, prompts_file, build = build_checkpoint(Path(args.build), args.build_config, args.build_set)
        if args.prompts:
            prompts_file = Path(args.prompts)
    elif args.tiny:
        tmp = tempfile.TemporaryDirectory(prefix="bench_spec_tiny_")
        prompts_file = build_tiny(Path(tmp.name))
        model_path = Path(tmp.name)
        if args.prompts:
            prompts_file = Path(args.prompts)
    else:
        model_path, prompts_file = Path(args.model), Path(args.prompts)

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the build's training state
    model = openmimo.load_model(model_path, dtype=dtype, device=device)
    tok = openmimo.load_tokenizer(model_path)
    cfg = model.config
    n_mtp = cfg.num_nextn_predict_layers
    if n_mtp < 1:
        raise SystemExit(f"{model_path}: the model has no MTP layers (num_nextn_predict_layers = 0)")
    ks = args.k or list(range(1, n_mtp + 1))
    bad = [k for k in ks if not 1 <= k <= n_mtp]
    if bad:
        raise SystemExit(f"--k {bad}: the model has {n_mtp} MTP layers")
    max_ctx = cfg.max_position_embeddings
    new_tokens = min(args.new_tokens, max_ctx // 2)
    prompts = read_prompts(prompts_file, tok, args.num_prompts, max_ctx - new_tokens - 2 * max(ks) - 4)
    lens = [len(p) for p in prompts]
    max_len = min(max(lens) + new_tokens + 1, max_ctx)
    stop_ids = () if args.ignore_eos or tok.eos_id is None else (tok.eos_id,)

    rows = []
    mismatches = 0
    for b in args.batch:
        plain = {}
        for k in [0] + ks:
            engine = Engine(model, max_slots=b, max_len=max_len, spec_k=k, compile=compile, kv_buckets=kv_buckets,
                            compile_prefill=args.compile_prefill, prefill_graph=args.prefill_graph,
                            max_prefill_tokens=args.max_prefill_tokens, compile_scope=args.compile_scope)
            # warm-up, at every temperature (greedy and sampling are different graphs): one request from the
            # shortest prompt's length up to the longest one + new tokens when every attention-length bucket
            # must be compiled; a few steps otherwise
            warm = prompts[lens.index(min(lens))]
            n_warm = max_len - len(warm) if compile and kv_buckets else min(4, max_len - len(warm))
            t_warm = time.perf_counter()
            for temp in args.temperatures:
                engine.generate([warm], SamplingParams(max_new_tokens=n_warm, temperature=temp, seed=0))
            engine.generate(prompts, SamplingParams(max_new_tokens=2, temperature=0, seed=0))  # prefill shapes
            sync(device)
            t_warm = time.perf_counter() - t_warm
            print(f"batch {b} k {k}: warm-up (compilation) {t_warm:.1f} s",
                  file=sys.stderr, flush=True)
            for temp in args.temperatures:
                r = timed_run(engine, prompts, temp, new_tokens, stop_ids)
                r.update(batch=b, k=k, temperature=temp, warmup_seconds=t_warm, compile_scope=args.compile_scope)
                if k == 0:
                    plain[temp] = r
                base = plain.get(temp)
                r["speedup"] = r["decode_tok_s"] / base["decode_tok_s"] if base and base["decode_tok_s"] else None
                r["e2e_speedup"] = r["e2e_tok_s"] / base["e2e_tok_s"] if base and base["e2e_tok_s"] else None
                r["greedy_match"] = None
                if temp == 0 and k > 0 and base:
                    n_bad, firsts = compare(r["outputs"], base["outputs"])
                    r["greedy_match"] = f"{len(prompts) - n_bad}/{len(prompts)}"
                    if n_bad:
                        mismatches += n_bad
                        print(f"MISMATCH: batch {b}, k {k}: {n_bad} of {len(prompts)} greedy sequences differ "
                              f"from plain (first differing token at {firsts})", flush=True)
                print(f"batch {b} k {k} T {temp:g}: decode {r['decode_tok_s']:.1f} tok/s, "
                      f"e2e {r['e2e_tok_s']:.1f} tok/s, {r['generated']} tokens, acceptance "
                      f"{[round(a, 3) for a in r['acceptance']]}", file=sys.stderr, flush=True)
                rows.append(r)
            del engine
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if compile:
                torch._dynamo.reset()  # each engine compiles its own graphs; keep dynamo's cache small

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    n_params = sum(p.numel() for n, p in model.named_parameters() if "mtp_layers" not in n)
    gen_per_seq = [r["generated"] / len(prompts) for r in rows if r["k"] == 0]
    print(f"\nDevice: {name}; torch {torch.__version__}; date {datetime.date.today()}; commit {commit}; "
          f"model {'tiny random (--tiny)' if args.tiny else model_path} ({n_params / 1e6:.1f}M main params, "
          f"{n_mtp} MTP layers, {dtype_name}); compile {'on' if compile else 'off'}; "
          f"kv buckets {'on' if kv_buckets else 'off (one graph per sampling mode, attention over the capacity)'}")
    print(f"{len(prompts)} prompts from {'generated world-math problems' if args.tiny else prompts_file} "
          f"(prompt length {min(lens)}-{max(lens)}, mean {sum(lens) / len(lens):.0f}); up to {new_tokens} new "
          f"tokens, {'no stop token' if not stop_ids else 'stop at eos'} (plain runs: mean "
          f"{sum(gen_per_seq) / max(len(gen_per_seq), 1):.0f} tokens per sequence); seed = prompt index")
    print("tok/s = decode tokens/s (prefill excluded, as bench_decode.py); e2e = generated tokens / wall time "
          "of Engine.generate (prefill included); speed-up vs plain at the same batch and temperature\n")
    print("| batch | temp | k | decode tok/s | speed-up | e2e tok/s | e2e speed-up | prefill ms/prompt "
          "| acceptance per depth | mean accepted length | greedy = plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    fx = lambda v: f"{v:.2f}x" if v is not None else "n/a"  # noqa: E731
    for r in rows:
        acc = " / ".join(f"{a:.3f}" for a in r["acceptance"]) if r["k"] else "-"
        mal = f"{r['mean_accepted_length']:.2f}" if r["k"] else "-"
        print(f"| {r['batch']} | {r['temperature']:g} | {r['k'] or 'plain'} | {r['decode_tok_s']:.1f} | "
              f"{fx(r['speedup'])} | {r['e2e_tok_s']:.1f} | {fx(r['e2e_speedup'])} | "
              f"{1e3 * r['prefill_seconds'] / len(prompts):.1f} | {acc} | {mal} | "
              f"{r['greedy_match'] or '-'} |")
    wall = time.perf_counter() - t_bench
    if build is not None:
        how = "reused" if build["cached"] else (f"pre-trained here: {build['tokens']} tokens, "
                                               f"{build['train_seconds']:.0f} s of training")
        print(f"\nModel: {how}; build {build['build_seconds']:.0f} s, measurement "
              f"{wall - build['build_seconds']:.0f} s, whole bench {wall:.0f} s of wall time")
    checked = sum(1 for r in rows if r["greedy_match"] is not None)
    if mismatches:
        print(f"\nMISMATCH: {mismatches} greedy speculative sequences differ from plain greedy "
              f"({checked} comparisons)")
    else:
        print(f"\nGreedy speculative outputs identical to plain greedy outputs ({checked} comparisons, "
              f"{checked * len(prompts)} sequences)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{k: v for k, v in r.items() if k != "outputs"} for r in rows], "build": build,
                       "wall_seconds": wall, "device": name, "model": str(model_path)}, f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
