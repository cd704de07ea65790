"""One handler for ``/v1/completions`` and ``/v1/chat/completions``: check the request, queue its prompts on
the engine, then stream the choices as they come or collect them (re-scored when the reply carries prompt
log-probs or alternatives) into one reply.

What differs between the two endpoints is an :class:`Endpoint`: how the request's prompts are built
(:func:`completion_prompts`: text, token ids or lists of them; :func:`chat_prompt`: the checkpoint's chat
template over ``messages``), which log-prob object a choice carries, and the shape of a choice and of a
streamed chunk.  All prompts of one request are queued at once, so the engine admits and prefills them together.
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from openmimo.infer.api_request import APIError, INT_MAX, RequestLimits, boolean, max_tokens_key, number, sampling_params
from openmimo.infer.api_stream import ClientGone, merged, relay, unless_disconnected
from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.openai_api import TokenText, chat_logprobs, completion_logprobs, rescore
from openmimo.tokenizer import split_reasoning


@dataclass
class Serving:
    """What the handler serves: the engine, its tokenizer, the model id clients send, the request limits."""

    engine: AsyncEngine
    tokenizer: object
    model_name: str
    limits: RequestLimits


@dataclass
class Prompts:
    """A request's prompts and what its reply carries."""

    sources: list  # per prompt, what the client sent (text or token ids): the echoed prompt
    id_lists: list  # per prompt, its token ids
    want_lp: bool  # choices carry log-probs
    n_alt: int  # alternatives per token (top log-probs)
    echo: bool = False  # completions: the prompt's text and log-probs come first
    score_only: bool = False  # completions with max_tokens 0: prompt log-probs only, nothing generated


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of ``texts`` (run in a worker thread: the batch encoder releases the GIL)."""
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


async def completion_prompts(s: Serving, body: dict) -> Prompts:
    """``prompt``: a text, token ids, or a list of either; ``logprobs`` (0-20 alternatives), ``echo``."""
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
        s.limits.refuse_long_text(len(t), "prompt")
    encoded = iter(await asyncio.to_thread(encode_texts, s.tokenizer, texts) if texts else [])
    id_lists = [next(encoded) if isinstance(p, str) else p for p in prompts]
    for ids in id_lists:
        s.limits.check_prompt(ids)
    return Prompts(prompts, id_lists, want_lp=body.get("logprobs") is not None,
                   n_alt=number(body, "logprobs", int, 0, 0, 20),  # validated by sampling_params
                   echo=boolean(body, "echo"),
                   score_only=number(body, max_tokens_key(body), int, 16, 0, INT_MAX) == 0)


async def chat_prompt(s: Serving, body: dict) -> Prompts:
    """``messages`` rendered with the chat template (generation prompt added); ``logprobs``, ``top_logprobs``."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", "messages",
                       "invalid_type")
    s.limits.refuse_long_text(sum(len(json.dumps(m.get("content"))) for m in msgs), "messages")
    try:
        ids, _ = await asyncio.to_thread(s.tokenizer.render_chat, msgs, add_generation_prompt=True)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise APIError(400, f"bad messages: {e}", "messages", "invalid_value") from None
    s.limits.check_prompt(ids, "messages")
    want_lp = bool(body.get("logprobs"))
    return Prompts([ids], [ids], want_lp, number(body, "top_logprobs", int, 0, 0, 20) if want_lp else 0)


def _completion_choice(index: int, echoed: str, text: str, lp, reason) -> dict:
    return {"index": index, "text": echoed + text, "logprobs": lp, "finish_reason": reason}


def _chat_choice(index: int, _echoed: str, text: str, lp, reason) -> dict:
    reasoning, content = split_reasoning(text)
    msg = {"role": "assistant", "content": content}
    if reasoning is not None:  # a think block goes to reasoning_content
        msg["reasoning_content"] = reasoning
    return {"index": index, "message": msg, "logprobs": lp, "finish_reason": reason}


def _chat_delta(index: int, text: str, lp, reason) -> dict:
    return {"index": index, "delta": {"content": text} if text else {}, "logprobs": lp, "finish_reason": reason}


def _chat_start(index: int) -> list[dict]:
    return [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]


@dataclass(frozen=True)
class Endpoint:
    """The endpoint-specific parts of a completion request."""

    chat: bool  # how sampling_params reads the body
    id_prefix: str  # of the reply's id
    object: str  # the reply's "object"
    chunk_object: str  # a streamed chunk's "object"
    prompts: Callable  # async (Serving, body) -> Prompts
    logprobs: Callable  # (TokenText, token_ids, logprobs, alternatives or None) -> the choice's log-prob object
    choice: Callable  # (index, echoed prompt text, text, log-probs, finish_reason) -> a reply's choice
    delta: Callable  # (index, text delta, log-probs, finish_reason) -> a streamed choice
    start: Callable  # index -> the streamed choices sent before the first delta


