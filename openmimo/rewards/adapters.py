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
(+ ``test_setup_code``) and a plain list of assert strings; HumanEval ``{"test": "def check(candidate):
...", "entry_point": NAME}`` (one check: the test code, then ``check(NAME)``); a ``test`` string of
assert lines.  JSON strings of any of these are decoded first.
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
# HumanEval's checks compare results with ==, which an object with an always-true __eq__ passes; its answers are
# plain values, so the candidate's results must be built-in scalars and containers (exact types, read through
# the type of a literal, which a program cannot rebind) or the check fails.
PLAIN_RESULT_GUARD = """
def _plain_results(fn, _T=(0).__class__.__class__, _ok=((0).__class__, (0.0).__class__, (0j).__class__, ''.__class__,
                   True.__class__, None.__class__, b''.__class__, [].__class__, ().__class__, {}.__class__,
                   {0}.__class__)):
    def plain(x, depth=0):
        t = _T(x)
        if depth > 50 or not any(t is k for k in _ok):
            raise AssertionError('result of type ' + t.__name__ + ' is not a plain value')
        if t is [].__class__ or t is ().__class__ or t is {0}.__class__:
            for y in x:
                plain(y, depth + 1)
        elif t is {}.__class__:
            for k2, v2 in x.items():
                plain(k2, depth + 1)
                plain(v2, depth + 1)
        return x

    def guarded(*args, **kwargs):
        return plain(fn(*args, **kwargs))
    return guarded
"""
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
    """A JSON (or Python-literal) string decoded; any other string (test code) as it is."""
    if isinstance(x, str):
        s = x.strip()
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(s)  # Python-literal lists, as in some dataset dumps
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return x
    return x


def _assert_checks(code: str, setup: str = "") -> list[dict]:
    """Test code -> checks: one per line when every line is an ``assert``, else the whole code as one."""
    lines = [ln for ln in code.splitlines() if ln.strip()]
    if lines and all(ln.lstrip().startswith("assert") for ln in lines):
        return [{"check": (setup + "\n" + ln.strip()).strip()} for ln in lines]
    return [{"check": (setup + "\n" + code).strip()}]


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
    if isinstance(gt, dict) and isinstance(gt.get("test"), str) and gt.get("entry_point"):
        # HumanEval: the test code defines check(candidate); the check calls it on the entry point, guarded
        return [{"check": f"{gt['test']}\n\n{PLAIN_RESULT_GUARD}\ncheck(_plain_results({gt['entry_point']}))\n"}]
    if isinstance(gt, dict) and isinstance(gt.get("test"), str) and not isinstance(_maybe_json(gt["test"]), list):
        return _assert_checks(gt["test"], gt.get("test_setup_code", "") or "")
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
                out.append({"check": t.strip()})
            else:
                raise ValueError(f"unsupported test entry: {str(t)[:80]!r}")
        return out
    raise ValueError(f"unsupported test format: {str(gt)[:80]!r}")


def score_code(completion: str, tests, levels=None, scheme: str = "soft", level_scores=None, judge=None,
               limits=None) -> RewardResult:
    """Extract the program, judge it, and score it with the chosen scheme (never raises: a record the
    judge cannot use scores 0 with the reason)."""
    return submit_code_reward(completion, tests, levels, scheme, level_scores, judge, limits).result()


def submit_program_reward(code: str, tests, levels=None, scheme: str = "soft", level_scores=None, judge=None,
                          limits=None):
    """Judge an already-extracted program: a Future[RewardResult] that never raises.

    ``tests`` is any format :func:`tests_from_record` understands; tests the judge cannot use
    (unknown format, no tests) score 0 with the reason."""
    from concurrent.futures import Future

    from openmimo.rewards.sandbox import default_judge

    out: Future = Future()
    try:
        tl = tests_from_record(tests)
        if not tl:
            raise ValueError("the record has no tests")
        if any(t.get("fn") for t in tl):
            code = CALL_PRELUDE + code
        fut = (judge or default_judge()).submit(code, tl, limits, stop_early=(scheme == "binary"))
    except (ValueError, TypeError, SyntaxError, KeyError) as e:
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


def submit_code_reward(completion: str, tests, levels=None, scheme: str = "soft", level_scores=None, judge=None,
                       limits=None):
    """Asynchronous :func:`score_code`: a Future[RewardResult] that never raises.

    Prefer this to wrapping ``score_code`` in a :class:`~openmimo.rewards.pool.RewardPool`: the judge
    already runs programs in parallel, isolated and time-limited, so no extra process is needed (a
    pool worker would start its own judge, one sandbox per core, in every worker)."""
    from concurrent.futures import Future

    code = extract_code(completion)
    if code is None:
        out: Future = Future()
        out.set_result(RewardResult(0.0, "no fenced Python code block after the reasoning block"))
        return out
    return submit_program_reward(code, tests, levels, scheme, level_scores, judge, limits)


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
