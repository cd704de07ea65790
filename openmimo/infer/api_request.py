"""The server's request checks: the OpenAI error object, the JSON body, typed fields, sampling parameters and
prompt limits.  Every refusal is an :class:`APIError` naming the field (``param``) and why (``code``).

:class:`RequestLimits` holds what a request is checked against (context length, vocabulary, slots, the stop
tokens every request gets); :func:`read_body` parses and size-limits a body; :func:`sampling_params` turns a
completions or chat body into :class:`~openmimo.infer.engine.SamplingParams` and its stop strings.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass

from openmimo.infer.engine import SamplingParams
from openmimo.tokenizer import ENDOFTEXT

DEFAULT_MAX_BODY_BYTES = 8 * 2**20  # request bodies larger than this get HTTP 413
OFFLOAD_BYTES = 64 * 2**10  # JSON bodies larger than this are parsed in a worker thread
INT_MAX = 2**31 - 1


class APIError(Exception):
    """A refused request: HTTP ``status`` with the OpenAI error object (``message``, ``param``, ``code``)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def api_error_body(e: APIError) -> dict:
    return error_body(e.message, "invalid_request_error" if e.status < 500 else "server_error", e.param, e.code)


def short_repr(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def number(body: dict, key: str, kind, default, lo=None, hi=None, lo_open: bool = False):
    """``body[key]`` as a finite ``kind`` (int or float) in [lo, hi] (``lo_open``: (lo, hi]); bools are refused."""
    v = body.get(key, default)
    if v is None:
        v = default
    what = "an integer" if kind is int else "a number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise APIError(400, f"'{key}' must be {what}, got {short_repr(v)}", key, "invalid_type")
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


def boolean(body: dict, key: str, default: bool = False) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise APIError(400, f"'{key}' must be true or false, got {short_repr(v)}", key, "invalid_type")
    return v


def token_ids(v, key: str, vocab: int) -> list[int]:
    """A list of token ids (ints, not bools, inside the vocabulary)."""
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        raise APIError(400, f"'{key}' must be a list of integer token ids", key, "invalid_type")
    if any(not 0 <= t < vocab for t in v):
        raise APIError(400, f"'{key}' has token ids outside the vocabulary [0, {vocab})", key, "invalid_value")
    return v


def max_tokens_key(body: dict) -> str:
    """The field that carries the completion budget: ``max_completion_tokens`` when sent, else ``max_tokens``."""
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


@dataclass
class RequestLimits:
    """What requests to one engine are checked against."""

    max_len: int  # the context: prompt + completion tokens
    vocab: int
    slots: int  # the largest ``n``
    stop_ids: set  # stop tokens every request gets (end of text, the tokenizer's and the model's EOS)
    char_bound: int | None  # a text longer than this cannot fit the context (None: unknown)

    @classmethod
    def of(cls, engine, tokenizer) -> "RequestLimits":
        """The limits of an :class:`~openmimo.infer.engine.Engine` serving ``tokenizer``'s ids."""
        stop = {t for t in (tokenizer.eos_id, tokenizer.token_to_id(ENDOFTEXT), engine.cfg.eos_token_id) if t is not None}
        # A token covers at most ``longest`` characters, so a text of more than ``2 * max_len * longest``
        # characters cannot fit the context and is refused without tokenising it.
        try:
            longest = max(len(tokenizer.id_to_token(i) or "") for i in range(tokenizer.vocab_size))
            char_bound = 2 * engine.max_len * max(longest, 1)
        except (AttributeError, TypeError):
            char_bound = None
        return cls(engine.max_len, engine.cfg.vocab_size, engine.slots, stop, char_bound)

    def refuse_long_text(self, n_chars: int, key: str) -> None:
        if self.char_bound is not None and n_chars > self.char_bound:
            raise APIError(400, f"the prompt has {n_chars} characters, more than this model's context of "
                           f"{self.max_len} tokens can hold", key, "context_length_exceeded")

    def check_prompt(self, ids: list[int], key: str = "prompt") -> None:
        if not ids:
            raise APIError(400, "the prompt is empty", key, "invalid_value")
        if len(ids) >= self.max_len:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {self.max_len}", key,
                           "context_length_exceeded")
        token_ids(ids, key, self.vocab)


async def read_body(request, max_body_bytes: int, model_name: str) -> dict:
    """The request's JSON object, read at most ``max_body_bytes`` (413 beyond), naming a served model or none."""
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
        body = await asyncio.to_thread(json.loads, raw) if len(raw) > OFFLOAD_BYTES else json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise APIError(400, f"malformed JSON body: {e}", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the JSON body must be an object", None, "invalid_json")
    if body.get("model") not in (None, model_name):
        raise APIError(404, f"model {short_repr(body.get('model'))} does not exist (serving '{model_name}')", "model",
                       "model_not_found")
    return body


def sampling_params(body: dict, chat: bool, limits: RequestLimits) -> tuple[SamplingParams, list[str]]:
    """A completions (``chat`` False) or chat body -> the engine's sampling parameters and the stop strings.

    Also checks the fields the reply reads (``logprobs``, ``top_logprobs``, ``echo``) and refuses what the
    server does not do (penalties, streaming with echo or alternatives)."""
    key = max_tokens_key(body)
    max_tokens = number(body, key, int, limits.max_len if chat else 16, 1 if chat else 0, INT_MAX)
    if max_tokens == 0 and not boolean(body, "echo"):
        raise APIError(400, f"'{key}'=0 needs 'echo': true (prompt log-probs only)", key, "invalid_value")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, "'stop' must be a string or a list of non-empty strings", "stop", "invalid_type")
    ids = body.get("stop_token_ids")
    ids = token_ids([] if ids is None else ids, "stop_token_ids", limits.vocab)
    seed = body.get("seed")
    if seed is not None:
        seed = number(body, "seed", int, None, 0, 2**63 - 1)
    for k in ("presence_penalty", "frequency_penalty"):
        if number(body, k, float, 0.0, -2.0, 2.0) != 0.0:
            raise APIError(400, f"'{k}' is not supported by this server (only 0)", k, "unsupported_parameter")
    if chat:
        boolean(body, "logprobs")
        alternatives = number(body, "top_logprobs", int, 0, 0, 20)
    else:
        alternatives = 0 if body.get("logprobs") is None else number(body, "logprobs", int, 0, 0, 20)
        boolean(body, "echo")
    if boolean(body, "stream") and (alternatives or body.get("echo")):
        what = "'echo'" if body.get("echo") else "'top_logprobs'" if chat else "'logprobs' > 0"
        raise APIError(400, f"{what} is not supported with 'stream': true", "stream", "unsupported_parameter")
    p = SamplingParams(max_new_tokens=max(max_tokens, 1), temperature=number(body, "temperature", float, 1.0, 0.0, 100.0),
                       top_p=number(body, "top_p", float, 1.0, 0.0, 1.0, lo_open=True),
                       top_k=number(body, "top_k", int, 0, 0, INT_MAX), stop_ids=tuple(limits.stop_ids | set(ids)),
                       seed=seed, n=number(body, "n", int, 1, 1, limits.slots))
    try:
        p.check()
    except ValueError as e:
        raise APIError(400, str(e), None, "invalid_value") from None
    return p, stop
