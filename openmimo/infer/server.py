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
"""
# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.


import asyncio
import json
import math
import sys
import threading
import time
import traceback
import uuid

from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.compile_cache import cache_counts, use_compile_cache
from openmimo.infer.engine import SamplingParams
from openmimo.infer.openai_api import TokenText, add_tokenizer_routes, chat_logprobs, completion_logprobs, rescore
from openmimo.infer.textstream import IncrementalDecoder, find_stop
from openmimo.tokenizer import ENDOFTEXT, split_reasoning

DEFAULT_MAX_BODY_BYTES = 8 * 2**20  # request bodies larger than this get HTTP 413
_OFFLOAD_BYTES = 64 * 2**10  # JSON bodies larger than this are parsed in a worker thread
_INT_MAX = 2**31 - 1


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class _ClientGone(Exception):
    """The client disconnected before its reply was ready."""


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _api_error_body(e: APIError) -> dict:
    return error_body(e.message, "invalid_request_error" if e.status < 500 else "server_error", e.param, e.code)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _num(body: dict, key: str, kind, default, lo=None, hi=None, lo_open: bool = False):
    """``body[key]`` as a finite ``kind`` (int or float) in [lo, hi] (``lo_open``: (lo, hi]); bools are refused."""
    v = body.get(key, default)
    if v is None:
        v = default
    what = "an integer" if kind is int else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise APIError(400, f"'{key}' must be {what}, got {_short(v)}", key, "invalid_type")
    if isinstance(v, float) and not math.isfinite(v):
        raise APIError(400, f"'{key}' must be a finite number, got {v}", key, "invalid_value")
    if kind is int and isinstance(v, float):
        if not v.is_integer():
            raise APIError(400, f"'{key}' must be an integer, got {v}", key, "invalid_type")
        v = int(v)
    below = lo is not None and (v <= lo if lo_open else v < lo)
    if below or (hi is not None and v > hi):
        left = "(" if lo_open else "["
        raise APIError(400, f"'{key}'={v} is out of range {left}{lo}, {hi}]", key, "invalid_value")
    return kind(v)


def _bool(body: dict, key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise APIError(400, f"'{key}' must be true or false, got {_short(v)}", key, "invalid_type")
    return v


def _token_ids(v, key: str, vocab: int) -> list[int]:
    """A list of token ids (ints, not bools, inside the vocabulary)."""
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise APIError(400, f"'{key}' must be a list of integer token ids", key, "invalid_type")
    if any(not 0 <= t < vocab for t in v):
        raise APIError(400, f"'{key}' has token ids outside the vocabulary [0, {vocab})", key, "invalid_value")
    return v


async def _wait_disconnect(request) -> None:
    """Return when the client has gone away (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request, coro):
    """Await ``coro``; cancel it (which aborts its engine requests) and raise _ClientGone if the client leaves first."""
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise _ClientGone()
    return task.result()


