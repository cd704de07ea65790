"""`openmimo serve --model PATH`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the engine.

Endpoints: ``/v1/completions`` and ``/v1/chat/completions`` (both with ``stream: true`` as
server-sent events), ``/v1/models``, ``/health``, ``/metrics`` (Prometheus text format).

Request fields understood: model, prompt (text, list of texts, token ids or lists of them) or
messages, max_tokens / max_completion_tokens, temperature, top_p, top_k (extension), n, seed,
stop (strings; checked on the decoded text), stop_token_ids (extension), logprobs (completions:
any integer, chat: true; only the chosen token's log-prob is returned — top alternatives are not),
stream.  The log-prob returned is the model's unmodified (temperature-1) log-prob.  Chat replies
with a think block carry it in ``reasoning_content``.  Errors are JSON ``{"error": {...}}`` with a
4xx status; the server keeps running.  Stop strings are matched on the decoded text; in a stream,
text sent before a match is not retracted.
"""
# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.


import json
import time
import uuid

from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.engine import SamplingParams
from openmimo.infer.textstream import IncrementalDecoder, find_stop
from openmimo.tokenizer import ENDOFTEXT, split_reasoning


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _num(body: dict, key: str, kind, default, lo=None, hi=None):
    v = body.get(key, default)
    if v is None:
        v = default
    if kind is int and isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise APIError(400, f"'{key}' must be a {kind.__name__}", key)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise APIError(400, f"'{key}'={v} is out of range", key)
    return kind(v)


