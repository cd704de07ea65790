"""Pre-training step throughput and MFU: openmimo vs transformers' Qwen2ForCausalLM, same shape, same GPU.

Full training step (forward, backward, AdamW) of a MiMo-shaped 1.3B model (hidden 2048, 16 layers,
FFN 5632, 16 heads / 4 KV groups, vocab 151680, untied) at seq 4096, micro-batch 2, bf16.

    python bench/bench_pretrain.py                 # on a GPU: every variant, a markdown table at the end
    python bench/bench_pretrain.py --tiny          # CPU dry run with a tiny shape

MFU = tokens/s x training FLOPs per token / peak (989 TFLOP/s dense bf16 on H100).  FLOPs per
token = 6 x (non-embedding parameters, head included) + 12 x layers x heads x head_dim x seq
(PaLM's accounting); the MTP variant counts its extra layer and head, which is real work.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.train.pretrain import PretrainObjective, flops_per_token


def shape(tiny: bool, mtp: int) -> MiMoConfig:
    if tiny:
        return MiMoConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          tie_word_embeddings=False, num_nextn_predict_layers=mtp)
    return MiMoConfig(vocab_size=151680, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096,
                      tie_word_embeddings=False, num_nextn_predict_layers=mtp)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, dev, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    return (time.perf_counter() - t0) / iters


def bench_hf(cfg, dev, B, T, compiled, warmup, iters, attention="auto"):
    import transformers

    hf_cfg = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False, attn_implementation="sdpa")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = transformers.Qwen2ForCausalLM(hf_cfg).to(dev, dtype)
    model.train()
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=dev.type == "cuda")
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=dev)

    def step():
        with pinned(attention):
            loss = fwd(input_ids=ids, labels=ids).loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dt = time_steps(step, dev, warmup, iters)
    del model, fwd, opt
    return dt


def pinned(backend: str):
    """sdpa_kernel context forcing one SDPA backend (a no-op for "auto")."""
    import contextlib

    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    from openmimo.model.mimo import sdpa_backend

    return sdpa_kernel([sdpa_backend(backend)])


def bench_ours(cfg, dev, B, T, compiled, master_fp32, packed, warmup, iters, attention="auto", fused=False):
    from openmimo.model.mimo import set_attention_backend
    from openmimo.model.parallel import apply_compile
    from openmimo.runtime import Runtime
    from openmimo.train.loop import Trainer, build_optimizer

    set_attention_backend(attention)
    param_dtype = torch.float32 if (master_fp32 or dev.type != "cuda") else torch.bfloat16
    model = build_model(cfg, device=dev, dtype=param_dtype, seed=0)
    model.fused_loss = fused  # each head's loss in row chunks (model/fused_ce.py): no whole logits
    if compiled == "whole":
        model.compile()  # the whole forward, loss included, in one graph
    elif compiled:
        apply_compile(model)
    amp = torch.bfloat16 if (dev.type == "cuda" and master_fp32) else torch.float32
    rt = Runtime(device=dev, dtype=amp)
    opt = build_optimizer(model, 1e-4, (0.9, 0.95), 1e-8, 0.1, dev)
    trainer = Trainer(model, opt, rt, grad_clip=1.0)
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
    # One document per row (what the transformers anchor computes: plain causal attention, SDPA) unless
    # packed: then per-document position ids, 4 documents per row, masked by FlexAttention.
    mb = {"input_ids": ids, "labels": ids}
    if packed:
        mb["position_ids"] = torch.arange(T, device=dev).expand(B, T) % (T // 4)
    obj = PretrainObjective(cfg.num_nextn_predict_layers, 0.3)

    def step():
        trainer.step([mb], obj, 1e-4)

    try:
        dt = time_steps(step, dev, warmup, iters)
    finally:
        set_attention_backend("auto")
    del model, opt, trainer
    return dt


def check_flex(dev) -> float:
    """Oracle check of the CUDA FlexAttention packed path against the boolean-mask SDPA path."""
    cfg = MiMoConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                     num_nextn_predict_layers=1)
    model = build_model(cfg, device=dev, dtype=torch.float32, seed=0)
    ids = torch.randint(0, 1000, (2, 512), device=dev)
    pos = (torch.arange(512, device=dev) % 100).expand(2, 512).contiguous()
    with torch.no_grad():
        fast = model(ids, position_ids=pos, labels=ids)
        ref = model(ids, attention_mask=torch.ones_like(ids), position_ids=pos, labels=ids)
    return float((fast.logits - ref.logits).norm() / ref.logits.norm())


def attention_probe(dev, B=2, T=4096, H=16, KV=4, D=128) -> dict:
    """Forward+backward ms of causal SDPA per backend, with enable_gqa and with K/V repeated to all heads."""
    import torch.nn.functional as F

    q = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    out = {}
    for backend in ("auto", "flash", "cudnn", "efficient"):
        for gqa in (True, False):
            def step():
                with pinned(backend):
                    if gqa:
                        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    else:
                        y = F.scaled_dot_product_attention(q, k.repeat_interleave(H // KV, 1),
                                                           v.repeat_interleave(H // KV, 1), is_causal=True)
                y.sum().backward()
            name = f"{backend}/{'enable_gqa' if gqa else 'repeat_kv'}"
            try:
                out[name] = round(time_steps(step, dev, 3, 20) * 1e3, 3)
            except Exception as e:  # a backend that cannot run this shape
                out[name] = f"{type(e).__name__}: {str(e)[:80]}"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--only", default="", help="';'-separated variant names (exact), in the order to run")
    ap.add_argument("--out", default="")
    ap.add_argument("--no-probes", action="store_true", help="skip the FlexAttention oracle check and attention probe")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    B, T = (2, 64) if args.tiny else (args.batch, args.seq)
    peak = 989e12 if dev.type == "cuda" else 0.0
    variants = [
        ("transformers eager (bf16 params)", "hf", dict(compiled=False), 0),
        ("transformers compiled (bf16 params)", "hf", dict(compiled=True), 0),
        ("openmimo eager, no MTP (bf16 params)", "ours", dict(compiled=False, master_fp32=False, packed=False), 0),
        ("openmimo compiled, no MTP (bf16 params)", "ours", dict(compiled=True, master_fp32=False, packed=False), 0),
        ("openmimo compiled, 1 MTP layer (bf16 params)", "ours", dict(compiled=True, master_fp32=False, packed=False), 1),
        ("openmimo compiled, 1 MTP, fp32 master + bf16 autocast", "ours", dict(compiled=True, master_fp32=True, packed=False), 1),
        ("openmimo whole-model compile, no MTP (bf16 params)", "ours", dict(compiled="whole", master_fp32=False, packed=False), 0),
        ("openmimo whole-model compile, 1 MTP layer (bf16 params)", "ours", dict(compiled="whole", master_fp32=False, packed=False), 1),
        ("openmimo compiled, 1 MTP, packed docs (FlexAttention)", "ours", dict(compiled=True, master_fp32=False, packed=True), 1),
        ("openmimo whole-model compile, 1 MTP layer, fused head+CE (bf16 params)", "ours",
         dict(compiled="whole", master_fp32=False, packed=False, fused=True), 1),
        ("openmimo whole-model compile, no MTP, fused head+CE (bf16 params)", "ours",
         dict(compiled="whole", master_fp32=False, packed=False, fused=True), 0),
        ("openmimo compiled, 1 MTP, packed docs (FlexAttention), fused head+CE", "ours",
         dict(compiled=True, master_fp32=False, packed=True, fused=True), 1),
        ("openmimo whole-model compile, 1 MTP, packed docs (FlexAttention), fused head+CE", "ours",
         dict(compiled="whole", master_fp32=False, packed=True, fused=True), 1),
        ("transformers compiled, cuDNN attention (bf16 params)", "hf", dict(compiled=True, attention="cudnn"), 0),
        ("openmimo whole-model compile, no MTP, cuDNN attention (bf16 params)", "ours",
         dict(compiled="whole", master_fp32=False, packed=False, attention="cudnn"), 0),
        ("openmimo whole-model compile, 1 MTP layer, cuDNN attention (bf16 params)", "ours",
         dict(compiled="whole", master_fp32=False, packed=False, attention="cudnn"), 1),
    ]
    if dev.type == "cuda" and not args.no_probes:
        print(f"flex packed path vs boolean-mask oracle: rel err {check_flex(dev):.2e}", flush=True)
        print(f"attention fwd+bwd ms (B=2, T=4096, 16/4 heads): {attention_probe(dev)}", flush=True)
    only = [s.strip() for s in args.only.split(";") if s.strip()]
    if only:
        known = {v[0]: v for v in variants}
        missing = [o for o in only if o not in known]
        if missing:
            raise SystemExit(f"--only: unknown variant {missing[0]!r}; known: {list(known)}")
        variants = [known[o] for o in only]
    rows = []
    for name, kind, kw, mtp in variants:
        cfg = shape(args.tiny, mtp)
        try:
            if kind == "hf":
                dt = bench_hf(cfg, dev, B, T, kw["compiled"], args.warmup, args.iters, kw.get("attention", "auto"))
            else:
                dt = bench_ours(cfg, dev, B, T, warmup=args.warmup, iters=args.iters, **kw)
        except Exception as e:  # one variant failing (e.g. OOM) must not lose the table
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(rows[-1], flush=True)
            continue
        finally:
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        tps = B * T / dt
        mfu = tps * flops_per_token(cfg, T) / peak if peak else None
        rows.append({"variant": name, "step_s": dt, "tok_per_s": tps, "mfu": mfu,
                     "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None})
        print({k: v for k, v in rows[-1].items()}, flush=True)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        print(rows[-1], flush=True)
    anchor = next((r for r in rows if r["variant"].startswith("transformers compiled (") and "tok_per_s" in r), None)
    print(f"\ndevice: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"B={B}, T={T}\n")
    print("| variant | tokens/s | MFU | vs compiled transformers | peak mem GB |\n|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['error']} | | | |")
            continue
        rel = f"{r['tok_per_s'] / anchor['tok_per_s']:.2f}x" if anchor else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] else "-"
        print(f"| {r['variant']} | {r['tok_per_s']:,.0f} | {mfu} | {rel} | {mem} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
