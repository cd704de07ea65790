"""`openmimo synth CONFIG`: synthetic reasoning data from any OpenAI-compatible endpoint, by rejection sampling.

Problems in (JSONL: math records with ``problem`` + ``answer``; code records with a statement —
``question_content`` / ``prompt`` / ``problem`` — and ``tests``), ``samples`` chat completions each
from the endpoint (our own ``openmimo serve``, vLLM, SGLang, a hosted API), each scored by the
project's rewards (Math-Verify for math in the reward pool's processes; the isolated judge for code).
A sample is kept when its reward is 1, it has a closed reasoning block (``require_reasoning``), and
it is not a duplicate of one already kept for that problem; at most ``keep_per_problem`` per problem.
Kept samples are written as SFT ``messages`` records (``output``) and, when ``pretrain_output`` is set,
as plain-text reasoning documents (``{"text": "Problem: ...\\nSolution: <think>...</think>..."}``)
that pre-training takes as its ``synthetic`` source once tokenised into shards.

Requests run concurrently (at most ``concurrency`` in flight); a failed request is retried with
exponential backoff (``retries``, ``backoff_s``) and, when it keeps failing, counted and skipped.
Progress is a state file next to the output (``OUTPUT.state.jsonl``, one line per finished problem,
written after its records): a killed run started again with the same output continues with the
problems not yet finished.  The counts — kept, rejected by reason, failed requests, duplicates and
tokens used — are printed and written to ``OUTPUT.counts.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from openmimo.chat import format_assistant, split_reasoning
from openmimo.config import ConfigError
from openmimo.eval.prompts import lcb_prompt, math_chat_message
from openmimo.jsonl import iter_jsonl


@dataclass
class SynthConfig:
    endpoint: str = "http://127.0.0.1:8000/v1"  # base URL of an OpenAI-compatible API
    api_model: str = ""  # model name sent with each request ("" = the first one /v1/models lists)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the API key (unset: "none")
    problems: str | list[str] = ""  # JSONL problem file(s)
    kind: str = "auto"  # math | code | auto (per record: code when it has "tests")
    limit: int = 0  # the first N problems of each file (0 = all)
    samples: int = 4  # completions requested per problem
    keep_per_problem: int = 1  # verified, distinct completions kept per problem
    require_reasoning: bool = True  # keep only completions with a closed <think>...</think> block
    system_prompt: str = ""  # optional system turn
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 4096
    concurrency: int = 16  # requests in flight
    retries: int = 4  # retries of a failed request (then it is counted and skipped)
    backoff_s: float = 1.0  # first retry delay; doubled each time, with jitter
    request_timeout_s: float = 600.0
    reward_workers: int = 2  # math-reward processes
    reward_timeout_s: float = 10.0
    output: str = "synth/sft.jsonl"  # SFT messages JSONL (appended; resumable)
    pretrain_output: str = ""  # plain-text reasoning documents JSONL ({"text"}) for pre-training ("" = none)

    def check(self):
        if not self.problems:
            raise ValueError("key 'problems' is required (JSONL problem file(s))")
        if self.kind not in ("math", "code", "auto"):
            raise ValueError(f"key 'kind' must be math, code or auto, got {self.kind!r}")
        if self.samples < 1 or self.keep_per_problem < 1 or self.concurrency < 1 or self.retries < 0:
            raise ValueError("key 'samples', 'keep_per_problem', 'concurrency' must be >= 1 and 'retries' >= 0")
        if self.max_tokens < 1 or not 0 <= self.temperature <= 2 or not 0 < self.top_p <= 1:
            raise ValueError("key 'max_tokens' must be >= 1, 'temperature' in [0, 2], 'top_p' in (0, 1]")


# -- problems --------------------------------------------------------------------------------------
def load_synth_problems(paths, kind: str, limit: int = 0) -> tuple[list[dict], dict]:
    """Problem records with ``_key`` (file:line-independent identity: the statement), ``_kind`` and ``_prompt``;
    identical statements are kept once (counted)."""
    out, seen, counts = [], set(), {"read": 0, "duplicate_problems": 0, "math": 0, "code": 0}
    for p in [paths] if isinstance(paths, str) else list(paths):
        n = 0
        for ln, rec in iter_jsonl(Path(p), what="problem file"):
            k = kind if kind != "auto" else ("code" if "tests" in rec else "math")
            if k == "math":
                if not isinstance(rec.get("problem"), str) or "answer" not in rec:
                    raise ConfigError(f"{p}:{ln}: a math problem needs 'problem' and 'answer'")
                stmt, prompt = rec["problem"], math_chat_message(rec["problem"])
            else:
                stmt = next((rec[f] for f in ("question_content", "prompt", "problem") if isinstance(rec.get(f), str)), None)
                if stmt is None or "tests" not in rec:
                    raise ConfigError(f"{p}:{ln}: a code problem needs a statement (question_content) and 'tests'")
                prompt = lcb_prompt(stmt, rec.get("starter_code") or "")
            counts["read"] += 1
            n += 1
            key = f"{k}:{stmt.strip()}"
            if key in seen:
                counts["duplicate_problems"] += 1
            else:
                seen.add(key)
                counts[k] += 1
                out.append({**rec, "_key": key, "_kind": k, "_prompt": prompt, "_stmt": stmt})
            if limit and n >= limit:
                break
    return out, counts


def _norm(text: str) -> str:
    return " ".join(text.split())


# -- the run ----------------------------------------------------------------------------------------
class Synth:
    """One run: ``asyncio.run(Synth(cfg).run())``; the client and the score function can be replaced (tests)."""

    def __init__(self, cfg: SynthConfig, client=None, score=None):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.state_path = self.out.with_name(self.out.name + ".state.jsonl")
        self.client = client
        self.score = score
        self.pool = None
        self.counts = {"problems": 0, "skipped_done": 0, "requests": 0, "failed_requests": 0, "retries": 0,
                       "responses": 0, "verified": 0, "kept": 0, "duplicates": 0, "surplus": 0, "rejected": {}, "errors": {},
                       "prompt_tokens": 0, "completion_tokens": 0}

    # -- resume
    def done_keys(self) -> set[str]:
        """Problems finished by an earlier run of this output (a line cut by a kill is removed first)."""
        done = set()
        for path in (self.state_path, self.out):
            if not path.is_file():
                continue
            raw = path.read_bytes()
            cut = raw.rfind(b"\n") + 1
            if cut < len(raw):
                with open(path, "r+b") as f:
                    f.truncate(cut)
            for line in raw[:cut].decode("utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done.add(rec.get("key") or rec.get("source", {}).get("key"))
        return done

    # -- requests
    async def _complete(self, model: str, messages: list[dict]):
        c = self.cfg
        delay = c.backoff_s
        for attempt in range(c.retries + 1):
            try:
                self.counts["requests"] += 1
                return await self.client.chat.completions.create(
                    model=model, messages=messages, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens)
            except Exception as e:  # noqa: BLE001 - any failure of a request is retried, then counted
                name = type(e).__name__
                status = getattr(e, "status_code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
                    self.counts["errors"][name] = self.counts["errors"].get(name, 0) + 1
                    return None  # a refused request does not improve by retrying
                if attempt == c.retries:
                    self.counts["errors"][name] = self.counts["errors"].get(name, 0) + 1
                    return None
                self.counts["retries"] += 1
                await asyncio.sleep(delay * (1 + random.random()))
                delay *= 2
        return None

    def _default_score(self, problem: dict, text: str):
        """A concurrent Future[RewardResult] (never raising)."""
        if problem["_kind"] == "math":
            from openmimo.rewards.math import submit_math_reward

            return submit_math_reward(text, problem["answer"], pool=self.pool, timeout=self.cfg.reward_timeout_s)
        from openmimo.rewards.adapters import submit_code_reward

        record = {k: problem[k] for k in ("tests", "fn_name", "metadata") if k in problem}
        return submit_code_reward(text, record, levels=problem.get("test_levels"))

    async def _problem(self, model: str, problem: dict, sem: asyncio.Semaphore, files) -> None:
        c = self.cfg
        messages = ([{"role": "system", "content": c.system_prompt}] if c.system_prompt else []) + \
            [{"role": "user", "content": problem["_prompt"]}]

        async def one():
            async with sem:
                return await self._complete(model, messages)

        replies = await asyncio.gather(*(one() for _ in range(c.samples)))
        texts = []
        for r in replies:
            if r is None:
                self.counts["failed_requests"] += 1
                continue
            if r.usage is not None:
                self.counts["prompt_tokens"] += r.usage.prompt_tokens or 0
                self.counts["completion_tokens"] += r.usage.completion_tokens or 0
            for ch in r.choices:
                msg = ch.message
                reasoning = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get("reasoning_content")
                texts.append((format_assistant(msg.content or "", reasoning) if reasoning else (msg.content or ""),
                              ch.finish_reason))
        self.counts["responses"] += len(texts)
        futures = []
        for text, finish in texts:
            if finish == "length":
                futures.append(None)
                self._reject("truncated (max_tokens)")
            elif c.require_reasoning and "</think>" not in text:
                futures.append(None)
                self._reject("no closed reasoning block")
            else:
                futures.append(asyncio.wrap_future((self.score or self._default_score)(problem, text)))
        kept, seen = [], set()
        for (text, _), fut in zip(texts, futures):
            if fut is None:
                continue
            res = await fut
            if res.score != 1.0:
                self._reject(res.reason or "wrong")
                continue
            self.counts["verified"] += 1
            key = _norm(text)
            if key in seen:
                self.counts["duplicates"] += 1
            elif len(kept) >= c.keep_per_problem:
                self.counts["surplus"] += 1  # verified, but the problem has its keep_per_problem already
            else:
                seen.add(key)
                kept.append(text)
        self._write(problem, model, kept, files)

    def _reject(self, reason: str) -> None:
        self.counts["rejected"][reason] = self.counts["rejected"].get(reason, 0) + 1

    def _write(self, problem: dict, model: str, kept: list[str], files) -> None:
        out, pre, state = files
        for i, text in enumerate(kept):
            reasoning, answer = split_reasoning(text)
            msg = {"role": "assistant", "content": answer}
            if reasoning is not None:
                msg["reasoning_content"] = reasoning
            src = {"key": problem["_key"], "model": model, "sample": i}
            for k in ("id", "unique_id", "question_id", "task_id", "level"):
                if k in problem:
                    src[k] = problem[k]
            msgs = ([{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []) + \
                [{"role": "user", "content": problem["_prompt"]}, msg]
            out.write(json.dumps({"messages": msgs, "source": src}) + "\n")
            if pre is not None:
                pre.write(json.dumps({"text": f"Problem: {problem['_stmt']}\nSolution: {text}", "source": src}) + "\n")
        out.flush()
        if pre is not None:
            pre.flush()
        self.counts["kept"] += len(kept)
        state.write(json.dumps({"key": problem["_key"], "kept": len(kept)}) + "\n")
        state.flush()
        os.fsync(state.fileno())

    async def run(self) -> dict:
        c = self.cfg
        problems, pcounts = load_synth_problems(c.problems, c.kind, c.limit)
        done = self.done_keys()
        todo = [p for p in problems if p["_key"] not in done]
        self.counts.update({"problems": len(problems), "skipped_done": len(problems) - len(todo), "input": pcounts})
        if self.client is None:
            import openai  # lazy: the client library only for a real run

            self.client = openai.AsyncOpenAI(base_url=c.endpoint, api_key=os.environ.get(c.api_key_env) or "none",
                                             max_retries=0, timeout=c.request_timeout_s)
        model = c.api_model or (await self.client.models.list()).data[0].id
        if self.score is None and any(p["_kind"] == "math" for p in todo):
            from openmimo.rewards.math import require_math_verify
            from openmimo.rewards.pool import RewardPool

            require_math_verify()
            self.pool = RewardPool(c.reward_workers, timeout=c.reward_timeout_s)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        sem = asyncio.Semaphore(c.concurrency)
        pre_path = Path(c.pretrain_output) if c.pretrain_output else None
        if pre_path is not None:
            pre_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.out, "a") as out, open(self.state_path, "a") as state, \
                    (open(pre_path, "a") if pre_path else contextlib.nullcontext()) as pre:
                files = (out, pre, state)
                await asyncio.gather(*(self._problem(model, p, sem, files) for p in todo))
        finally:
            if self.pool is not None:
                self.pool.close()
        self.counts["wall_s"] = time.time() - t0
        self.counts["completion_tokens_per_s"] = self.counts["completion_tokens"] / max(self.counts["wall_s"], 1e-9)
        self.out.with_name(self.out.name + ".counts.json").write_text(json.dumps(self.counts, indent=1) + "\n")
        return self.counts


def main(cfg: SynthConfig) -> dict:
    counts = asyncio.run(Synth(cfg).run())
    rej = ", ".join(f"{k}: {v}" for k, v in sorted(counts["rejected"].items())) or "none"
    print(f"[synth] {counts['problems']} problems ({counts['skipped_done']} already done); {counts['responses']} "
          f"responses, {counts['verified']} verified, {counts['kept']} kept -> {cfg.output}; rejected: {rej}; "
          f"{counts['duplicates']} duplicates, {counts['surplus']} over keep_per_problem; {counts['failed_requests']} failed requests "
          f"({counts['retries']} retries); tokens {counts['prompt_tokens']} prompt + {counts['completion_tokens']} "
          f"completion in {counts['wall_s']:.0f}s", flush=True)
    return counts


def add_arguments(parser):
    from openmimo.config import config_args

    config_args(parser, resume=False, example="endpoint=http://127.0.0.1:8000/v1 problems=problems.jsonl samples=8")


def run(args):
    from openmimo.config import load_stage_config

    main(load_stage_config(SynthConfig, args))
