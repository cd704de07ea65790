"""`openmimo eval` and `openmimo synth` targets (issues 15, 16): client overhead through our server, and a full table in one command.

    python bench/bench_eval.py overhead --random-small [--limit 500] [--samples 4] [--max-tokens 512]
    python bench/bench_eval.py synth --random-small [--limit 500] [--samples 4] [--max-tokens 512]
    python bench/bench_eval.py clients --random-small ...   # overhead and synth on one warmed-up engine
    python bench/bench_eval.py table --random-small [--samples 4] [--max-tokens 512]
    python bench/bench_eval.py overhead --tiny --limit 8 --max-tokens 16     # CPU dry run

overhead: the same prompts (MATH-500 chat prompts, k samples each, temperature 0.6 / top-p 0.95) are
generated (1) by ``Engine.generate`` alone, then (2) by ``openmimo eval --endpoint`` against
``openmimo serve``'s app on the same engine (HTTP, the openai client, scoring in the reward pool,
samples written); target: (2) / (1) <= 1.1.  Both on one warmed-up engine; the wall time of (2)
includes waiting for the last scores.

synth: the same engine-alone run, then ``openmimo synth`` (:class:`openmimo.data.synth.Synth`, chat completions
with ``n`` samples, rejection sampling by Math-Verify in the reward pool, records written) on the same MATH-500
problems against ``openmimo serve``'s app on the same engine; target: the engine's raw completion tokens/s within
1.2x of synth's (both counted as generated tokens over wall time).

table: ``openmimo eval --model`` on every math and code task (k samples, chat prompts) in one command;
target: under 10 minutes on one GPU.  The wall time covers the whole command (load, warm-up, generation,
scoring).

``--random-small`` is configs/small.yaml's model shape, randomly initialised, with a tokenizer trained here
on the benchmark texts: its samples run to ``--max-tokens`` (no eos), so the figures measure the harness
and the engine at a fixed length, not a model's accuracy.  ``--model PATH`` uses a real checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def say(msg: str) -> None:
    """Stage progress on stderr, so a run cut by a time limit still shows where it was."""
    print(f"[bench_eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_random(folder: Path, tiny: bool) -> Path:
    import torch
    import yaml

    from openmimo.eval.tasks import iter_texts
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import train_tokenizer

    texts = [t for name in ("math500", "gsm8k", "humaneval", "mbpp") for t in iter_texts(name)][:3000]
    tok = train_tokenizer(texts, vocab_size=512 if tiny else 8192)
    say(f"tokenizer trained: {tok.vocab_size} ids")
    if tiny:
        spec = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=2048, num_nextn_predict_layers=0)
    else:
        spec = yaml.safe_load((ROOT / "configs" / "small.yaml").read_text())["model"]
        spec = {k: v for k, v in spec.items() if k not in ("torch_dtype",)}
        spec["max_position_embeddings"] = 8192
    spec.update(vocab_size=tok.vocab_size, eos_token_id=tok.eos_id)
    model = build_model(MiMoConfig(**spec), seed=0)
    if torch.cuda.is_available():
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder, tokenizer=tok)
    say(f"random model saved: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    return folder


def engine_alone(args, folder: Path) -> dict:
    """Load, warm up and time ``Engine.generate`` alone on the MATH-500 chat prompts (k samples each)."""
    from openmimo import load_model, load_tokenizer
    from openmimo.eval.tasks import get_task
    from openmimo.infer.engine import Engine, SamplingParams

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    model, tok = load_model(folder, dtype=dtype, device=device), load_tokenizer(folder)
    engine = Engine(model, max_slots=args.slots, max_len=args.max_len, compile=False if args.eager else None)
    t0 = time.perf_counter()
    if engine.compiled:
        engine.warmup()
    warm = time.perf_counter() - t0
    say(f"engine ready ({engine.slots} slots, compiled={engine.compiled}, warm-up {warm:.0f} s)")
    task = get_task("math500")
    recs = task.load(limit=args.limit)
    prompts = [tok.encode(tok.apply_chat_template(task.messages(r), add_generation_prompt=True)) for r in recs]
    # the harness's own per-prompt seeds (eval/run.py), so both runs draw the same samples
    seeds = [zlib.crc32(f"math500\t{task.record_id(r, i)}".encode()) & 0x7FFFFFFF for i, r in enumerate(recs)]
    params = [SamplingParams(max_new_tokens=args.max_tokens, temperature=0.6, top_p=0.95, n=args.samples, seed=sd,
                             stop_ids=tuple({tok.eos_id, tok.pad_id})) for sd in seeds]
    # first-call set-up of every prompt shape (kernels, prefill windows), so neither timed run pays it
    engine.generate(prompts, [SamplingParams(max_new_tokens=2, n=args.samples, seed=0)] * len(prompts))
    engine.reset_stats()
    say(f"prompt shapes set up; timing the engine on {len(prompts)} prompts x {args.samples}")
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    t_engine = time.perf_counter() - t0
    say(f"engine alone: {t_engine:.1f} s")
    return {"engine": engine, "tok": tok, "task": task, "recs": recs, "warm": warm, "t_engine": t_engine,
            "gen_tokens": sum(len(c.token_ids) for o in outs for c in o), "device": device}


def overhead(args, folder: Path, base: dict | None = None) -> dict:
    import torch

    from openmimo.eval.backends import EndpointBackend
    from openmimo.eval.run import evaluate, summarise_task
    from openmimo.infer.async_engine import AsyncEngine
    from openmimo.infer.server import create_app, start_in_thread

    base = base or engine_alone(args, folder)
    engine, tok, task, recs = base["engine"], base["tok"], base["task"], base["recs"]
    warm, t_engine, gen_tokens, device = base["warm"], base["t_engine"], base["gen_tokens"], base["device"]
    aengine = AsyncEngine(engine)
    server, url = start_in_thread(create_app(aengine, tok, "bench"))
    try:
        backend = EndpointBackend(url, "bench", temperature=0.6, top_p=0.95, max_tokens=args.max_tokens,
                                  concurrency=max(64, args.slots * 2))
        with tempfile.TemporaryDirectory() as tmp:
            samples = Path(tmp) / "s.samples.jsonl"
            eargs = SimpleNamespace(samples=args.samples, style="chat", seed=0, no_progress=True)
            t0 = time.perf_counter()
            timing = evaluate(backend, {"math500": recs}, eargs, samples)
            t_harness = time.perf_counter() - t0
            from openmimo.eval.run import read_samples

            res = summarise_task(task, recs, read_samples(samples), args.samples)
    finally:
        server.should_exit = True
        aengine.shutdown()
    return {"mode": "overhead", "compiled": engine.compiled, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "problems": len(recs), "samples": args.samples, "max_tokens": args.max_tokens, "slots": engine.slots,
            "warmup_s": round(warm, 1), "engine_s": round(t_engine, 2), "engine_tokens": gen_tokens,
            "harness_s": round(t_harness, 2), "harness_tokens": timing["generated_tokens"],
            "ratio": round(t_harness / t_engine, 3),
            # the two runs sample differently (seeds), so eos ends them at different lengths: per token too
            "ratio_per_token": round((t_harness / max(timing["generated_tokens"], 1)) / (t_engine / max(gen_tokens, 1)), 3),
            "scored": res.get("n"), "target_ratio": 1.1}


def synth(args, folder: Path, base: dict | None = None) -> dict:
    import asyncio

    import torch

    from openmimo.data.synth import Synth, SynthConfig
    from openmimo.infer.async_engine import AsyncEngine
    from openmimo.infer.server import create_app, start_in_thread

    base = base or engine_alone(args, folder)
    engine, tok, recs = base["engine"], base["tok"], base["recs"]
    engine_rate = base["gen_tokens"] / base["t_engine"]
    aengine = AsyncEngine(engine)
    server, url = start_in_thread(create_app(aengine, tok, "bench"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            problems = Path(tmp) / "problems.jsonl"
            problems.write_text("".join(json.dumps({"problem": r["problem"], "answer": r["answer"]}) + "\n" for r in recs))
            cfg = SynthConfig(endpoint=url + "/v1", api_model="bench", problems=str(problems), kind="math",
                              samples=args.samples, keep_per_problem=args.samples, require_reasoning=False,
                              max_tokens=args.max_tokens, concurrency=max(64, engine.slots * 2 // max(args.samples, 1)),
                              output=str(Path(tmp) / "sft.jsonl"))
            cfg.check()
            say(f"timing synth through the server ({cfg.concurrency} requests in flight)")
            counts = asyncio.run(Synth(cfg).run())
    finally:
        server.should_exit = True
        aengine.shutdown()
    synth_rate = counts["completion_tokens_per_s"]
    return {"mode": "synth", "compiled": engine.compiled,
            "device": torch.cuda.get_device_name() if base["device"] == "cuda" else "cpu",
            "problems": len(recs), "samples": args.samples, "max_tokens": args.max_tokens, "slots": engine.slots,
            "warmup_s": round(base["warm"], 1), "engine_s": round(base["t_engine"], 2),
            "engine_tokens": base["gen_tokens"], "engine_tokens_per_s": round(engine_rate, 1),
            "synth_s": round(counts["wall_s"], 2), "synth_tokens": counts["completion_tokens"],
            "synth_tokens_per_s": round(synth_rate, 1), "failed_requests": counts["failed_requests"],
            "responses": counts["responses"], "ratio": round(engine_rate / max(synth_rate, 1e-9), 3), "target_ratio": 1.2}


def table(args, folder: Path) -> dict:
    from openmimo.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "table.json"
        cmd = ["eval", "--model", str(folder), "--samples", str(args.samples), "--max-tokens", str(args.max_tokens),
               "--output", str(out), "--no-progress"]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.slots:
            cmd += ["--max-slots", str(args.slots)]
        t0 = time.perf_counter()
        rc = main(cmd)
        wall = time.perf_counter() - t0
        res = json.loads(out.read_text()) if out.exists() else {}
    return {"mode": "table", "rc": rc, "wall_s": round(wall, 1), "generation_s": round(res.get("generation_s", 0), 1),
            "generated_tokens": res.get("generated_tokens"), "tokens_per_s": round(res.get("tokens_per_s", 0)),
            "problems": {k: v.get("n") for k, v in res.get("tasks", {}).items()}, "target_s": 600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["overhead", "synth", "clients", "table"],
                    help="clients: overhead and synth on one engine (one warm-up, one engine-alone run)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model")
    src.add_argument("--random-small", action="store_true")
    src.add_argument("--tiny", action="store_true")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--slots", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--eager", action="store_true", help="overhead, synth: no compiled decode (no warm-up)")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else make_random(Path(tmp) / "model", args.tiny)
        if args.mode != "table" and not args.limit:
            args.limit = 500
        if args.mode == "clients":
            base = engine_alone(args, folder)
            res = {"overhead": overhead(args, folder, base), "synth": synth(args, folder, base)}
        else:
            res = {"overhead": overhead, "synth": synth, "table": table}[args.mode](args, folder)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
