"""Decode throughput of the engine vs transformers' generate, against the HBM roofline.

    python bench/bench_decode.py                 # MiMo-7B shape, random bf16 weights, one CUDA GPU
    python bench/bench_decode.py --tiny          # dry run on CPU with a tiny shape (float32)

Measures: copy bandwidth (read + write bytes of a large device copy / time); the roofline in decode
tokens/s per sequence = bandwidth / bytes of the main model's weights (embedding and head included,
MTP layers excluded: the issue's definition); the engine's decode tokens/s (greedy, no stop token,
prefill excluded, one host sync per step included) at each batch size; transformers' ``generate``
with the dynamic and the static cache (decode time = time(N new tokens) - time(1 new token)).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import subprocess
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes per second moved by dst.copy_(src) (read + write), best of 5."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    del src, dst
    return 2 * nbytes / best


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


def bench_engine(model, batch: int, prompt_len: int, new_tokens: int, compile: bool, overlap: bool | None = None) -> float:
    from openmimo.infer.engine import Engine, SamplingParams

    engine = Engine(model, max_slots=batch, max_len=prompt_len + new_tokens + 8, compile=compile, overlap=overlap)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).tolist()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    engine.generate(prompts, params)  # warm-up: compiles every attention-length bucket this run uses
    for k in ("generated_tokens", "decode_seconds"):
        engine.counters[k] = 0
    engine.generate(prompts, params)
    tokens = engine.counters["generated_tokens"] - batch  # the first token of each comes from the prefill
    return tokens / engine.counters["decode_seconds"]


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
    return batch * (new_tokens - 1) / max(tn - t1, 1e-9)


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
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if args.tiny:
        args.new_tokens = min(args.new_tokens, 32)
    cfg = mimo_config(args.tiny)
    from openmimo.model.mimo import build_model

    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "mtp_layers" not in n)
    bw = copy_bandwidth(device, min(2**30, 4 * weight_bytes))
    roof = bw / weight_bytes
    if args.profile:
        print(f"copy bandwidth {bw / 1e9:.0f} GB/s; roofline {roof:.1f} tok/s ({1e3 / roof:.3f} ms/step)")
        for b in args.batch:
            profile_engine(model, b, args.prompt_len, args.profile, args.trace_dir)
        return 0
    rows = {}
    for b in args.batch:
        rows[b] = {"engine": bench_engine(model, b, args.prompt_len, args.new_tokens,
                                          compile=device.type == "cuda" and not args.no_compile,
                                          overlap=False if args.no_overlap else None)}
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.no_hf:
        hf = hf_model(cfg, device, dtype)
        for b in args.batch:
            for cache in ("dynamic", "static"):
                try:
                    rows[b][cache] = bench_hf(hf, b, args.prompt_len, args.new_tokens, cache, device)
                except Exception as e:  # report, do not hide, a transformers failure
                    rows[b][cache] = f"error: {type(e).__name__}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\nDevice: {name}; torch {torch.__version__}; date {datetime.date.today()}; commit {commit}; "
          f"shape {'tiny' if args.tiny else 'MiMo-7B'} ({weight_bytes / 1e9:.2f} GB main weights, {dtype}); "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy")
    print(f"Copy bandwidth {bw / 1e9:.0f} GB/s -> roofline {roof:.1f} tokens/s per sequence\n")
    print("| batch | engine tok/s | % of roofline x batch | HF dynamic tok/s | HF static tok/s | engine / best HF |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    for b, r in rows.items():
        hf_vals = [v for k, v in r.items() if k != "engine" and isinstance(v, float)]
        ratio = f"{r['engine'] / max(hf_vals):.2f}x" if hf_vals else "n/a"
        print(f"| {b} | {r['engine']:.1f} | {100 * r['engine'] / (roof * b):.0f}% | {fmt(r.get('dynamic', 'n/a'))} | "
              f"{fmt(r.get('static', 'n/a'))} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