def create_app(engine: AsyncEngine, tokenizer, model_name: str):
    """The FastAPI application serving ``engine`` (tokenizer: openmimo.tokenizer.Tokenizer)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

    app = FastAPI(title="openmimo", version="0.1")
    max_len = engine.engine.max_len
    stop_default = {t for t in (tokenizer.eos_id, tokenizer.token_to_id(ENDOFTEXT), engine.engine.cfg.eos_token_id)
                    if t is not None}
    started = time.time()

    @app.exception_handler(APIError)
    async def _api_error(_request, e: APIError):
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        return JSONResponse({"error": {"message": e.message, "type": kind, "param": e.param, "code": e.code}},
                            status_code=e.status)

    async def _body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"malformed JSON body: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the JSON body must be an object")
        if body.get("model") not in (None, model_name):
            raise APIError(404, f"model '{body.get('model')}' does not exist (serving '{model_name}')", "model",
                           "model_not_found")
        return body

    def _params(body: dict) -> tuple[SamplingParams, list[str]]:
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = _num({"max_tokens": mt}, "max_tokens", int, 16 if "messages" not in body else max_len, 1)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise APIError(400, "'stop' must be a string or a list of non-empty strings", "stop")
        ids = body.get("stop_token_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise APIError(400, "'stop_token_ids' must be a list of integers", "stop_token_ids")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise APIError(400, "'seed' must be an integer", "seed")
        p = SamplingParams(max_new_tokens=max_tokens, temperature=_num(body, "temperature", float, 1.0, 0.0, 100.0),
                           top_p=_num(body, "top_p", float, 1.0, 1e-9, 1.0), top_k=_num(body, "top_k", int, 0, 0),
                           stop_ids=tuple(stop_default | set(ids)), seed=seed,
                           n=_num(body, "n", int, 1, 1, engine.engine.slots))
        return p, stop

    def _check_prompt(ids: list[int], params: SamplingParams) -> SamplingParams:
        if not ids:
            raise APIError(400, "the prompt is empty", "prompt")
        if len(ids) >= max_len:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {max_len}", "prompt",
                           "context_length_exceeded")
        if any(not isinstance(t, int) or not 0 <= t < engine.engine.cfg.vocab_size for t in ids):
            raise APIError(400, "token ids out of the vocabulary", "prompt")
        return params

    async def _run(ids, params, stops, emit):
        """Drive one request; ``emit(index, text_delta, token_ids, logprobs, finish_reason)`` per output."""
        decs = [IncrementalDecoder(tokenizer) for _ in range(params.n)]
        done = [False] * params.n
        gen = engine.stream(ids, params, f"r-{uuid.uuid4().hex}")
        async for o in gen:
            if done[o.index]:
                continue
            dec = decs[o.index]
            text = dec.push(o.token_ids, final=bool(o.finish_reason))
            reason = o.finish_reason
            toks, lps = o.token_ids, o.logprobs
            if stops:
                cut = find_stop(dec.text, stops, len(dec.text) - len(text))
                if cut is not None:
                    text = text[: max(0, cut - (len(dec.text) - len(text)))]
                    reason = "stop"
            if reason:
                done[o.index] = True
                reason = "length" if reason == "length" else "stop"
            await emit(o.index, text, toks, lps, reason)
            if all(done):
                await gen.aclose()
                break

    def _usage(n_prompt, n_completion):
        return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}

    def _sse(chunks_fn):
        async def gen():
            async for chunk in chunks_fn():
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(started),
                                            "owned_by": "openmimo", "max_model_len": max_len}]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(prometheus_text(engine.metrics()), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request)
        params, stops = _params(body)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            prompts = prompt
        else:
            raise APIError(400, "'prompt' must be a string, a list of strings or token ids", "prompt")
        id_lists = [tokenizer.encode(p) if isinstance(p, str) else p for p in prompts]
        for ids in id_lists:
            _check_prompt(ids, params)
        want_lp = body.get("logprobs") is not None
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_obj(toks, lps):
            return {"tokens": [tokenizer.decode([t]) for t in toks], "token_logprobs": lps, "top_logprobs": None,
                    "text_offset": None} if want_lp else None

        if body.get("stream"):
            async def chunks():
                import asyncio

                q: asyncio.Queue = asyncio.Queue()

                async def one(pi, ids):
                    async def emit(i, text, toks, lps, reason):
                        await q.put({"id": cid, "object": "text_completion", "created": created, "model": model_name,
                                     "choices": [{"index": pi * params.n + i, "text": text, "logprobs": lp_obj(toks, lps),
                                                  "finish_reason": reason}]})
                    await _run(ids, params, stops, emit)

                tasks = [asyncio.create_task(one(pi, ids)) for pi, ids in enumerate(id_lists)]
                done_all = asyncio.gather(*tasks)
                while not (done_all.done() and q.empty()):
                    getter = asyncio.create_task(q.get())
                    await asyncio.wait({getter, done_all}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                    else:
                        getter.cancel()
                done_all.result()
            return _sse(chunks)

        choices, n_out = [], 0
        for pi, ids in enumerate(id_lists):
            acc = [{"index": pi * params.n + i, "text": "", "toks": [], "lps": [], "finish_reason": None}
                   for i in range(params.n)]

            async def emit(i, text, toks, lps, reason, acc=acc):
                acc[i]["text"] += text
                acc[i]["toks"] += toks
                acc[i]["lps"] += lps
                acc[i]["finish_reason"] = reason or acc[i]["finish_reason"]
            await _run(ids, params, stops, emit)
            for a in acc:
                n_out += len(a["toks"])
                choices.append({"index": a["index"], "text": a["text"], "logprobs": lp_obj(a["toks"], a["lps"]),
                                "finish_reason": a["finish_reason"]})
        return {"id": cid, "object": "text_completion", "created": created, "model": model_name, "choices": choices,
                "usage": _usage(sum(len(i) for i in id_lists), n_out)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request)
        params, stops = _params(body)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
        try:
            ids, _ = tokenizer.render_chat(msgs, add_generation_prompt=True)
        except (ValueError, KeyError, TypeError) as e:
            raise APIError(400, f"bad messages: {e}", "messages") from None
        _check_prompt(ids, params)
        want_lp = bool(body.get("logprobs"))
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_obj(toks, lps):
            if not want_lp:
                return None
            return {"content": [{"token": tokenizer.decode([t]), "logprob": lp, "bytes": None, "top_logprobs": []}
                                for t, lp in zip(toks, lps)]}

        if body.get("stream"):
            async def chunks():
                import asyncio

                q: asyncio.Queue = asyncio.Queue()
                for i in range(params.n):
                    await q.put({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None})

                async def emit(i, text, toks, lps, reason):
                    await q.put({"index": i, "delta": {"content": text} if text else {}, "logprobs": lp_obj(toks, lps),
                                 "finish_reason": reason})
                task = asyncio.create_task(_run(ids, params, stops, emit))
                while not (task.done() and q.empty()):
                    getter = asyncio.create_task(q.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                               "choices": [getter.result()]}
                    else:
                        getter.cancel()
                task.result()
            return _sse(chunks)

        acc = [{"text": "", "toks": [], "lps": [], "finish_reason": None} for _ in range(params.n)]

        async def emit(i, text, toks, lps, reason):
            acc[i]["text"] += text
            acc[i]["toks"] += toks
            acc[i]["lps"] += lps
            acc[i]["finish_reason"] = reason or acc[i]["finish_reason"]
        await _run(ids, params, stops, emit)
        choices = []
        for i, a in enumerate(acc):
            reasoning, content = split_reasoning(a["text"])
            msg = {"role": "assistant", "content": content}
            if reasoning is not None:
                msg["reasoning_content"] = reasoning
            choices.append({"index": i, "message": msg, "logprobs": lp_obj(a["toks"], a["lps"]),
                            "finish_reason": a["finish_reason"]})
        return {"id": cid, "object": "chat.completion", "created": created, "model": model_name, "choices": choices,
                "usage": _usage(len(ids), sum(len(a["toks"]) for a in acc))}

    return app


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
    import threading

    import uvicorn

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
    from openmimo.infer.generate import add_engine_arguments

    parser.add_argument("--model", required=True, help="Hugging-Face-layout checkpoint folder (config.json, safetensors, tokenizer)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: the folder name)")
    add_engine_arguments(parser)


def run(args) -> int:
    import uvicorn

    from openmimo.infer.generate import build_engine

    engine, tokenizer = build_engine(args)
    name = args.served_model_name or args.model.rstrip("/").split("/")[-1]
    aengine = AsyncEngine(engine)
    app = create_app(aengine, tokenizer, name)
    print(f"openmimo serve: {name} on http://{args.host}:{args.port} ({engine.slots} slots x {engine.max_len} tokens)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    aengine.shutdown()
    return 0
