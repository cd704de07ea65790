"""Plug the rewards into the tools users already run.

* verl: ``compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float`` --
  point verl's ``custom_reward_function.path`` at this file (``name: compute_score``).  Math data
  sources go to :func:`~openmimo.rewards.math.math_reward`; code data sources run the completion's
  last fenced Python block through the judge and score it with :func:`~openmimo.rewards.code.code_reward`
  (scheme and test levels from ``extra_info``: ``{"scheme": "soft", "test_levels": [...]}``).
* TRL: ``trl_math_reward(prompts, completions, answer, **kwargs) -> list[float]`` and
  ``trl_code_reward(prompts, completions, tests, **kwargs) -> list[float]`` for ``GRPOTrainer``'s
  ``reward_funcs`` (dataset columns arrive as keyword lists; conversational completions are
  accepted).  ``make_trl_math_reward`` / ``make_trl_code_reward`` pick other column names.

Test formats understood by :func:`tests_from_record`: our own list of test dicts; LiveCodeBench /
PRIME / APPS style ``{"inputs": [...], "outputs": [...], "fn_name": ...}``; SandboxFusion
CodeContests ``[{"input": {"stdin": ...}, "output": {"stdout": ...}}]``; MBPP ``test_list`` asserts
(+ ``test_setup_code``).  JSON strings of any of these are decoded first.
"""

from __future__ import annotations

import ast
import json
import re

from openmimo.rewards.code import code_reward
from openmimo.rewards.math import answer_section, math_reward, submit_math_reward
from openmimo.rewards.pool import RewardResult

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
MATH_SOURCES = ("gsm8k", "math", "aime", "amc", "numina", "deepscaler", "olympiad", "minerva", "dapo")
# LiveCodeBench and LeetCode graders run call-based solutions after these imports (``List`` etc.)
CALL_PRELUDE = ("from typing import *\nfrom collections import *\nfrom functools import *\nfrom itertools import *\n"
                "from heapq import *\nfrom bisect import *\nimport math, string, re, sys\n")
CODE_SOURCES = ("code", "livecodebench", "lcb", "apps", "taco", "mbpp", "humaneval", "codeforces", "leetcode",
                "primeintellect", "kodcode")


def extract_code(completion: str, think_end: str | None = "</think>") -> str | None:
    """The last fenced code block (``python``/``py``/unlabelled) after the reasoning block, or None."""
    section = answer_section(completion, think_end, require_think_end=True)
    if section is None:
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(section)]
    for lang, body in reversed(blocks):
        if lang in ("python", "python3", "py", ""):
            return body
    return None


def _maybe_json(x):
    if isinstance(x, str):
        s = x.strip()
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return ast.literal_eval(s)  # Python-literal lists, as in some dataset dumps
    return x


def _args_of(inp):
    """LiveCodeBench functional input: one JSON value per line -> the argument list."""
    if isinstance(inp, list):
        return inp
    return [json.loads(line) for line in str(inp).split("\n") if line.strip()]


def _functional(test: dict, fn) -> dict:
    """{input, output, testtype: functional} + the function name -> a call-based judge test."""
    if test.get("testtype") != "functional" or "fn" in test:
        return test
    if not fn or fn == "None":
        raise ValueError("a functional test needs the record's fn_name (or metadata.func_name)")
    extra = {k: v for k, v in test.items() if k not in ("input", "output", "testtype")}
    return {"fn": fn, "args": _args_of(test["input"]), "expected": _maybe_json(test["output"]), **extra}


def tests_from_record(gt) -> list[dict]:
    """Any supported test format (see the module docstring) -> the judge's list of test dicts."""
    gt = _maybe_json(gt)
    if isinstance(gt, dict) and "tests" in gt:
        # A LiveCodeBench-style record: its functional tests need the record's function name.
        fn = gt.get("fn_name") or (_maybe_json(gt.get("metadata")) or {}).get("func_name")
        return [_functional(t, fn) for t in tests_from_record(gt["tests"])]
    if isinstance(gt, dict) and "inputs" in gt and "outputs" in gt:
        ins, outs = _maybe_json(gt["inputs"]), _maybe_json(gt["outputs"])
        fn = gt.get("fn_name")
        if fn and fn != "None":
            return [{"fn": fn, "args": _args_of(i), "expected": _maybe_json(o)} for i, o in zip(ins, outs, strict=True)]
        return [{"input": i, "output": o} for i, o in zip(ins, outs, strict=True)]
    if isinstance(gt, dict) and ("test_list" in gt or "test" in gt and isinstance(_maybe_json(gt["test"]), list)):
        asserts = _maybe_json(gt.get("test_list", gt.get("test")))
        if asserts and isinstance(asserts[0], dict):
            return tests_from_record(asserts)
        setup = gt.get("test_setup_code", "") or ""
        return [{"check": (setup + "\n" + a).strip()} for a in asserts]
    if isinstance(gt, list):
        out = []
        for t in gt:
            t = _maybe_json(t)
            if isinstance(t, dict) and isinstance(t.get("input"), dict):  # SandboxFusion CodeContests
                out.append({"input": t["input"].get("stdin", ""), "output": t.get("output", {}).get("stdout", "")})
            elif isinstance(t, dict):
                out.append(t)
            elif isinstance(t, str) and t.lstrip().startswith("assert"):
                out.append({"check": t})
            else:
                raise ValueError(f"unsupported test entry: {str(t)[:80]!r}")
        return out
    raise ValueError(f"unsupported test format: {str(gt)[:80]!r}")


