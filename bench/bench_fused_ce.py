"""The output head + cross-entropy alone: chunked (model/fused_ce.py) against the unfused head, forward + backward.

    python bench/bench_fused_ce.py                  # on a GPU: 1.3B shape (8192 rows x 2048, vocab 151680, bf16)
    python bench/bench_fused_ce.py --tiny           # CPU dry run

Per variant (eager and compiled): ms per forward + backward (CUDA events, median of ``--iters``), peak memory above
the inputs, and the loss and gradients against the unfused eager head (the oracle) — max abs difference of the loss,
max relative difference of each gradient. Printed as each variant finishes, written as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from openmimo.model.fused_ce import IGNORE_INDEX, default_chunk_rows, linear_cross_entropy


def unfused(h, w, t):
    logits = h @ w.t()
    return F.cross_entropy(logits.float(), t, ignore_index=IGNORE_INDEX, reduction="sum")


def fused(h, w, t, rows=None):
    return linear_cross_entropy(h, w, t, rows)[0]


def run(fn, h0, w0, t, dev, iters):
    def once():
        h = h0.detach().requires_grad_()
        w = w0.detach().requires_grad_()
        loss = fn(h, w, t)
        loss.backward()
        return loss.detach(), h.grad, w.grad

    out = once()  # warm-up (compiles)
    times = []
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(iters):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = once()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            out = once()
            times.append(1e3 * (time.perf_counter() - t0))
    peak = (torch.cuda.max_memory_allocated() - base) / 1e9 if dev.type == "cuda" else None
    return statistics.median(times), peak, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=151680)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    n, d, v = (512, 64, 4096) if args.tiny else (args.rows, args.hidden, args.vocab)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    h0 = torch.randn(n, d, device=dev, dtype=dtype, generator=g)
    w0 = 0.02 * torch.randn(v, d, device=dev, dtype=dtype, generator=g)
    t = torch.randint(0, v, (n,), device=dev, generator=g)
    t[::7] = IGNORE_INDEX
    chunk = default_chunk_rows(v)
    variants = [
        ("unfused head + cross-entropy, eager (oracle)", unfused),
        ("unfused, compiled", torch.compile(unfused)),
        (f"fused, {chunk}-row chunks, eager", fused),
        (f"fused, {chunk}-row chunks, compiled", torch.compile(fused)),
        (f"fused, {chunk // 2}-row chunks, compiled", torch.compile(lambda h, w, t: fused(h, w, t, chunk // 2))),
        (f"fused, {chunk * 2}-row chunks, compiled", torch.compile(lambda h, w, t: fused(h, w, t, chunk * 2))),
    ]
    rows, ref = [], None
    print(f"{n} rows x {d}, vocab {v}, {dtype}, {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, "
          f"torch {torch.__version__}", flush=True)
    for name, fn in variants:
        try:
            ms, peak, (loss, gh, gw) = run(fn, h0, w0, t, dev, args.iters)
        except Exception as e:  # one variant failing must not lose the others
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            print(rows[-1], flush=True)
            continue
        if ref is None:
            ref = (loss, gh.float(), gw.float())

        def rel(a, b):
            return float((a.float() - b).abs().max() / b.abs().max().clamp(min=1e-30))

        rows.append({"variant": name, "ms": ms, "peak_gb": peak, "loss": float(loss),
                     "loss_abs_diff": abs(float(loss) - float(ref[0])), "grad_h_rel": rel(gh, ref[1]),
                     "grad_w_rel": rel(gw, ref[2])})
        print(rows[-1], flush=True)
    print("\n| variant | ms fwd+bwd | peak GB | loss diff | grad h rel | grad W rel |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['error']} | | | | |")
            continue
        peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        print(f"| {r['variant']} | {r['ms']:.2f} | {peak} | {r['loss_abs_diff']:.3g} | {r['grad_h_rel']:.2e} | "
              f"{r['grad_w_rel']:.2e} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