COMPLETIONS = Endpoint(False, "cmpl", "text_completion", "text_completion", completion_prompts, completion_logprobs,
                       _completion_choice, lambda i, text, lp, reason: _completion_choice(i, "", text, lp, reason),
                       lambda i: [])
CHAT = Endpoint(True, "chatcmpl", "chat.completion", "chat.completion.chunk", chat_prompt, chat_logprobs,
                _chat_choice, _chat_delta, _chat_start)


def usage(n_prompt: int, n_completion: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}


async def complete(s: Serving, ep: Endpoint, request, body: dict):
    """Serve one request of endpoint ``ep``: the reply (a dict), an async iterator of chunks (``stream: true``),
    or None when the client went away before the reply was ready."""
    params, stops = sampling_params(body, ep.chat, s.limits)
    req = await ep.prompts(s, body)
    engine, tokenizer, n, id_lists = s.engine, s.tokenizer, params.n, req.id_lists
    cid, created = f"{ep.id_prefix}-{uuid.uuid4().hex}", int(time.time())

    def lp_obj(toks, lps):
        return ep.logprobs(TokenText(tokenizer), toks, lps, None) if req.want_lp else None

    def queue_all():
        """One engine request per prompt, queued at once (admitted and prefilled together)."""
        try:
            return engine.stream_many(id_lists, params)
        except ValueError as e:
            raise APIError(400, str(e), None, "invalid_value") from None

    if body.get("stream"):
        q: asyncio.Queue = asyncio.Queue()
        rids, gens = queue_all()
        for k in range(len(id_lists) * n):
            for c in ep.start(k):
                q.put_nowait(c)

        async def one(pi, gen):
            async def emit(i, text, toks, lps, reason):
                await q.put(ep.delta(pi * n + i, text, lp_obj(toks, lps), reason))
            await relay(gen, tokenizer, n, stops, emit)

        async def chunks():
            try:
                async for choices in merged([one(pi, g) for pi, g in enumerate(gens)], q):
                    yield [{"id": cid, "object": ep.chunk_object, "created": created, "model": s.model_name,
                            "choices": [choice]} for choice in choices]
            finally:  # a request whose task never started has no generator to abort it
                for rid in rids:
                    engine.abort(rid)
        return chunks()

    accs = [[{"index": pi * n + i, "text": "", "toks": [], "lps": [], "finish_reason": "length" if req.score_only else None}
             for i in range(n)] for pi in range(len(id_lists))]

    async def collect(acc, gen):
        async def emit(i, text, toks, lps, reason):
            acc[i]["text"] += text
            acc[i]["toks"] += toks
            acc[i]["lps"] += lps
            acc[i]["finish_reason"] = reason or acc[i]["finish_reason"]
        await relay(gen, tokenizer, n, stops, emit)

    rescored = None
    try:
        if not req.score_only:
            rids, gens = queue_all()
            try:
                await unless_disconnected(request, asyncio.gather(*(collect(acc, g) for acc, g in zip(accs, gens))))
            finally:
                for rid in rids:
                    engine.abort(rid)
        if req.want_lp and (req.echo or req.n_alt):  # prompt log-probs or alternatives: re-score each choice
            prompts_per_choice = [ids for ids, acc in zip(id_lists, accs) for _ in acc]
            rescored = await unless_disconnected(request, rescore(
                engine, prompts_per_choice, [a["toks"] for acc in accs for a in acc], req.n_alt, req.echo))
    except ClientGone:
        return None

    def reply():
        tt = TokenText(tokenizer)
        echoed = [p if isinstance(p, str) else tokenizer.decode(ids) for p, ids in zip(req.sources, id_lists)] \
            if req.echo else [""] * len(id_lists)
        choices = []
        for k, (pi, a) in enumerate((pi, a) for pi, acc in enumerate(accs) for a in acc):
            if rescored is not None:
                ids_k, lps_k, tops_k = rescored[k]
                lp = ep.logprobs(tt, ids_k, lps_k, tops_k if req.n_alt else None)
            else:
                lp = ep.logprobs(tt, a["toks"], a["lps"], None) if req.want_lp else None
            choices.append(ep.choice(a["index"], echoed[pi], a["text"], lp, a["finish_reason"]))
        n_out = sum(len(a["toks"]) for acc in accs for a in acc)
        return {"id": cid, "object": ep.object, "created": created, "model": s.model_name,
                "choices": choices, "usage": usage(sum(len(i) for i in id_lists), n_out)}
    return await asyncio.to_thread(reply) if req.want_lp or req.echo else reply()
