"""Decode throughput of the engine vs transformers' generate, against the physical floor of a decode step.

    python bench/bench_decode.py                 # MiMo-7B shape, random bf16 weights, one CUDA GPU
    python bench/bench_decode.py --tiny          # dry run on CPU with a tiny shape (float32)
    python bench/bench_decode.py --json out.json # also write the figures as JSON (after each variant)

Every side is timed the way a user would time it, by wall clock around ``generate`` with the device
synchronised: decode tokens/s = batch x (N - 1) / (time(N new tokens) - time(1 new token)), which leaves out
the prefill and the first token (greedy, no stop token).  That holds for the engine and for transformers'
``generate`` with the dynamic and the static cache alike.

The floor: a decode step must read every weight it uses once — the main model's weights *without* the
embedding table (a step reads one row of it; the output head is counted, the MTP layers are not) — and each
sequence's KV cache up to its position.  The floor's time for the N - 1 timed steps is the sum over the steps of
(weight bytes + batch x KV bytes per position x context length) / bandwidth, where the bandwidth is that of a
device-to-device copy of ``--copy-gib`` GiB (read + write bytes), timed with CUDA events (median of 10).
"% of floor" = measured tokens/s / the floor's tokens/s.  Figures print as each variant finishes.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import subprocess
import time
from pathlib import Path

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes per second moved by dst.copy_(src) (read + write): CUDA events, median of 10 after 2 warm-ups."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).uniform_()
    dst = torch.empty_like(src)
    times = []
    for i in range(12):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t = time.perf_counter()
            dst.copy_(src)
            dt = time.perf_counter() - t
        if i >= 2:
            times.append(dt)
    del src, dst
    return 2 * (nbytes // 2) * 2 / sorted(times)[len(times) // 2]


def floor_bytes(model) -> tuple[int, int]:
    """(weight bytes a decode step reads, KV-cache bytes per sequence and position): the main model's weights
    without the embedding table (plus it once if the head is tied to it), MTP layers excluded."""
    cfg = model.config
    emb = model.model.embed_tokens.weight
    w = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
            if "mtp_layers" not in n and p is not emb)
    if cfg.tie_word_embeddings:
        w += emb.numel() * emb.element_size()
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_size * emb.element_size()
    return w, kv


def floor_tokens_per_second(bw: float, weight_bytes: int, kv_bytes: int, batch: int, prompt_len: int,
                            new_tokens: int) -> float:
    """The floor's decode tokens/s over the timed steps (contexts prompt_len + 1 .. prompt_len + new_tokens - 1)."""
    steps = range(1, new_tokens)
    seconds = sum(weight_bytes + batch * kv_bytes * (prompt_len + t) for t in steps) / bw
    return batch * len(steps) / seconds


def mimo_config(tiny: bool):
    from openmimo.model.config import MiMoConfig

    if tiny:
        return MiMoConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          num_nextn_predict_layers=1, tie_word_embeddings=False)
    return MiMoConfig(vocab_size=151680, hidden_size=4096, intermediate_size=11008, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                      rope_theta=640000.0, num_nextn_predict_layers=1, tie_word_embeddings=False,
                      torch_dtype="bfloat16")


def bench_engine(model, batch: int, prompt_len: int, new_tokens: int, compile: bool, overlap: bool | None = None,
                 kv_buckets: bool = True, scope: str = "step") -> tuple[float, float]:
    """Engine decode tokens/s by wall clock: (time(N new tokens) - time(1 new token)), like ``bench_hf``; and the
    warm-up's wall seconds (building the compiled variants)."""
    from openmimo.infer.engine import Engine, SamplingParams

    # the prefill is eager (no window graphs to compile): the timing subtracts it
    engine = Engine(model, max_slots=batch, max_len=prompt_len + new_tokens + 8, compile=compile, overlap=overlap,
                    kv_buckets=kv_buckets, prefill_graph=False, compile_on_request=False, compile_scope=scope)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).tolist()
    device = next(model.parameters()).device
    t_warm = time.perf_counter()
    engine.warmup(keys=[k for k in engine.compiled_variants() if k[0] != "decode" or k[1] == "greedy"])
    sync(device)
    t_warm = time.perf_counter() - t_warm

    def timed(n):
        sync(device)
        t = time.perf_counter()
        engine.generate(prompts, SamplingParams(max_new_tokens=n, temperature=0))
        sync(device)
        return time.perf_counter() - t

    timed(new_tokens)  # warm-up: Triton kernels, allocator
    t1, tn = timed(1), timed(new_tokens)
    assert engine.variants.eager_calls == 0, "a compiled variant was not built by the warm-up"
    return batch * (new_tokens - 1) / max(tn - t1, 1e-9), t_warm


