"""`openmimo serve` from process start to ready, cold and with a warm compile cache, then the first request and a
mixed-mode load: does any request wait on compilation?

    python bench/bench_server_startup.py                      # small preset shape, random weights, one GPU
    python bench/bench_server_startup.py --model CKPT --json out.json
    python bench/bench_server_startup.py --tiny               # a dry run on the CPU (tiny shape, no compile)

Without ``--model`` a random-weight checkpoint of ``--preset``'s model shape (default configs/small.yaml) is
written to a temporary folder with a small tokenizer (prompts are sent as token ids, so the vocabulary is the
preset's).  Each phase starts ``python -m openmimo serve`` as a subprocess and measures, by wall clock from the
spawn: the first HTTP answer of /health (the server is up, warming), its first 200 (ready; the warm-up lines of
the server's log are kept), the first request after ready (16 greedy tokens), and ``--requests`` requests at most
``--concurrency`` at a time that mix greedy / sampled / top-p / top-k, n = 1, 2, 4, streamed or not, and prompt
lengths from 3 to 1,500 tokens.  "No request waited on compilation" is checked from /metrics: the dynamo graphs
compiled in the server process and the request-path calls served eagerly (a variant not built) must not change
between ready and the end of the load.  Phases: ``cold`` (an empty compile cache) then ``warm`` (the same cache,
a fresh process).  Results print as each phase ends and go to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

MODES = [dict(temperature=0), dict(temperature=0.8), dict(temperature=1.0, top_p=0.9), dict(temperature=0.7, top_k=20)]
PROMPT_LENS = [3, 17, 40, 100, 250, 600, 1500]


def make_checkpoint(preset: str, folder: Path, tiny: bool) -> dict:
    import torch

    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import train_tokenizer

    model_cfg = yaml.safe_load(Path(preset).read_text())["model"]
    if tiny:
        model_cfg.update(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         torch_dtype="float32")
    texts = [f"the cat sat on the mat {i} times; two plus {i} is {i + 2}" for i in range(400)]
    tok = train_tokenizer(texts, vocab_size=400)
    model_cfg["eos_token_id"] = tok.eos_id
    cfg = MiMoConfig(**model_cfg)
    # on the CPU: the bench process holds no GPU memory that the server's KV-cache budget would miss
    model = build_model(cfg, device="cpu", dtype=torch.float32 if tiny else torch.bfloat16, seed=0)
    model.save_pretrained(folder, tokenizer=tok)
    return {"vocab_size": cfg.vocab_size, "params": sum(p.numel() for p in model.parameters())}


async def one_request(client: httpx.AsyncClient, i: int, vocab: int, rng: random.Random) -> dict:
    mode = MODES[i % len(MODES)]
    n_prompt = PROMPT_LENS[i % len(PROMPT_LENS)]
    body = {"model": "bench", "prompt": [rng.randrange(3, vocab - 3) for _ in range(n_prompt)],
            "max_tokens": 32 + (i % 3) * 16, "n": (1, 1, 2, 4)[(i // 4) % 4], "seed": i, **mode}
    stream = i % 2 == 1
    t0 = time.perf_counter()
    first = None
    if stream:
        async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            ok = r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: ") and first is None:
                    first = time.perf_counter() - t0
                if line.startswith("data: ") and '"error"' in line:
                    ok = False
    else:
        r = await client.post("/v1/completions", json=body)
        ok = r.status_code == 200
    dt = time.perf_counter() - t0
    return {"i": i, "ok": ok, "seconds": dt, "first_chunk": first, "prompt": n_prompt, "n": body["n"],
            "mode": "greedy" if not mode.get("temperature") else "top_p" if "top_p" in mode else
            "top_k" if "top_k" in mode else "sample", "stream": stream}


async def load(url: str, requests: int, concurrency: int, vocab: int) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def guarded(i):
            async with sem:
                return await one_request(client, i, vocab, rng)
        return await asyncio.gather(*(guarded(i) for i in range(requests)))


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def phase(name: str, args, model: str, cache: Path, port: int, vocab: int, log_dir: Path) -> dict:
    log_path = log_dir / f"serve_{name}.log"
    cmd = [sys.executable, "-m", "openmimo", "serve", "--model", model, "--port", str(port),
           "--served-model-name", "bench", "--compile-cache", str(cache)] + args.serve_args
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    env.pop("TRITON_CACHE_DIR", None)
    url = f"http://127.0.0.1:{port}"
    out = {"phase": name}
    with open(log_path, "w") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        try:
            up = None
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}; see {log_path}")
                if time.perf_counter() - t0 > args.ready_timeout:
                    raise RuntimeError(f"not ready after {args.ready_timeout} s; see {log_path}")
                try:
                    r = httpx.get(url + "/health", timeout=2)
                    if up is None:
                        up = time.perf_counter() - t0
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            out["health_answers_s"], out["ready_s"] = up, time.perf_counter() - t0
            m0 = httpx.get(url + "/metrics").text
            t1 = time.perf_counter()
            r = httpx.post(url + "/v1/completions", json={"model": "bench", "prompt": [5, 6, 7, 8], "max_tokens": 16,
                                                          "temperature": 0}, timeout=600)
            out["first_request_s"] = time.perf_counter() - t1
            out["first_request_ok"] = r.status_code == 200
            t2 = time.perf_counter()
            results = asyncio.run(load(url, args.requests, args.concurrency, vocab))
            out["load_s"] = time.perf_counter() - t2
            m1 = httpx.get(url + "/metrics").text
            secs = sorted(x["seconds"] for x in results)
            out.update(requests=len(results), errors=sum(not x["ok"] for x in results),
                       latency_p50_s=statistics.median(secs), latency_p99_s=secs[int(0.99 * (len(secs) - 1))],
                       latency_max_s=secs[-1],
                       slowest=sorted(results, key=lambda x: -x["seconds"])[:3])
            for key, prom in (("compiled_graphs", "openmimo_compiled_graphs_total"),
                              ("eager_fallback_calls", "openmimo_eager_fallback_calls_total"),
                              ("variants_ready", "openmimo_compiled_variants_ready")):
                out[f"{key}_at_ready"], out[f"{key}_after_load"] = metric(m0, prom), metric(m1, prom)
            out["compiled_during_load"] = out["compiled_graphs_after_load"] - out["compiled_graphs_at_ready"]
            out["eager_during_load"] = out["eager_fallback_calls_after_load"] - out["eager_fallback_calls_at_ready"]
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lines = log_path.read_text().splitlines()
    out["log"] = [ln for ln in lines if "openmimo serve:" in ln]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint to serve (default: random weights of --preset's shape)")
    ap.add_argument("--preset", default="configs/small.yaml")
    ap.add_argument("--tiny", action="store_true", help="a tiny float32 model on the CPU (a dry run)")
    ap.add_argument("--cache", default=None, help="compile cache folder (default: a fresh temporary one)")
    ap.add_argument("--phases", nargs="+", default=["cold", "warm"])
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--ready-timeout", type=float, default=420.0)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--log-dir", default=None, help="keep the servers' logs here (default: the temporary folder)")
    ap.add_argument("serve_args", nargs="*", help="extra `openmimo serve` arguments (after --)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="openmimo-startup-"))
    log_dir = Path(args.log_dir) if args.log_dir else tmp
    log_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else tmp / "compile-cache"
    report = {"date": str(datetime.date.today()), "argv": sys.argv[1:],
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()}
    try:
        import torch

        report["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        report["torch"] = torch.__version__
        model = args.model
        if model is None:
            model = str(tmp / "model")
            t = time.perf_counter()
            report["model"] = make_checkpoint(args.preset, Path(model), args.tiny)
            print(f"checkpoint ({report['model']['params'] / 1e6:.0f}M parameters) written in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
        report["phases"] = []
        for i, name in enumerate(args.phases):
            res = phase(name, args, model, cache, args.port + i, vocab, log_dir)
            report["phases"].append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "log"}, indent=1), flush=True)
            print("\n".join(res["log"][-6:]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        if not args.log_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nDevice: {report.get('device')}; torch {report.get('torch')}; date {report['date']}; commit {report['commit']}")
    print("| phase | /health answers | ready | first request | load p50 / p99 / max | errors | graphs compiled "
          "during load | eager calls during load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report.get("phases", []):
        print(f"| {r['phase']} | {r['health_answers_s']:.1f} s | {r['ready_s']:.1f} s | {r['first_request_s']:.2f} s | "
              f"{r['latency_p50_s']:.2f} / {r['latency_p99_s']:.2f} / {r['latency_max_s']:.2f} s | {r['errors']} | "
              f"{r['compiled_during_load']:.0f} | {r['eager_during_load']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
