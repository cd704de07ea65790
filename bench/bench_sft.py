"""SFT step throughput and MFU on one GPU, packed, with the MTP loss — next to pre-training's packed documents in the same run.

Both variants run the real step (:class:`openmimo.train.loop.Trainer` with the objective SFT and pre-training share:
main loss + weight x MTP loss, FSDP-free, float32 master weights under bf16 autocast as `openmimo sft` runs, the whole
forward compiled) on the same packed rows: samples of random length (``--min-len``..``--max-len`` tokens, the first
``--prompt-frac`` of each a prompt) laid into rows of ``--seq`` tokens by :func:`openmimo.train.sft_data.pack`, with
per-sample position ids (FlexAttention document mask).  SFT's labels are the assistant tokens only; pre-training's
are every token of the same documents.

    python bench/bench_sft.py --shape small         # the small preset's model (configs/small.yaml)
    python bench/bench_sft.py --shape 1.3b          # bench_pretrain.py's MiMo-shaped 1.3B
    python bench/bench_sft.py --shape tiny          # CPU dry run

MFU = row tokens/s (padding included, as the GPU computes it) x training FLOPs per token / peak (989 TFLOP/s dense
bf16, H100/H200), FLOPs per token as in bench_pretrain.py (:func:`openmimo.train.pretrain.flops_per_token`); the fill
(sample tokens / row tokens) is printed with it, so useful-token MFU = MFU x fill.
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import IGNORE_INDEX, build_model
from openmimo.train.pretrain import PretrainObjective, flops_per_token
from openmimo.train.sft_data import pack, row_tensors


def shape(name: str) -> MiMoConfig:
    if name == "tiny":
        return MiMoConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          tie_word_embeddings=False, num_nextn_predict_layers=1)
    if name == "small":  # configs/small.yaml's model, with a 32k vocabulary
        return MiMoConfig(vocab_size=32768, hidden_size=1536, intermediate_size=4096, num_hidden_layers=20,
                          num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=8192,
                          tie_word_embeddings=False, attention_bias=True, num_nextn_predict_layers=1)
    return MiMoConfig(vocab_size=151680, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=8192,
                      tie_word_embeddings=False, num_nextn_predict_layers=1)


def rows(cfg, n_rows: int, seq: int, lo: int, hi: int, prompt_frac: float, seed: int = 0):
    """Packed SFT batches of ``n_rows`` rows and the same documents with every token a target (pre-training)."""
    rng = random.Random(seed)
    samples = []
    while sum(len(s[0]) for s in samples) < n_rows * seq * 1.2:
        n = rng.randint(lo, hi)
        p = int(n * prompt_frac)
        samples.append(([rng.randrange(cfg.vocab_size) for _ in range(n)], [0] * p + [1] * (n - p)))
    packed = pack([len(s[0]) for s in samples], range(len(samples)), seq)[:n_rows]
    sft = row_tensors(samples, packed, seq, pad_id=0)
    real = torch.zeros_like(sft["input_ids"], dtype=torch.bool)
    for b, r in enumerate(packed):
        real[b, :sum(len(samples[i][0]) for i in r)] = True
    pre = dict(sft)
    pre["labels"] = torch.where(real, sft["input_ids"], IGNORE_INDEX)  # every token of the documents
    fill = sum(len(samples[i][0]) for r in packed for i in r) / (n_rows * seq)
    return sft, pre, fill


def bench(cfg, batches, dev, warmup: int, iters: int, compile: str, micro: int, fused: bool) -> float:
    import time

    from openmimo.model.parallel import apply_compile
    from openmimo.runtime import Runtime
    from openmimo.train.loop import Trainer, build_optimizer

    model = build_model(cfg, device=dev, dtype=torch.float32, seed=0)
    model.fused_loss = fused
    if compile == "whole":
        model.compile()
    elif compile == "blocks":
        apply_compile(model)
    rt = Runtime(device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    trainer = Trainer(model, build_optimizer(model, 1e-5, (0.9, 0.95), 1e-8, 0.0, dev), rt, grad_clip=1.0)
    obj = PretrainObjective(cfg.num_nextn_predict_layers, 0.1)
    B = batches["input_ids"].shape[0]
    mbs = [{k: v[i:i + micro].to(dev) for k, v in batches.items()} for i in range(0, B, micro)]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        trainer.step(mbs, obj, 1e-5)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        trainer.step(mbs, obj, 1e-5)
    sync()
    dt = (time.perf_counter() - t0) / iters
    del model, trainer
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="small", choices=("tiny", "small", "1.3b"))
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=4, help="packed rows per optimizer step")
    ap.add_argument("--micro", type=int, default=2, help="rows per forward")
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=3072)
    ap.add_argument("--prompt-frac", type=float, default=0.2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", default="whole", choices=("blocks", "whole", "none"),
                    help="train.compile_scope: whole (what `openmimo sft` compiles on one device) or blocks")
    ap.add_argument("--fused", default="both", choices=("both", "on", "off"),
                    help="the head's loss in row chunks (train.fused_loss), without it, or both")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and args.shape != "tiny" else "cpu")
    seq = 256 if args.shape == "tiny" else args.seq
    lo, hi = (16, 200) if args.shape == "tiny" else (args.min_len, args.max_len)
    cfg = shape(args.shape)
    sft, pre, fill = rows(cfg, args.rows, seq, lo, hi, args.prompt_frac)
    peak = 989e12 if dev.type == "cuda" else 0.0
    out = []
    compile = args.compile if dev.type == "cuda" else "none"
    fused_opts = {"both": (False, True), "on": (True,), "off": (False,)}[args.fused]
    variants = [(f"{name}{', fused head+CE' if fused else ''}", batch, fused) for fused in fused_opts
                for name, batch in (("pre-training, packed documents", pre), ("SFT, packed samples, assistant-token loss", sft))]
    for name, batch, fused in variants:
        dt = bench(cfg, batch, dev, args.warmup, args.iters, compile, args.micro, fused)
        tps = args.rows * seq / dt
        rec = {"variant": name, "step_s": dt, "tok_per_s": tps, "mfu": tps * flops_per_token(cfg, seq) / peak if peak else None,
               "targets": int((batch["labels"] != IGNORE_INDEX).sum())}
        if dev.type == "cuda":
            rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.empty_cache()
        out.append(rec)
        print(rec, flush=True)
    dev_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"\n{args.shape}: {cfg.num_params(include_mtp=True) / 1e9:.2f}B parameters, 1 MTP layer, {args.rows} rows x {seq} "
          f"tokens (fill {100 * fill:.1f}%), micro-batch {args.micro}, {dev_name}, torch {torch.__version__}\n")
    print(f"compile: {compile}\n")
    print("| variant | tokens/s | MFU | vs pre-training |\n|---|---|---|---|")
    for r in out:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        print(f"| {r['variant']} | {r['tok_per_s']:,.0f} | {mfu} | {r['tok_per_s'] / out[0]['tok_per_s']:.2f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"shape": args.shape, "fill": fill, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
