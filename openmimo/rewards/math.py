"""The math reward: ``math_reward(response, gold) -> RewardResult`` with Math-Verify.

1. The answer is the last ``\\boxed{...}`` (or ``\\fbox{...}``) of the response *after* the
   reasoning block (text up to the last ``</think>``; configurable with ``think_end``; a response
   whose reasoning block never closes scores 0 unless ``require_think_end=False``).  With
   ``answer="last_math"`` the whole answer section is handed to Math-Verify's own extraction.
2. Gold and answer are parsed with Math-Verify (gold first, as its docs require) and compared
   with ``verify(gold, answer)``.  Gold formats: AIME strings with leading zeros ("025") and
   integers, AMC floats (27.0 -> 27), GSM8K worked solutions ("... #### 1,234"), MATH LaTeX.
3. It runs in a :class:`~openmimo.rewards.pool.RewardPool` worker with a per-sample timeout: a
   pathological answer (100k characters, deep braces, ``9^{9^{9^{9}}}``) scores 0 with the reason
   "timeout" and never blocks the caller.  Answers longer than ``max_answer_chars`` score 0 at once.

``verify_answer`` is the in-process function the workers run (and the test oracle).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future

from openmimo.config import ConfigError
from openmimo.rewards.pool import RewardPool, RewardResult

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
MAX_ANSWER_CHARS = 1000


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    return None


def answer_section(response: str, think_end: str | None = "</think>", require_think_end: bool = True) -> str | None:
    """The text after the reasoning block, or None when the block never closes."""
    if not think_end:
        return response
    if think_end in response:
        return response.rsplit(think_end, 1)[1]
    if "<think>" in response and require_think_end:
        return None  # the reasoning block was opened and never closed
    return response


def extract_answer(response: str, think_end: str | None = "</think>", require_think_end: bool = True) -> str | None:
    section = answer_section(response, think_end, require_think_end)
    return None if section is None else last_boxed(section)


def normalise_gold(gold) -> str:
    """Gold of any benchmark format -> a LaTeX string for Math-Verify."""
    if isinstance(gold, bool):
        raise TypeError("gold answer must be a number or a string, got a bool")
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, float):
        return str(int(gold)) if gold.is_integer() else repr(gold)
    g = str(gold).strip()
    if "####" in g:  # GSM8K worked solution
        g = g.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(g) if "\\boxed" in g else None
    return boxed if boxed is not None else g


def require_math_verify() -> None:
    """Fail at start-up, not as a zero reward for every sample, when math-verify is missing."""
    try:
        import math_verify  # noqa: F401
    except ImportError as e:
        raise ConfigError("the math reward needs the math-verify package, which is not installed "
                          "(pip install math-verify; openmimo's own install brings it)") from e


def _parse_gold(gold: str):
    from math_verify import parse

    for text in ("\\boxed{" + gold + "}", "$" + gold + "$", gold):
        parsed = parse(text, parsing_timeout=5)
        if parsed:
            return parsed
    return []


def gold_parses(gold) -> bool:
    """Whether Math-Verify can parse a gold answer (of any benchmark format); in this process."""
    try:
        return bool(_parse_gold(normalise_gold(gold)))
    except (TypeError, ValueError):
        return False


def verify_answer(answer: str, gold, mode: str = "boxed") -> RewardResult:
    """Compare an extracted answer with the gold answer in this process (runs inside a worker)."""
    from math_verify import parse, verify

    g = _parse_gold(normalise_gold(gold))
    if not g:
        return RewardResult(0.0, "gold answer could not be parsed")
    text = "\\boxed{" + answer + "}" if mode == "boxed" else answer
    p = parse(text, parsing_timeout=5)
    if not p:
        return RewardResult(0.0, "answer could not be parsed")
    ok = verify(g, p, timeout_seconds=5)
    return RewardResult(1.0 if ok else 0.0, "correct" if ok else "wrong answer")


def _score(response: str, gold, answer: str, think_end, require_think_end, max_answer_chars) -> RewardResult | str:
    """The cheap front half of the reward (in the caller): either a final result or the text to verify."""
    if answer == "boxed":
        ans = extract_answer(response, think_end, require_think_end)
        if ans is None:
            return RewardResult(0.0, "no \\boxed{} answer after the reasoning block")
    elif answer == "last_math":
        ans = answer_section(response, think_end, require_think_end)
        if ans is None:
            return RewardResult(0.0, "the reasoning block never closes")
        ans = ans[-max_answer_chars:]
    else:
        raise ValueError(f"answer must be 'boxed' or 'last_math', got {answer!r}")
    if not ans:
        return RewardResult(0.0, "empty answer")
    if len(ans) > max_answer_chars:
        return RewardResult(0.0, f"answer longer than {max_answer_chars} characters")
    return ans


_pool: RewardPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> RewardPool:
    """The process-wide reward pool (one worker per core), created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = RewardPool()
        return _pool


def submit_math_reward(response: str, gold, *, pool: RewardPool | None = None, timeout: float = 10.0,
                       answer: str = "boxed", think_end: str | None = "</think>", require_think_end: bool = True,
                       max_answer_chars: int = MAX_ANSWER_CHARS) -> Future:
    """Asynchronous form: a Future resolving to a RewardResult (never raising)."""
    front = _score(response, gold, answer, think_end, require_think_end, max_answer_chars)
    if isinstance(front, RewardResult):
        f: Future = Future()
        f.set_result(front)
        return f
    return (pool or default_pool()).submit(verify_answer, front, gold, answer, timeout=timeout)


def math_reward(response: str, gold, **kw) -> RewardResult:
    """Score one response against a gold answer: 1.0 if Math-Verify says they match, else 0.0."""
    return submit_math_reward(response, gold, **kw).result()


def math_rewards(responses, golds, **kw) -> list[RewardResult]:
    """Batched: all responses are scored concurrently through the pool."""
    futs = [submit_math_reward(r, g, **kw) for r, g in zip(responses, golds, strict=True)]
    return [f.result() for f in futs]
