"""The OpenAI-API pieces that evaluation tools rely on, used by ``server.py`` and ``completions.py``: log-prob objects (with
``top_logprobs``) for completions and chat, ``echo`` and prompt log-probs, and vLLM's tokenizer endpoints.

Log-probs with alternatives come from re-scoring the whole sequence (prompt and completion) in one batched
forward (:meth:`AsyncEngine.score`): entry i is token i's log-prob given the tokens before it, under the
model's raw distribution (temperature 1), and its ``top_logprobs`` hold the ``logprobs`` most likely tokens
there plus the token itself when it is not among them (as OpenAI documents: up to ``logprobs + 1`` entries).
The token and its alternatives come from one computation, so a greedy token's log-prob equals the best
alternative's exactly (lm-evaluation-harness's ``is_greedy`` test).  With ``echo`` the prompt's tokens come
first; the first prompt token has no context, so its log-prob and alternatives are ``null``.
Without alternatives (``logprobs: 0`` and no echo) the engine's own per-token log-probs are returned.

Token strings are each token decoded alone; ``text_offset`` is the running length of those strings, from
0 at the start of the choice's text.

Endpoints added here: ``POST /tokenize`` (``{"prompt": str}`` or ``{"messages": [...]}`` ->
``{"tokens", "count", "max_model_len"}``), ``POST /detokenize`` (``{"tokens": [...]}`` -> ``{"prompt"}``) and
``GET /tokenizer_info`` (special tokens, chat template, context length), the names vLLM uses and
lm-evaluation-harness probes to tokenise through the server.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import asyncio

from openmimo.infer.api_request import APIError


class TokenText:
    """Each token decoded alone, cached (a reply repeats tokens across its alternatives)."""

    def __init__(self, tokenizer):
        self.tokenizer, self._cache = tokenizer, {}

    def __call__(self, t: int) -> str:
        s = self._cache.get(t)
        if s is None:
            s = self._cache[t] = self.tokenizer.decode([t])
        return s


def _top_dict(text: TokenText, top, token: int, lp: float) -> dict:
    """{token string: log-prob} of the alternatives, the chosen token added when missing (strings that collide
    keep their best log-prob)."""
    out: dict = {}
    for t, v in list(top) + [(token, lp)]:
        s = text(t)
        if s not in out or v > out[s]:
            out[s] = v
    return out


def completion_logprobs(text: TokenText, ids: list[int], token_lps: list, tops: list | None) -> dict:
    """The completions ``logprobs`` object of tokens ``ids`` (``tops``: per token, [(id, lp), ...] or None;
    None for all: no alternatives asked)."""
    strs = [text(t) for t in ids]
    offsets, at = [], 0
    for s in strs:
        offsets.append(at)
        at += len(s)
    top = None
    if tops is not None:
        top = [None if tp is None else _top_dict(text, tp, t, lp) for t, lp, tp in zip(ids, token_lps, tops)]
    return {"tokens": strs, "token_logprobs": list(token_lps), "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(text: TokenText, ids: list[int], token_lps: list, tops: list | None) -> dict:
    """The chat ``logprobs`` object: ``{"content": [{token, logprob, bytes, top_logprobs}, ...]}``."""
    content = []
    for i, (t, lp) in enumerate(zip(ids, token_lps)):
        s = text(t)
        alts = [] if tops is None else [{"token": text(a), "logprob": v, "bytes": list(text(a).encode())}
                                        for a, v in tops[i]]
        content.append({"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": alts})
    return {"content": content}


async def rescore(engine, prompts: list[list[int]], completions: list[list[int]], top_n: int, echo: bool):
    """Per choice: (token ids, their log-probs, their alternatives or None) over the prompt (with ``echo``) and
    the completion, from one batched scoring call.  Identical sequences are scored once."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    unique = list(dict.fromkeys(tuple(s) for s in seqs))
    scored = dict(zip(unique, await engine.score([list(s) for s in unique], top_n)))
    out = []
    for p, s in zip(prompts, seqs):
        r = scored[tuple(s)]
        start = 0 if echo else len(p)
        out.append((s[start:], r.token_logprobs[start:], r.top[start:] if top_n else None))
    return out


def add_tokenizer_routes(app, tokenizer, max_len: int, read_body) -> None:
    """vLLM's ``/tokenize`` and ``/detokenize``, and ``/tokenizer_info``; ``read_body(request)`` parses and checks a
    JSON body."""
    from fastapi import Request  # the optional `serve` extra (see server.py)

    vocab = tokenizer.vocab_size

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await read_body(request)
        if body.get("messages") is not None:
            msgs = body["messages"]
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m for m in msgs):
                raise APIError(400, "'messages' must be a list of {role, content} objects", "messages", "invalid_type")
            add_gen = body.get("add_generation_prompt", True)
            try:
                ids, _ = await asyncio.to_thread(tokenizer.render_chat, msgs, add_generation_prompt=bool(add_gen))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise APIError(400, f"bad messages: {e}", "messages", "invalid_value") from None
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise APIError(400, "'prompt' must be a string (or send 'messages')", "prompt", "invalid_type")
            ids = await asyncio.to_thread(tokenizer.encode, prompt)
        reply = {"count": len(ids), "max_model_len": max_len, "tokens": ids}
        if body.get("return_token_strs"):
            reply["token_strs"] = [tokenizer.id_to_token(t) for t in ids]
        return reply

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read_body(request)
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise APIError(400, "'tokens' must be a list of integer token ids", "tokens", "invalid_type")
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"'tokens' has ids outside the vocabulary [0, {vocab})", "tokens", "invalid_value")
        return {"prompt": await asyncio.to_thread(tokenizer.decode, ids)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.eos_token,
                "bos_token": tokenizer.bos_token, "pad_token": tokenizer.pad_token,
                "chat_template": getattr(tokenizer, "chat_template", None), "model_max_length": max_len,
                "vocab_size": vocab}
