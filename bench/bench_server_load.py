"""The server under load: streaming clients, clients that drop their streams, and /health latency throughout.

    python bench/bench_server_load.py [--model CKPT] [--clients 64] [--droppers 8] [--seconds 60]
        [--max-tokens 32] [--slots 64]

Serves ``--model`` (an HF-layout checkpoint; default: a tiny random model with a tokenizer trained here) through
``openmimo.infer.server.create_app`` on uvicorn in this process, then for ``--seconds``: ``--clients`` asyncio
clients loop streaming /v1/completions requests to the end, ``--droppers`` clients loop requests that they close
after two chunks, and a probe GETs /health every 50 ms; the clients run in a second process (``--client URL``), so
the server's event loop does not share its interpreter with them.  Prints the request and error counts, tokens streamed,
the /health latency percentiles, and the engine's tokens generated after each drop (from /metrics: aborted
generation stops, so generated tokens stay near streamed tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

import httpx

from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.engine import Engine
from openmimo.infer.server import create_app, start_in_thread
from openmimo.model.config import MiMoConfig
from openmimo.model.hf import load_model
from openmimo.model.mimo import build_model
from openmimo.tokenizer import load_tokenizer, train_tokenizer

TEXTS = ["the cat sat on the mat", "two plus two is four", "a quick brown fox jumps", "hello world"] * 50


def tiny_model():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     num_nextn_predict_layers=0, eos_token_id=tok.eos_id)
    return build_model(cfg, seed=0), tok


async def stream_once(client: httpx.AsyncClient, body: dict, drop_after: int | None) -> tuple[int, bool]:
    """(content chunks read, whether the stream ended with [DONE] or was dropped as planned)."""
    chunks = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return chunks, False
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return chunks, True
            if "error" in json.loads(data):
                return chunks, False
            chunks += 1
            if drop_after is not None and chunks >= drop_after:
                return chunks, True  # leaving the context closes the connection
    return chunks, False


async def load(url: str, a) -> dict:
    stats = {"requests": 0, "errors": 0, "chunks": 0, "dropped": 0, "health_ms": []}
    stop_at = time.perf_counter() + a.seconds
    limits = httpx.Limits(max_connections=a.clients + a.droppers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker(i: int, drop: bool):
            body = {"model": "m", "prompt": TEXTS[i % 4], "max_tokens": a.max_tokens, "temperature": 1.0,
                    "stream": True, "seed": i}
            while time.perf_counter() < stop_at:
                try:
                    n, ok = await stream_once(client, body, 2 if drop else None)
                except httpx.HTTPError:
                    n, ok = 0, False
                stats["requests"] += 1
                stats["chunks"] += n
                stats["dropped"] += drop
                stats["errors"] += not ok

        async def probe():
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    ok = (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                stats["health_ms"].append(1000 * (time.perf_counter() - t0))
                stats["errors"] += not ok
                await asyncio.sleep(0.05)

        await asyncio.gather(probe(), *(worker(i, False) for i in range(a.clients)),
                             *(worker(a.clients + i, True) for i in range(a.droppers)))
    return stats


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--droppers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--client", default="", help="internal: run only the clients against this URL, print JSON")
    a = ap.parse_args(argv)
    if a.client:
        stats = asyncio.run(load(a.client, a))
        print(json.dumps(stats))
        return stats
    if a.model:
        model, tok = load_model(a.model), load_tokenizer(a.model)
    else:
        model, tok = tiny_model()
    aengine = AsyncEngine(Engine(model, max_slots=a.slots, max_len=256))
    server, url = start_in_thread(create_app(aengine, tok, "m"))
    try:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--client", url, "--clients", str(a.clients), "--droppers", str(a.droppers),
               "--seconds", str(a.seconds), "--max-tokens", str(a.max_tokens)]
        stats = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        wall = time.perf_counter() - t0
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.should_exit = True
        aengine.shutdown()
    h = sorted(stats.pop("health_ms"))
    out = {**stats, "wall_s": round(wall, 1), "health_n": len(h),
           "health_p50_ms": round(statistics.median(h), 1), "health_p99_ms": round(h[int(0.99 * (len(h) - 1))], 1),
           "health_max_ms": round(h[-1], 1), "chunks_per_s": round(stats["chunks"] / wall, 1)}
    gen = [ln for ln in metrics.splitlines() if ln and not ln.startswith("#") and "token" in ln]
    for k, v in out.items():
        print(f"{k:16s} {v}")
    print("engine counters:", "; ".join(gen[:6]))
    return out


if __name__ == "__main__":
    main()