def score_code(completion: str, tests, levels=None, scheme: str = "soft", level_scores=None, judge=None,
               limits=None) -> RewardResult:
    """Extract the program, judge it, and score it with the chosen scheme."""
    from openmimo.rewards.sandbox import default_judge

    code = extract_code(completion)
    if code is None:
        return RewardResult(0.0, "no fenced Python code block after the reasoning block")
    tl = tests_from_record(tests)
    if any(t.get("fn") for t in tl):
        code = CALL_PRELUDE + code
    verdicts = (judge or default_judge()).run(code, tl, limits, stop_early=(scheme == "binary"))
    score = code_reward(verdicts, levels, scheme, level_scores)
    n = sum(v.passed for v in verdicts)
    return RewardResult(score, f"{n}/{len(verdicts)} tests passed ({scheme})")


def submit_code_reward(completion: str, tests, levels=None, scheme: str = "soft", level_scores=None, judge=None,
                       limits=None):
    """Asynchronous :func:`score_code`: a Future[RewardResult] that never raises.

    Prefer this to wrapping ``score_code`` in a :class:`~openmimo.rewards.pool.RewardPool`: the judge
    already runs programs in parallel, isolated and time-limited, so no extra process is needed (a
    pool worker would start its own judge, one sandbox per core, in every worker)."""
    from concurrent.futures import Future

    from openmimo.rewards.sandbox import default_judge

    out: Future = Future()
    code = extract_code(completion)
    if code is None:
        out.set_result(RewardResult(0.0, "no fenced Python code block after the reasoning block"))
        return out
    try:
        tl = tests_from_record(tests)
        if any(t.get("fn") for t in tl):
            code = CALL_PRELUDE + code
        fut = (judge or default_judge()).submit(code, tl, limits, stop_early=(scheme == "binary"))
    except (ValueError, TypeError, SyntaxError) as e:
        out.set_result(RewardResult(0.0, f"bad tests: {e}"[:200]))
        return out

    def done(f):
        try:
            v = f.result()
            n = sum(x.passed for x in v)
            out.set_result(RewardResult(code_reward(v, levels, scheme, level_scores),
                                        f"{n}/{len(v)} tests passed ({scheme})"))
        except Exception as e:  # noqa: BLE001 -- a reward never raises
            out.set_result(RewardResult(0.0, f"error: {type(e).__name__}: {e}"[:200]))

    fut.add_done_callback(done)
    return out


def _is_code_source(data_source: str) -> bool:
    ds = (data_source or "").lower()
    return any(k in ds for k in CODE_SOURCES)


def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float:
    """verl-style reward function (``custom_reward_function``)."""
    extra = extra_info or {}
    if _is_code_source(str(data_source)) or extra.get("kind") == "code":
        r = score_code(solution_str, ground_truth, levels=extra.get("test_levels"), scheme=extra.get("scheme", "soft"),
                       level_scores=extra.get("level_scores"))
        return float(r.score)
    return float(math_reward(solution_str, ground_truth).score)


def _text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}, ...]
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def make_trl_math_reward(answer_key: str = "answer"):
    def trl_math_reward(prompts, completions, **kwargs) -> list[float]:
        golds = kwargs.get(answer_key)
        if golds is None:
            raise KeyError(f"the dataset has no '{answer_key}' column (got {sorted(kwargs)})")
        futs = [submit_math_reward(_text(c), g) for c, g in zip(completions, golds, strict=True)]
        return [float(f.result().score) for f in futs]

    return trl_math_reward


def make_trl_code_reward(tests_key: str = "tests", levels_key: str = "test_levels", scheme: str = "soft"):
    def trl_code_reward(prompts, completions, **kwargs) -> list[float]:
        tests = kwargs.get(tests_key)
        if tests is None:
            raise KeyError(f"the dataset has no '{tests_key}' column (got {sorted(kwargs)})")
        levels = kwargs.get(levels_key) or [None] * len(completions)
        from concurrent.futures import ThreadPoolExecutor

        # threads only wait on the judge, which runs the programs in parallel in its sandboxes
        with ThreadPoolExecutor(max_workers=max(1, min(64, len(completions)))) as ex:
            res = ex.map(lambda a: score_code(_text(a[0]), a[1], a[2], scheme).score, zip(completions, tests, levels))
            return [float(x) for x in res]

    return trl_code_reward


trl_math_reward = make_trl_math_reward()
trl_code_reward = make_trl_code_reward()