async def _merged(coros, q: asyncio.Queue):
    """Run ``coros`` (which put items on ``q``) concurrently and yield the items as they come.  When the
    consumer stops early (a disconnected client cancels it) the coroutines are cancelled, which aborts
    their engine requests."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    done_all = asyncio.gather(*tasks)
    try:
        while not (done_all.done() and q.empty()):
            getter = asyncio.ensure_future(q.get())
            try:
                await asyncio.wait({getter, done_all}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()
        done_all.result()
    finally:
        for t in tasks:
            t.cancel()
        # the gather finishes once the cancellations land; retrieve its outcome then, so that a dropped client
        # leaves no "exception was never retrieved" report in the log
        done_all.add_done_callback(lambda f: f.cancelled() or f.exception())


def create_app(engine: AsyncEngine, tokenizer, model_name: str, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI application serving ``engine`` (tokenizer: openmimo.tokenizer.Tokenizer).

    ``max_body_bytes``: larger request bodies are refused with HTTP 413."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="openmimo", version="0.1")
    app.add_middleware(WarmupGate, engine=engine)
    max_len = engine.engine.max_len
    vocab = engine.engine.cfg.vocab_size
    stop_default = {t for t in (tokenizer.eos_id, tokenizer.token_to_id(ENDOFTEXT), engine.engine.cfg.eos_token_id)
                    if t is not None}
    started = time.time()
    # A token covers at most this many characters, so a text of more than ``2 * max_len * longest`` characters
    # cannot fit the context and is refused without tokenising it.
    try:
        longest = max(len(tokenizer.id_to_token(i) or "") for i in range(tokenizer.vocab_size))
        char_bound = 2 * max_len * max(longest, 1)
    except (AttributeError, TypeError):
        char_bound = None

    def _encode(texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` (run in a worker thread: the batch encoder releases the GIL)."""
        batch = getattr(tokenizer, "encode_batch", None)
        return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]

    def _refuse_long_text(n_chars: int, key: str) -> None:
        if char_bound is not None and n_chars > char_bound:
            raise APIError(400, f"the prompt has {n_chars} characters, more than this model's context of {max_len} "
                           "tokens can hold", key, "context_length_exceeded")

    @app.exception_handler(APIError)
    async def _api_error(_request, e: APIError):
        return JSONResponse(_api_error_body(e), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, e: HTTPException):
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(e.detail), kind), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request, e: Exception):
        return JSONResponse(error_body(f"internal server error: {type(e).__name__}: {e}"[:500], "server_error"),
                            status_code=500)

    async def _body(request: Request) -> dict:
        too_big = APIError(413, f"the request body exceeds the server's limit of {max_body_bytes} bytes", None,
                           "request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise too_big
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise too_big
            parts.append(chunk)
        raw = b"".join(parts)
        try:
            body = await asyncio.to_thread(json.loads, raw) if len(raw) > _OFFLOAD_BYTES else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise APIError(400, f"malformed JSON body: {e}", None, "invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the JSON body must be an object", None, "invalid_json")
        if body.get("model") not in (None, model_name):
            raise APIError(404, f"model {_short(body.get('model'))} does not exist (serving '{model_name}')", "model",
                           "model_not_found")
        return body

    def _params(body: dict, chat: bool) -> tuple[SamplingParams, list[str]]:
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _num(body, key, int, max_len if chat else 16, 1 if chat else 0, _INT_MAX)
        if max_tokens == 0 and not _bool(body, "echo"):
            raise APIError(400, f"'{key}'=0 needs 'echo': true (prompt log-probs only)", key, "invalid_value")
        stop = body.get("stop")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise APIError(400, "'stop' must be a string or a list of non-empty strings", "stop", "invalid_type")
        ids = body.get("stop_token_ids")
        ids = _token_ids([] if ids is None else ids, "stop_token_ids", vocab)
        seed = body.get("seed")
        if seed is not None:
            seed = _num(body, "seed", int, None, 0, 2**63 - 1)
        for k in ("presence_penalty", "frequency_penalty"):
            if _num(body, k, float, 0.0, -2.0, 2.0) != 0.0:
                raise APIError(400, f"'{k}' is not supported by this server (only 0)", k, "unsupported_parameter")
        if chat:
            _bool(body, "logprobs")
            alternatives = _num(body, "top_logprobs", int, 0, 0, 20)
        else:
            alternatives = 0 if body.get("logprobs") is None else _num(body, "logprobs", int, 0, 0, 20)
            _bool(body, "echo")
        if _bool(body, "stream") and (alternatives or body.get("echo")):
            what = "'echo'" if body.get("echo") else "'top_logprobs'" if chat else "'logprobs' > 0"
            raise APIError(400, f"{what} is not supported with 'stream': true", "stream", "unsupported_parameter")
        p = SamplingParams(max_new_tokens=max(max_tokens, 1), temperature=_num(body, "temperature", float, 1.0, 0.0, 100.0),
                           top_p=_num(body, "top_p", float, 1.0, 0.0, 1.0, lo_open=True),
                           top_k=_num(body, "top_k", int, 0, 0, _INT_MAX), stop_ids=tuple(stop_default | set(ids)),
                           seed=seed, n=_num(body, "n", int, 1, 1, engine.engine.slots))
        try:
            p.check()
        except ValueError as e:
            raise APIError(400, str(e), None, "invalid_value") from None
        return p, stop

    def _check_prompt(ids: list[int], key: str = "prompt") -> None:
        if not ids:
            raise APIError(400, "the prompt is empty", key, "invalid_value")
        if len(ids) >= max_len:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {max_len}", key,
                           "context_length_exceeded")
        _token_ids(ids, key, vocab)

    async def _push(dec: IncrementalDecoder, toks, final: bool) -> str:
        return dec.push(toks, final=final)  # a short window per push (textstream.py): cheap on the loop

    async def _run(ids, params, stops, emit, gen=None):
        """Drive one request (or the output stream ``gen`` of one already queued); ``emit(index, text_delta,
        token_ids, logprobs, finish_reason)`` per output."""
        decs = [IncrementalDecoder(tokenizer) for _ in range(params.n)]
        done = [False] * params.n
        gen = gen if gen is not None else engine.stream(ids, params, f"r-{uuid.uuid4().hex}")
        try:
            async for o in gen:
                if done[o.index]:
                    continue
                dec = decs[o.index]
                text = await _push(dec, o.token_ids, bool(o.finish_reason))
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
                    break
        finally:
            await gen.aclose()  # aborts the engine request if it is still running

    def _usage(n_prompt, n_completion):
        return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}

    def _sse(chunks):
        async def gen():
            try:
                async for chunk in chunks:
                    yield f"data: {json.dumps(chunk)}\n\n"
            except APIError as e:
                yield f"data: {json.dumps(_api_error_body(e))}\n\n"
            except Exception as e:  # the stream has started: report in-band, then end it properly
                traceback.print_exc(file=sys.stderr)
                err = error_body(f"internal server error: {type(e).__name__}: {e}"[:500], "server_error")
                yield f"data: {json.dumps(err)}\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        """200 {"status": "ok"} once every compiled variant is built; 503 with the progress until then."""
        if not engine.ready.is_set():
            done, total = engine.warmup_progress
            return JSONResponse({"status": "warming up", "compiled_variants": f"{done}/{total}"}, status_code=503)
        if engine.warmup_error:
            return {"status": "ok", "warmup_error": engine.warmup_error}
        return {"status": "ok"}

    add_tokenizer_routes(app, tokenizer, max_len, _body, APIError)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(started),
                                            "owned_by": "openmimo", "max_model_len": max_len}]}

    @app.get("/metrics")
    async def metrics():
        m = engine.metrics()
        m["compiled_graphs"] = cache_counts()["dynamo_graphs"]  # process-wide: constant once warmed up
        return PlainTextResponse(prometheus_text(m), media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request)
        params, stops = _params(body, chat=False)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            prompts = prompt
        else:
            raise APIError(400, "'prompt' must be a string, a list of strings or token ids", "prompt", "invalid_type")
        texts = [p for p in prompts if isinstance(p, str)]
        for t in texts:
            _refuse_long_text(len(t), "prompt")
        encoded = iter(await asyncio.to_thread(_encode, texts) if texts else [])
        id_lists = [next(encoded) if isinstance(p, str) else p for p in prompts]
        for ids in id_lists:
            _check_prompt(ids)
        want_lp = body.get("logprobs") is not None
        n_alt = _num(body, "logprobs", int, 0, 0, 20)  # alternatives per token (validated by _params)
        echo = _bool(body, "echo")
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        score_only = _num(body, key, int, 16, 0, _INT_MAX) == 0  # echo with max_tokens 0: prompt log-probs only
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_obj(toks, lps):
            return completion_logprobs(TokenText(tokenizer), toks, lps, None) if want_lp else None

        def queue_all():
            """One engine request per prompt, queued at once (admitted and prefilled together)."""
            try:
                return engine.stream_many(id_lists, params)
            except ValueError as e:
                raise APIError(400, str(e), None, "invalid_value") from None

        if body.get("stream"):
            q: asyncio.Queue = asyncio.Queue()
            rids, gens = queue_all()

            async def one(pi, ids, gen):
                async def emit(i, text, toks, lps, reason):
                    await q.put({"id": cid, "object": "text_completion", "created": created, "model": model_name,
                                 "choices": [{"index": pi * params.n + i, "text": text, "logprobs": lp_obj(toks, lps),
                                              "finish_reason": reason}]})
                await _run(ids, params, stops, emit, gen)

            async def chunks():
                try:
                    async for c in _merged([one(pi, ids, g) for pi, (ids, g) in enumerate(zip(id_lists, gens))], q):
                        yield c
                finally:  # a request whose task never started has no generator to abort it
                    for rid in rids:
                        engine.abort(rid)
            return _sse(chunks())

        accs = [[{"index": pi * params.n + i, "text": "", "toks": [], "lps": [],
                  "finish_reason": "length" if score_only else None}
                 for i in range(params.n)] for pi in range(len(id_lists))]

        async def one_plain(ids, acc, gen):
            async def emit(i, text, toks, lps, reason):
                acc[i]["text"] += text
                acc[i]["toks"] += toks
                acc[i]["lps"] += lps
                acc[i]["finish_reason"] = reason or acc[i]["finish_reason"]
            await _run(ids, params, stops, emit, gen)

        rescored = None
        try:
            if not score_only:
                rids, gens = queue_all()
                try:
                    await _unless_disconnected(request, asyncio.gather(
                        *(one_plain(ids, acc, g) for ids, acc, g in zip(id_lists, accs, gens))))
                finally:
                    for rid in rids:
                        engine.abort(rid)
            if want_lp and (echo or n_alt):
                prompts_per_choice = [ids for ids, acc in zip(id_lists, accs) for _ in acc]
                rescored = await _unless_disconnected(request, rescore(
                    engine, prompts_per_choice, [a["toks"] for acc in accs for a in acc], n_alt, echo))
        except _ClientGone:
            return Response(status_code=499)

        def reply():
            tt = TokenText(tokenizer)
            echoed = [p if isinstance(p, str) else tokenizer.decode(ids) for p, ids in zip(prompts, id_lists)] \
                if echo else [""] * len(prompts)
            choices = []
            for k, (pi, a) in enumerate((pi, a) for pi, acc in enumerate(accs) for a in acc):
                if rescored is not None:
                    ids_k, lps_k, tops_k = rescored[k]
                    lp = completion_logprobs(tt, ids_k, lps_k, tops_k if n_alt else None)
                else:
                    lp = completion_logprobs(tt, a["toks"], a["lps"], None) if want_lp else None
                choices.append({"index": a["index"], "text": echoed[pi] + a["text"], "logprobs": lp,
                                "finish_reason": a["finish_reason"]})
            n_out = sum(len(a["toks"]) for acc in accs for a in acc)
            return {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                    "choices": choices, "usage": _usage(sum(len(i) for i in id_lists), n_out)}
        return await asyncio.to_thread(reply) if want_lp or echo else reply()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _body(request)
        params, stops = _params(body, chat=True)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", "messages",
                           "invalid_type")
        _refuse_long_text(sum(len(json.dumps(m.get("content"))) for m in msgs), "messages")
        try:
            ids, _ = await asyncio.to_thread(tokenizer.render_chat, msgs, add_generation_prompt=True)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise APIError(400, f"bad messages: {e}", "messages", "invalid_value") from None
        _check_prompt(ids, "messages")
        want_lp = bool(body.get("logprobs"))
        n_alt = _num(body, "top_logprobs", int, 0, 0, 20) if want_lp else 0
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def lp_obj(toks, lps, tops=None):
            return chat_logprobs(TokenText(tokenizer), toks, lps, tops) if want_lp else None

        if body.get("stream"):
            q: asyncio.Queue = asyncio.Queue()
            for i in range(params.n):
                q.put_nowait({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None})

            async def emit_chunk(i, text, toks, lps, reason):
                await q.put({"index": i, "delta": {"content": text} if text else {}, "logprobs": lp_obj(toks, lps),
                             "finish_reason": reason})

            async def chunks():
                async for choice in _merged([_run(ids, params, stops, emit_chunk)], q):
                    yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                           "choices": [choice]}
            return _sse(chunks())

        acc = [{"text": "", "toks": [], "lps": [], "finish_reason": None} for _ in range(params.n)]

        async def emit(i, text, toks, lps, reason):
            acc[i]["text"] += text
            acc[i]["toks"] += toks
            acc[i]["lps"] += lps
            acc[i]["finish_reason"] = reason or acc[i]["finish_reason"]
        rescored = None
        try:
            await _unless_disconnected(request, _run(ids, params, stops, emit))
            if n_alt:  # alternatives: re-score each reply after the prompt
                rescored = await _unless_disconnected(request, rescore(engine, [ids] * len(acc),
                                                                       [a["toks"] for a in acc], n_alt, False))
        except _ClientGone:
            return Response(status_code=499)

        def reply():
            choices = []
            for i, a in enumerate(acc):
                reasoning, content = split_reasoning(a["text"])
                msg = {"role": "assistant", "content": content}
                if reasoning is not None:
                    msg["reasoning_content"] = reasoning
                lp = lp_obj(*rescored[i]) if rescored is not None else lp_obj(a["toks"], a["lps"])
                choices.append({"index": i, "message": msg, "logprobs": lp, "finish_reason": a["finish_reason"]})
            return {"id": cid, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": choices, "usage": _usage(len(ids), sum(len(a["toks"]) for a in acc))}
        return await asyncio.to_thread(reply) if want_lp else reply()

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
    parser.add_argument("--port", type=int, default=8000, help="TCP port (1-65535)")
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: the folder name)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body accepted; larger ones get HTTP 413 (default: {DEFAULT_MAX_BODY_BYTES})")
    parser.add_argument("--compile-cache", default=None,
                        help="folder of compiled artifacts kept between runs (default: $OPENMIMO_COMPILE_CACHE or "
                             "~/.cache/openmimo/compile)")
    add_engine_arguments(parser)


def run(args) -> int:
    import uvicorn

    from openmimo.config import UsageError
    from openmimo.infer.generate import build_engine

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
