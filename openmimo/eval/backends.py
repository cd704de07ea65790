"""Where `openmimo eval` gets its samples: our engine on a checkpoint, or any OpenAI-compatible server.

Both take a list of :class:`Request` (one prompt, ``n`` samples) and call ``on_done(request,
samples)`` as each prompt's samples finish, so the caller scores them while generation continues.
A sample is a :class:`Sample`; one whose request kept failing carries ``error`` (it scores 0 and is
counted).

* :class:`EngineBackend` -- the continuous-batching engine in this process (MTP speculation where
  the checkpoint has MTP layers); chat prompts are rendered with the checkpoint's own template.
* :class:`EndpointBackend` -- ``/v1/chat/completions`` (chat: the messages are sent, the server
  applies its template) or ``/v1/completions`` (base / few-shot prompts) through the ``openai``
  client, ``concurrency`` requests at once, retries with exponential backoff.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from openmimo.chat import format_assistant
from openmimo.tokenizer import ENDOFTEXT


@dataclass
class Request:
    key: str  # unique: task/record id
    prompt: str | list  # text (base / few-shot), or chat messages
    n: int  # samples wanted
    seed: int
    stop: list[str] = field(default_factory=list)


@dataclass
class Sample:
    text: str
    tokens: int  # completion tokens
    finish_reason: str | None
    error: str | None = None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


class EngineBackend:
    """Generation with openmimo's engine (continuous batching) on a checkpoint in this process."""

    def __init__(self, engine, tokenizer, *, temperature: float, top_p: float, max_tokens: int):
        self.engine, self.tok = engine, tokenizer
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.name = "engine"

    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, list):  # chat messages: the checkpoint's own template + generation prompt
            return self.tok.encode(self.tok.apply_chat_template(prompt, add_generation_prompt=True))
        return self.tok.encode(prompt)

    def run(self, requests: Sequence[Request], on_done: Callable[[Request, list[Sample]], None],
            on_tokens: Callable[[int], None] | None = None) -> None:
        from openmimo.infer.engine import Completion, SamplingParams

        # the server's stop set: the tokenizer's eos, <|endoftext|> (a base model ends documents with it), the model's eos
        stop_ids = tuple(sorted(t for t in {self.tok.eos_id, self.tok.token_to_id(ENDOFTEXT), self.engine.cfg.eos_token_id}
                                if isinstance(t, int)))
        acc, left, by_id = {}, {}, {}
        for r in requests:
            ids = self.encode(r.prompt)
            room = self.engine.max_len - len(ids)
            if room < 1:
                on_done(r, [Sample("", 0, None, f"the prompt has {len(ids)} tokens; the context is "
                                                f"{self.engine.max_len}")] * r.n)
                continue
            params = SamplingParams(max_new_tokens=min(self.max_tokens, room), temperature=self.temperature,
                                    top_p=self.top_p, stop_ids=stop_ids, seed=r.seed, n=r.n)
            rid = self.engine.add_request(ids, params)
            acc[rid] = [Completion(rid, i, ids) for i in range(r.n)]
            left[rid], by_id[rid] = r.n, r
        while self.engine.has_unfinished():
            new = 0
            for o in self.engine.step():
                if o.request_id not in acc:
                    continue
                new += len(o.token_ids)
                if acc[o.request_id][o.index].extend(o):
                    left[o.request_id] -= 1
                    if left[o.request_id] == 0:
                        r = by_id[o.request_id]
                        on_done(r, [self._sample(c, r.stop) for c in acc.pop(o.request_id)])
            if on_tokens and new:
                on_tokens(new)

    def _sample(self, c, stops) -> Sample:
        text, stopped = cut_at_stop(self.tok.decode(c.token_ids, skip_special_tokens=True), stops)
        return Sample(text, len(c.token_ids), "stop" if stopped else c.finish_reason)


class EndpointBackend:
    """Any OpenAI-compatible server (ours, vLLM, SGLang) through the ``openai`` client."""

    def __init__(self, base_url: str, model: str | None, *, temperature: float, top_p: float, max_tokens: int,
                 concurrency: int = 16, retries: int = 4, timeout: float = 600.0, api_key: str = "EMPTY"):
        import openai  # optional: only --endpoint needs the client

        url = base_url.rstrip("/")
        self.client = openai.OpenAI(base_url=url if url.endswith("/v1") else url + "/v1", api_key=api_key,
                                    max_retries=0, timeout=timeout)
        self.errors = (openai.APIError, openai.APIConnectionError, openai.APITimeoutError)
        self.temperature, self.top_p, self.max_tokens = temperature, top_p, max_tokens
        self.concurrency, self.retries = concurrency, retries
        self.model = model or self._first_model()
        self.name = f"endpoint {url} ({self.model})"

    def _first_model(self) -> str:
        from openmimo.config import UsageError

        try:
            models = self.client.models.list().data
        except Exception as e:  # noqa: BLE001 -- any failure here is the same usage error
            raise UsageError(f"cannot list the endpoint's models ({type(e).__name__}: {e}); pass --api-model") from None
        if not models:
            raise UsageError("the endpoint serves no models; pass --api-model")
        return models[0].id

    def _once(self, r: Request) -> list[Sample]:
        kw = dict(model=self.model, n=r.n, temperature=self.temperature, top_p=self.top_p,
                  max_tokens=self.max_tokens, seed=r.seed)
        if r.stop:
            kw["stop"] = r.stop
        if isinstance(r.prompt, list):
            resp = self.client.chat.completions.create(messages=r.prompt, **kw)
            texts = []
            for ch in resp.choices:
                # servers with a reasoning parser return the think block apart (reasoning_content)
                reasoning = getattr(ch.message, "reasoning_content", None) or \
                    (ch.message.model_extra or {}).get("reasoning_content")
                texts.append((format_assistant(ch.message.content or "", reasoning) if reasoning else
                              ch.message.content or "", ch.finish_reason))
        else:
            resp = self.client.completions.create(prompt=r.prompt, **kw)
            texts = [(ch.text, ch.finish_reason) for ch in resp.choices]
        if len(texts) != r.n:
            raise ValueError(f"asked for {r.n} samples, the server returned {len(texts)}")
        total = getattr(resp.usage, "completion_tokens", None) if resp.usage else None
        each = [total // r.n if total is not None else len(t.split()) for t, _ in texts]
        out = []
        for (text, reason), tokens in zip(texts, each):
            text, stopped = cut_at_stop(text, r.stop)
            out.append(Sample(text, tokens, "stop" if stopped else reason))
        return out

    def _request(self, r: Request) -> list[Sample]:
        delay, last = 1.0, ""
        for attempt in range(self.retries + 1):
            try:
                return self._once(r)
            except self.errors + (ValueError,) as e:
                last = f"{type(e).__name__}: {e}"[:300]
                status = getattr(e, "status_code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
                    break  # the request itself is wrong; retrying cannot help
                if attempt < self.retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
        return [Sample("", 0, None, f"request failed after {attempt + 1} attempts: {last}")] * r.n

    def run(self, requests: Sequence[Request], on_done: Callable[[Request, list[Sample]], None],
            on_tokens: Callable[[int], None] | None = None) -> None:
        lock = threading.Lock()

        def one(r: Request) -> None:
            samples = self._request(r)
            with lock:
                if on_tokens:
                    on_tokens(sum(s.tokens for s in samples))
                on_done(r, samples)

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as ex:
            for f in [ex.submit(one, r) for r in requests]:
                f.result()
