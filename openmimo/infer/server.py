"""`openmimo serve --model PATH`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the engine.

Endpoints: ``/v1/completions`` and ``/v1/chat/completions`` (both with ``stream: true`` as
server-sent events), ``/v1/models``, ``/health``, ``/metrics`` (Prometheus text format).

Request fields understood: model, prompt (text, list of texts, token ids or lists of them) or
messages, max_tokens / max_completion_tokens, temperature, top_p, top_k (extension), n, seed,
stop (strings; checked on the decoded text), stop_token_ids (extension), logprobs (completions: 0-20
alternatives per token; chat: true with top_logprobs 0-20), echo (completions: the prompt's tokens and
log-probs first; with max_tokens 0 nothing is generated), stream (not with echo or alternatives).  A list of
prompts is queued at once, so the engine admits and prefills them together.  The log-prob returned is the
model's unmodified (temperature-1) log-prob; prompt log-probs and alternatives come from re-scoring
(``openai_api.py``), which also adds ``/tokenize``, ``/detokenize`` and ``/tokenizer_info``.  Chat replies
with a think block carry it in ``reasoning_content``.  Every error is JSON ``{"error": {"message",
"type", "param", "code"}}`` (4xx for a bad request, 413 for a body over ``max_body_bytes``, 500 for
an unexpected failure); a stream that fails after it started ends with a ``data: {"error": ...}``
event and then ``data: [DONE]``; the server keeps running.  A client that disconnects has its
engine requests aborted.  Tokenisation, chat rendering and large detokenisation run in worker
threads, so a huge prompt never blocks other requests.  Stop strings are matched on the decoded text; in a stream,
text sent before a match is not retracted.

This file builds the application and the `serve` command; the request checks are ``api_request.py``, the one
handler both completion endpoints share is ``completions.py``, the asyncio plumbing (relaying an engine stream,
disconnects, server-sent events) is ``api_stream.py``.
"""
# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import json
import sys
import threading
import time

from openmimo.config import UsageError
from openmimo.infer.api_request import (DEFAULT_MAX_BODY_BYTES, APIError, RequestLimits, api_error_body, error_body,
                                        read_body)
from openmimo.infer.api_stream import sse_events
from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.compile_cache import cache_counts, use_compile_cache
from openmimo.infer.completions import CHAT, COMPLETIONS, Serving, complete
from openmimo.infer.generate import add_engine_arguments, build_engine
from openmimo.infer.openai_api import add_tokenizer_routes