def profile_engine(model, batch: int, prompt_len: int, steps: int, trace_dir: str | None = None) -> dict:
    """Where one decode step's time goes: wall time per step (host included), GPU kernel time per step
    by kernel, and the idle gaps between kernels (torch.profiler, CUDA only)."""
    from torch.profiler import ProfilerActivity, profile

    from openmimo.infer.engine import Engine, SamplingParams

    # One attention-length bucket (256) for the warm-up and the profiled steps: one compile.
    engine = Engine(model, max_slots=batch, max_len=254, compile=next(model.parameters()).is_cuda)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).tolist()
    engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0))  # compile
    params = SamplingParams(max_new_tokens=254 - prompt_len, temperature=0)
    for p in prompts:
        engine.add_request(p, params)
    for _ in range(4):
        engine.step()  # prefill + first decode steps
    dev = next(model.parameters()).device
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    sync(dev)
    wall = (time.perf_counter() - t) / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        sync(dev)
    kern = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                  key=lambda e: e.time_range.start)
    per = {}
    busy, end, gaps = 0.0, None, []
    for e in kern:
        s, f = e.time_range.start, e.time_range.end
        if end is not None and s > end:
            gaps.append(s - end)
        busy += max(0.0, f - max(s, end if end is not None else s))
        end = f if end is None else max(end, f)
        d = per.setdefault(e.name, [0, 0.0])
        d[0] += 1
        d[1] += f - s
    span = (kern[-1].time_range.end - kern[0].time_range.start) if kern else 0.0
    if trace_dir:
        prof.export_chrome_trace(f"{trace_dir}/trace_b{batch}.json")
    engine._drain()  # the same steps without overlapping host and GPU work
    engine.overlap = False
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    sync(dev)
    wall_sync = (time.perf_counter() - t) / steps
    engine.overlap = True
    big = sorted(gaps, reverse=True)
    print(f"\n### profile batch {batch}: wall {1e3 * wall:.3f} ms/step ({1e3 * wall_sync:.3f} without overlap); kernels {len(kern) / steps:.0f}/step, "
          f"GPU busy {busy / steps / 1e3:.3f} ms/step, span {span / steps / 1e3:.3f} ms/step, "
          f"gaps {sum(gaps) / steps / 1e3:.3f} ms/step ({sum(x > 20 for x in gaps) / steps:.1f}/step over 20 us; "
          f"largest {', '.join(f'{x:.0f}' for x in big[:4])} us)")
    print("| kernel | per step | mean us | us per step |\n|---|---|---|---|")
    for name, (n, tot) in sorted(per.items(), key=lambda kv: -kv[1][1])[:28]:
        print(f"| {name[:110]} | {n / steps:.1f} | {tot / n:.1f} | {tot / steps:.1f} |")
    return {"wall_ms": 1e3 * wall, "wall_sync_ms": 1e3 * wall_sync, "busy_ms": busy / steps / 1e3}


