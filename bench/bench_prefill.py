"""Prefill cost of the engine: one prompt per forward vs batched; eager, compiled (``compile_prefill``) or
window by window through one CUDA graph (``prefill_graph``).

    python bench/bench_prefill.py [--preset small|7b] [--prompts 16] [--len 14] [--tiny] [--no-compile]
                                  [--modes eager windows graph compiled]

Modes: ``eager`` (one forward per admission), ``windows`` (the chunk prefill's fixed windows, eager: the
path's own cost without CUDA graphs), ``graph`` (the same windows as one CUDA graph: the GPU default for
short admissions), ``compiled`` (``compile_prefill``: a symbolic-shape compile, minutes on a GPU).

A random model of the preset's shape (bf16 on CUDA, fp32 on CPU); ``--prompts`` prompts of ``--len`` tokens
(lengths vary by +-2 so the compiled prefill sees several); each generates one token, so the engine runs only
prefills. Reported per mode: milliseconds per prompt (median of 5 timed rounds after a warm-up round) and the
warm-up time (the compile, for the compiled prefill).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_config(preset: str):
    """The model section of ``configs/<preset>.yaml``; the small preset with the world tokenizer's 1805 tokens,
    the vocabulary of the checkpoints measured in docs/benchmarks.md."""
    from pathlib import Path

    from openmimo.config import load
    from openmimo.train.config import PretrainConfig

    name = {"tiny": "tiny", "small": "small", "7b": "mimo-7b"}[preset]
    cfg = load(PretrainConfig, Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml", []).model
    if preset == "small":
        cfg.vocab_size = 1805
    return cfg


def run_mode(engine, prompts, batched: bool, rounds: int = 5) -> tuple[float, float]:
    """(warm-up seconds, median ms per prompt)."""
    from openmimo.infer.engine import SamplingParams

    one = SamplingParams(max_new_tokens=1, temperature=0)

    def once():
        sync(engine.device)
        t = time.perf_counter()
        if batched:
            engine.generate(prompts, one)
        else:
            for p in prompts:
                engine.generate([p], one)
        sync(engine.device)
        return time.perf_counter() - t

    warm = once()
    times = [once() for _ in range(rounds)]
    return warm, 1e3 * statistics.median(times) / len(prompts)


def main(argv=None) -> int:
    from openmimo.infer.engine import Engine
    from openmimo.model.mimo import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["tiny", "small", "7b"], default="small")
    ap.add_argument("--tiny", action="store_true", help="same as --preset tiny (CPU dry run)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--len", type=int, default=14)
    ap.add_argument("--no-compile", action="store_true", help="eager modes only")
    ap.add_argument("--modes", nargs="+", choices=["eager", "windows", "graph", "compiled"],
                    help="default: eager windows graph (eager windows with --no-compile)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = model_config("tiny" if args.tiny else args.preset)
    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, cfg.vocab_size, (args.len + (i % 5) - 2,), generator=g).tolist()
               for i in range(args.prompts)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name} · torch {torch.__version__} · preset {'tiny' if args.tiny else args.preset} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {dtype}) · {args.prompts} prompts "
          f"of {min(map(len, prompts))}-{max(map(len, prompts))} tokens · one new token each")
    print("\n| prefill | prompts per admission | ms per prompt | warm-up s |\n|---|---|---|---|")
    kinds = {"eager": dict(compile=False, prefill_graph=False),
             "windows": dict(compile=False, prefill_graph=True),
             "graph": dict(compile=True, prefill_graph=True),
             "compiled": dict(compile=False, prefill_graph=False, compile_prefill=True)}
    modes = args.modes or (["eager", "windows"] + ([] if args.no_compile else ["graph"]))
    if args.no_compile:
        modes = [m for m in modes if m in ("eager", "windows")]
    for label in modes:
        engine = Engine(model, max_slots=args.prompts, max_len=args.len + 8, **kinds[label])
        for batched in (False, True):
            warm, ms = run_mode(engine, prompts, batched)
            print(f"| {label} | {args.prompts if batched else 1} | {ms:.2f} | {warm:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