def create_app(engine: AsyncEngine, tokenizer, model_name: str, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI application serving ``engine`` (tokenizer: openmimo.tokenizer.Tokenizer).

    ``max_body_bytes``: larger request bodies are refused with HTTP 413."""
    # fastapi is the optional `serve` extra: importing this module (and `serve --help`) works without it
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="openmimo", version="0.1")
    app.add_middleware(WarmupGate, engine=engine)
    limits = RequestLimits.of(engine.engine, tokenizer)
    serving = Serving(engine, tokenizer, model_name, limits)
    started = time.time()

    @app.exception_handler(APIError)
    async def _api_error(_request, e: APIError):
        return JSONResponse(api_error_body(e), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, e: HTTPException):
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request, e: Exception):
        return JSONResponse(error_body(f"internal server error: {type(e).__name__}: {e}"[:500], "server_error"),
                            status_code=500)

    async def _body(request: Request) -> dict:
        return await read_body(request, max_body_bytes, model_name)

    async def _serve(request: Request, endpoint):
        out = await complete(serving, endpoint, request, await _body(request))
        if out is None:  # the client went away
            return Response(status_code=499)
        if isinstance(out, dict):
            return out
        return StreamingResponse(sse_events(out), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        """200 {"status": "ok"} once every compiled variant is built; 503 with the progress until then."""
        if not engine.ready.is_set():
            done, total = engine.warmup_progress
            return JSONResponse({"status": "warming up", "compiled_variants": f"{done}/{total}"}, status_code=503)
        if engine.warmup_error:
            return {"status": "ok", "warmup_error": engine.warmup_error}
        return {"status": "ok"}

    add_tokenizer_routes(app, tokenizer, limits.max_len, _body)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(started),
                                            "owned_by": "openmimo", "max_model_len": limits.max_len}]}

    @app.get("/metrics")
    async def metrics():
        m = engine.metrics()
        m["compiled_graphs"] = cache_counts()["dynamo_graphs"]  # process-wide: constant once warmed up
        return PlainTextResponse(prometheus_text(m), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _serve(request, COMPLETIONS)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _serve(request, CHAT)

    return app


class WarmupGate:
    """ASGI middleware: every ``/v1/`` request gets HTTP 503 (an OpenAI error, ``Retry-After``) until the engine's
    warm-up is done, so that no request waits on a compile; other paths (``/health``, ``/metrics``) pass."""

    def __init__(self, app, engine: AsyncEngine):
        self.app, self.engine = app, engine

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.engine.ready.is_set() or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        done, total = self.engine.warmup_progress
        body = json.dumps(error_body(f"the server is warming up ({done}/{total} compiled variants built); retry when "
                                     "/health reports ok", "server_error", None, "warming_up")).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def prometheus_text(m: dict) -> str:
    """Engine metrics in the Prometheus text exposition format."""
    rows = [
        ("openmimo_requests_total", "counter", "requests received", m["requests"]),
        ("openmimo_prompt_tokens_total", "counter", "prompt tokens prefilled", m["prompt_tokens"]),
        ("openmimo_generated_tokens_total", "counter", "tokens generated", m["generated_tokens"]),
        ("openmimo_decode_steps_total", "counter", "decode steps run", m["decode_steps"]),
        ("openmimo_decode_tokens_per_second", "gauge", "generated tokens per second of decode time",
         m["decode_tokens_per_second"]),
        ("openmimo_queue_length", "gauge", "requests waiting for a slot", m["waiting"]),
        ("openmimo_running_sequences", "gauge", "sequences decoding", m["running"]),
        ("openmimo_slots", "gauge", "KV-cache slots", m["slots"]),
    ]
    rows += [("openmimo_compiled_variants_ready", "gauge", "compiled decode/prefill/first-token variants built",
              m.get("compiled_variants_ready", 0)),
             ("openmimo_eager_fallback_calls_total", "counter", "request-path calls served eagerly (variant not built)",
              m.get("eager_fallback_calls", 0)),
             ("openmimo_compiled_graphs_total", "counter", "graphs torch.compile built in this process",
              m.get("compiled_graphs", 0))]
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {float(value)}"]
    spec = m.get("speculative")
    if spec:
        lines += ["# HELP openmimo_spec_acceptance_rate accepted / drafted MTP tokens per depth",
                  "# TYPE openmimo_spec_acceptance_rate gauge"]
        lines += [f'openmimo_spec_acceptance_rate{{depth="{d}"}} {r}' for d, r in enumerate(spec["acceptance_rate"], 1)]
        lines += ["# HELP openmimo_spec_mean_accepted_length accepted drafts per verify step",
                  "# TYPE openmimo_spec_mean_accepted_length gauge",
                  f"openmimo_spec_mean_accepted_length {spec['mean_accepted_length']}"]
    return "\n".join(lines) + "\n"


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Run ``app`` with uvicorn in a daemon thread; returns (server, base_url).  ``server.should_exit = True`` stops it."""
    import uvicorn  # the optional `serve` extra

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > timeout or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://{host}:{bound}"


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Hugging-Face-layout checkpoint folder (config.json, safetensors, tokenizer)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (1-65535)")
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: the folder name)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body accepted; larger ones get HTTP 413 (default: {DEFAULT_MAX_BODY_BYTES})")
    parser.add_argument("--compile-cache", default=None,
                        help="folder of compiled artifacts kept between runs (default: $OPENMIMO_COMPILE_CACHE or "
                             "~/.cache/openmimo/compile)")
    add_engine_arguments(parser)


def run(args) -> int:
    import uvicorn  # the optional `serve` extra: `serve --help` works without it

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes must be positive, got {args.max_body_bytes}")
    t0 = time.perf_counter()
    cache = use_compile_cache(args.compile_cache)  # before anything compiles

    def log(line: str) -> None:
        print(f"openmimo serve: {line}", file=sys.stderr, flush=True)

    # one decode graph per sampling mode (attention over the whole capacity, which the CUDA kernel makes cheap):
    # 3 compiled decode variants to build at start-up instead of 3 per power-of-two length
    engine, tokenizer = build_engine(args, kv_buckets=False, compile_on_request=False)
    name = args.served_model_name or args.model.rstrip("/").split("/")[-1]
    log(f"{name} loaded in {time.perf_counter() - t0:.1f} s ({engine.slots} slots x {engine.max_len} tokens); "
        f"building {len(engine.compiled_variants())} compiled variants (cache: {cache})")
    aengine = AsyncEngine(engine, warmup=True, log=log)
    app = create_app(aengine, tokenizer, name, max_body_bytes=args.max_body_bytes)

    def report_ready():
        aengine.ready.wait()
        counts = ", ".join(f"{k} {v}" for k, v in cache_counts().items())
        log(f"ready {time.perf_counter() - t0:.1f} s after start ({counts})")

    threading.Thread(target=report_ready, daemon=True).start()
    print(f"openmimo serve: {name} on http://{args.host}:{args.port} ({engine.slots} slots x {engine.max_len} tokens)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    aengine.shutdown()
    return 0