def hf_model(cfg, device, dtype):
    import transformers

    hf_cfg = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = transformers.Qwen2ForCausalLM(hf_cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


@torch.no_grad()
def bench_hf(model, batch: int, prompt_len: int, new_tokens: int, cache: str | None, device) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device=device)
    am = torch.ones_like(ids)

    def timed(n):
        sync(device)
        t = time.perf_counter()
        model.generate(ids, attention_mask=am, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       cache_implementation=cache, pad_token_id=0)
        sync(device)
        return time.perf_counter() - t

    timed(new_tokens)  # warm-up (and compilation for the static cache)
    t1, tn = timed(1), timed(new_tokens)
    return batch * (new_tokens - 1) / max(tn - t1, 1e-9), t_warm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny float32 model on CPU (a dry run of the script)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers")
    ap.add_argument("--no-compile", action="store_true", help="engine without torch.compile")
    ap.add_argument("--no-overlap", action="store_true", help="engine without host/GPU overlap")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="profile STEPS decode steps per batch size (kernel table, gaps) instead of the benchmark")
    ap.add_argument("--trace-dir", default=None, help="with --profile: write Chrome traces here")
    ap.add_argument("--copy-gib", type=float, default=4.0, help="size of the copy that measures the bandwidth")
    ap.add_argument("--compile-scope", nargs="+", choices=["step", "block"], default=["step"],
                    help="engine rows to measure by what torch.compile compiles: the whole decode step ('engine'), "
                         "or one block per shape with the step captured as one CUDA graph ('engine_block')")
    ap.add_argument("--kv-buckets", choices=["on", "off"], default="off",
                    help="engine decode graphs per power-of-two attention length (on) or one over the capacity "
                         "(off, what `openmimo serve` runs)")
    ap.add_argument("--hf-caches", nargs="+", default=["static", "dynamic"], help="transformers caches to measure")
    ap.add_argument("--json", default=None, help="write the figures here (rewritten after each variant)")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if args.tiny:
        args.new_tokens = min(args.new_tokens, 32)
    cfg = mimo_config(args.tiny)
    from openmimo.model.mimo import build_model

    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    weight_bytes, kv_bytes = floor_bytes(model)
    bw = copy_bandwidth(device, int(args.copy_gib * 2**30) if device.type == "cuda" else 2**26)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"device": name, "torch": torch.__version__, "date": str(datetime.date.today()), "commit": commit,
              "shape": "tiny" if args.tiny else "MiMo-7B", "dtype": str(dtype), "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens, "copy_bandwidth_GBps": bw / 1e9, "floor_weight_bytes": weight_bytes,
              "kv_bytes_per_position": kv_bytes, "rows": {}}
    print(f"Device: {name}; torch {torch.__version__}; commit {commit}; copy bandwidth {bw / 1e9:.0f} GB/s (CUDA events, "
          f"{args.copy_gib} GiB); weights read per step {weight_bytes / 1e9:.2f} GB (embedding table excluded); "
          f"KV {kv_bytes / 1e3:.0f} kB per sequence and position", flush=True)
    if args.profile:
        roof = bw / weight_bytes
        print(f"weights-only floor {roof:.1f} tok/s ({1e3 / roof:.3f} ms/step)")
        for b in args.batch:
            profile_engine(model, b, args.prompt_len, args.profile, args.trace_dir)
        return 0

    def record(b, side, value):
        row = report["rows"].setdefault(str(b), {"floor": floor_tokens_per_second(
            bw, weight_bytes, kv_bytes, b, args.prompt_len, args.new_tokens)})
        row[side] = value
        pct = f" ({100 * value / row['floor']:.0f}% of the floor, {row['floor']:.0f} tok/s)" if isinstance(value, float) else ""
        print(f"batch {b} {side}: {value if isinstance(value, str) else f'{value:.1f} tok/s'}{pct}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    for scope, b in [(c, b) for c in args.compile_scope for b in args.batch]:
        side = "engine" if scope == "step" else f"engine_{scope}"
        try:
            tok_s, warm = bench_engine(model, b, args.prompt_len, args.new_tokens,
                                       compile=device.type == "cuda" and not args.no_compile,
                                       overlap=False if args.no_overlap else None,
                                       kv_buckets=args.kv_buckets == "on", scope=scope)
            record(b, side, tok_s)
            record(b, f"{side}_warmup_s", f"{warm:.1f} s")
        except Exception as e:  # report it and go on with the other batch sizes
            record(b, side, f"error: {type(e).__name__}: {str(e)[:200]}")
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.no_hf:
        hf = hf_model(cfg, device, dtype)
        for cache in args.hf_caches:
            for b in args.batch:
                try:
                    record(b, f"hf_{cache}", bench_hf(hf, b, args.prompt_len, args.new_tokens, cache, device))
                except Exception as e:  # report, do not hide, a transformers failure
                    record(b, f"hf_{cache}", f"error: {type(e).__name__}")
    print(f"\nDevice: {name}; torch {torch.__version__}; date {report['date']}; commit {commit}; "
          f"shape {report['shape']} ({dtype}); prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy; "
          f"copy bandwidth {bw / 1e9:.0f} GB/s\n")
    print("| batch | floor tok/s | engine tok/s | % of floor | engine, block scope tok/s | % of floor | "
          "HF dynamic tok/s | HF static tok/s | engine / best HF |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    for b, r in report["rows"].items():
        hf_vals = [v for k, v in r.items() if k.startswith("hf_") and isinstance(v, float)]
        eng = r.get("engine")
        ok = isinstance(eng, float)
        ratio = f"{eng / max(hf_vals):.2f}x" if hf_vals and ok else "n/a"
        pct = f"{100 * eng / r['floor']:.0f}%" if ok else "n/a"
        blk = r.get("engine_block", "n/a")
        bpct = f"{100 * blk / r['floor']:.0f}%" if isinstance(blk, float) else "n/a"
        print(f"| {b} | {r['floor']:.1f} | {fmt(eng)} | {pct} | {fmt(blk)} | {bpct} | "
              f"{fmt(r.get('hf_dynamic', 'n/a'))} | {fmt(r.get('hf_static', 'n/a'))} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
