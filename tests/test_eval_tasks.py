"""Eval tasks: loaders on the public files, prompts, and scoring truth tables (gold formats, canonical code)."""

import json
from pathlib import Path

import pytest

from openmimo.config import ConfigError
from openmimo.eval.passk import comb_pass_at_k, pass_at_k, summarise
from openmimo.eval.tasks import TASKS, get_task, iter_texts
from openmimo.eval.tasks.base import read_records

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks absent")
THINK = "<think>\nworking\n</think>\n\n"


def _load(name, limit=0):
    return get_task(name).load(data_dir=BENCH, limit=limit)


# -- math gold formats ------------------------------------------------------------------------------
MATH_CASES = [  # (task, record, response, expected score)
    ("aime24", {"problem": "p", "answer": "025"}, "so \\boxed{25}", 1.0),
    ("aime24", {"problem": "p", "answer": "025"}, "so \\boxed{025}", 1.0),
    ("aime24", {"problem": "p", "answer": "025"}, "so \\boxed{250}", 0.0),
    ("aime24", {"problem": "p", "answer": "0"}, "\\boxed{0}", 1.0),
    ("aime25", {"problem": "p", "answer": 70}, "\\boxed{70}", 1.0),
    ("aime25", {"problem": "p", "answer": 70}, "\\boxed{7}", 0.0),
    ("amc23", {"question": "p", "answer": 27.0}, "\\boxed{27}", 1.0),
    ("amc23", {"problem": "p", "answer": 27.0}, "\\boxed{27.0}", 1.0),
    ("amc23", {"problem": "p", "answer": 27.0}, "\\boxed{26}", 0.0),
    ("gsm8k", {"question": "q", "answer": "6 * 2 = 12\n#### 1,234"}, "\\boxed{1234}", 1.0),
    ("gsm8k", {"question": "q", "answer": "6 * 2 = 12\n#### 1,234"}, "\\boxed{1,234}", 1.0),
    ("gsm8k", {"question": "q", "answer": "6 * 2 = 12\n#### 1,234"}, "\\boxed{12}", 0.0),
    ("gsm8k", {"question": "q", "answer": "no marker"}, "\\boxed{12}", 0.0),
    ("math500", {"problem": "p", "answer": "\\frac{1}{2}"}, "\\boxed{0.5}", 1.0),
    ("math500", {"problem": "p", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}, "\\boxed{(3, \\frac{\\pi}{2})}", 1.0),
    ("math500", {"problem": "p", "answer": "[2,5)"}, "\\boxed{[2, 5)}", 1.0),
    ("math500", {"problem": "p", "answer": "[2,5)"}, "\\boxed{(2, 5)}", 0.0),
    ("math500", {"problem": "p", "answer": "30^\\circ"}, "\\boxed{30}", 1.0),
    ("math500", {"problem": "p", "answer": "\\text{(C)}"}, "\\boxed{\\text{(C)}}", 1.0),
    ("minerva", {"problem": "p", "solution": "so $s=\\boxed{1.6}$ cm"}, "\\boxed{1.6}", 1.0),
    ("minerva", {"problem": "p", "solution": "so $s=\\boxed{1.6}$ cm"}, "\\boxed{16}", 0.0),
    ("minerva", {"problem": "p", "solution": "no box"}, "\\boxed{16}", 0.0),
    ("world_math", {"problem": "What is 2 + 3?", "answer": "5"}, " 2 + 3 = 5.\nThe answer is \\boxed{5}.", 1.0),
    # the answer is the balanced last box after the reasoning block; an unclosed think block scores 0
    ("math500", {"problem": "p", "answer": "\\frac{1}{2}"}, "\\boxed{3} then \\boxed{\\frac{1}{2}}", 1.0),
    ("math500", {"problem": "p", "answer": "\\frac{1}{2}"}, "<think>\\boxed{\\frac{1}{2}}</think> \\boxed{3}", 0.0),
    ("math500", {"problem": "p", "answer": "\\frac{1}{2}"}, "<think>\\boxed{\\frac{1}{2}}", 0.0),
    ("math500", {"problem": "p", "answer": "\\frac{1}{2}"}, "the answer is 1/2", 0.0),
]


@pytest.mark.parametrize("name,rec,response,expected", MATH_CASES)
def test_math_gold_formats(name, rec, response, expected):
    assert get_task(name).score(rec, response).score == expected


def test_math_score_never_raises_on_bad_gold():
    assert get_task("math500").score({"problem": "p", "answer": True}, "\\boxed{1}").score == 0.0


@needs_bench
@pytest.mark.parametrize("name", ["math500", "aime24", "aime25", "amc23", "gsm8k", "minerva"])
def test_math_files_load_and_references_score_one(name):
    task = get_task(name)
    recs = _load(name)
    assert len(recs) == {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319, "minerva": 272}[name]
    sample = recs[:: max(1, len(recs) // 12)]
    futs = [task.submit_score(r, THINK + task.reference(r)) for r in sample]
    assert [f.result().score for f in futs] == [1.0] * len(sample)
    r = recs[0]
    assert task.prompt(r, "chat").endswith("within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert task.prompt(r, "base") == f"Problem: {task.question(r)}\nSolution:"
    assert task.prompt(r, "fewshot").endswith(task.prompt(r, "base")) and task.prompt(r, "fewshot").count("\\boxed") == 4
    assert task.stop("base") == ["\nProblem:"] and task.stop("chat") == []


@needs_bench
def test_math500_breakdown_and_ids():
    task = get_task("math500")
    r = _load("math500", limit=1)[0]
    assert task.groups(r) == {"level": "2", "subject": "Precalculus"}
    assert task.record_id(r, 0) == "math500/test/precalculus/807.json"


# -- code ------------------------------------------------------------------------------------------
@needs_bench
def test_humaneval_canonical_solutions_pass_and_return_none_bodies_fail():
    task = get_task("humaneval")
    recs = _load("humaneval")
    assert len(recs) == 164
    good = [task.submit_score(r, THINK + task.reference(r)) for r in recs]
    bad = [task.submit_score(r, f"```python\n{r['prompt']}    return None\n```") for r in recs]
    base = [task.submit_score(r, r["canonical_solution"] + "\n\ndef unrelated():\n    pass\n", "base") for r in recs[:20]]
    assert [f.result().score for f in good] == [1.0] * 164
    assert [f.result().score for f in bad] == [0.0] * 164
    assert [f.result().score for f in base] == [1.0] * 20


def test_humaneval_chat_program_keeps_prompt_imports():
    task = get_task("humaneval")
    rec = {"task_id": "t/0", "prompt": "from typing import List\n\ndef f(xs: List[int]) -> int:\n    \"\"\"sum\"\"\"\n",
           "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n", "entry_point": "f"}
    full = "```python\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n```"
    body = "```python\n    return sum(xs)\n```"
    assert task.score(rec, full).score == 1.0 and task.score(rec, body).score == 1.0
    assert task.score(rec, "```python\ndef f(xs):\n    return 0\n```").score == 0.0
    assert task.score(rec, "no code at all").reason.startswith("no fenced")


HOSTILE = [  # programs that make HumanEval's `assert candidate(...) == expected` pass without computing anything
    "class E:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\ndef f(x):\n    return E()\n",
    "class L(list):\n    def __eq__(self, o): return True\ndef f(x):\n    return L()\n",
    "import builtins\nbuiltins.type = lambda x: int\nclass E:\n    __class__ = int\n    def __eq__(self, o): return True\n"
    "def f(x):\n    return E()\n",
    "class E:\n    def __eq__(self, o): return True\ndef f(x):\n    return [E()]\n",
]


@pytest.mark.parametrize("program", HOSTILE)
def test_humaneval_always_equal_results_fail(program):
    rec = {"task_id": "t/1", "prompt": "def f(x):\n", "entry_point": "f",
           "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == [9]\n"}
    assert get_task("humaneval").score(rec, f"```python\n{program}```").score == 0.0
    good = "def f(x):\n    return 4 if x == 2 else [9]\n"
    assert get_task("humaneval").score(rec, f"```python\n{good}```").score == 1.0


KNOWN_BAD_MBPP = {  # records whose own reference fails its own tests as published
    "mbpp": {"mbpp/123", "mbpp/367"},  # 123: the reference needs > 2 s CPU; 367: the tests' setup code is missing
    "mbpp_original": {"mbpp_original/123"},
    "mbpp_sandboxfusion": set(),
}


@needs_bench
@pytest.mark.parametrize("name", ["mbpp", "mbpp_original", "mbpp_sandboxfusion"])
def test_mbpp_canonical_code_passes(name):
    task = get_task(name)
    recs = _load(name)
    assert len(recs) == {"mbpp": 500, "mbpp_original": 500, "mbpp_sandboxfusion": 20}[name]
    if name != "mbpp_sandboxfusion":
        recs = recs[::5] + [r for r in recs if task.record_id(r, 0) in KNOWN_BAD_MBPP[name]]
    futs = [(task.record_id(r, 0), task.submit_score(r, task.reference(r))) for r in recs]
    failed = {rid for rid, f in futs if f.result().score != 1.0}
    assert failed == KNOWN_BAD_MBPP[name] & {rid for rid, _ in futs}
    wrong = task.submit_score(recs[0], "```python\ndef remove_Occ(s, ch):\n    return s\n```").result()
    assert wrong.score == 0.0
    assert "Your code should pass these tests" in task.prompt(recs[0], "chat")


LCB_SOLUTIONS = {
    "livecodebench/codeforces/1873_A": "t = int(input())\nfor _ in range(t):\n    s = input().strip()\n"
                                      "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) <= 2 else 'NO')\n",
    "livecodebench/leetcode/2727": "class Solution:\n    def countSeniors(self, details: List[str]) -> int:\n"
                                  "        return sum(int(d[11:13]) > 60 for d in details)\n",
    "livecodebench/atcoder/abc301_a": "n = int(input())\ns = input().strip()\nt, a = s.count('T'), s.count('A')\n"
                                     "print('T' if t > a else 'A' if a > t else ('T' if s[-1] == 'A' else 'A'))\n",
}


@needs_bench
def test_livecodebench_stdin_and_functional():
    task = get_task("livecodebench")
    recs = _load("livecodebench")
    assert {r["testtype"] for r in recs} == {"stdin", "functional"}
    for i, r in enumerate(recs):
        rid = task.record_id(r, i)
        assert task.score(r, THINK + f"```python\n{LCB_SOLUTIONS[rid]}```").score == 1.0, rid
        assert task.score(r, "```python\nimport sys\nsys.exit(0)\n```").score == 0.0  # the placeholder program
        assert task.prompt(r, "chat").count("### Question:") == 1
        assert task.question(r) and "### Format" not in task.question(r)


@needs_bench
def test_codecontests_tests_parse_and_wrong_programs_fail():
    from openmimo.rewards.adapters import tests_from_record

    task = get_task("codecontests")
    recs = _load("codecontests")
    assert recs and all(len(tests_from_record(task.tests(r))) > 0 for r in recs)
    assert task.score(recs[0], "```python\nprint(0)\n```").score == 0.0
    assert task.groups(recs[0]) == {"difficulty": "MEDIUM"}


def test_world_code_rl_scoring_matches_judge():
    from openmimo.data.world import generate

    task = get_task("world_code")
    recs = generate(seed=0, scale=0.05)["files"]["code/test.jsonl"][:2]
    for r in recs:
        assert task.score(r, task.reference(r)).score == 1.0
        assert task.score(r, r["solution"] + "```", "base").score == 1.0  # a base completion inside the fence
        assert task.score(r, "```python\nprint(-1)\n```", scheme="soft").score < 1.0


def test_unusable_code_records_score_zero_with_a_reason():
    task = get_task("mbpp")
    for tests in ([], 42, [{"weird": 1}], ["{'weird': 1}"], ["x == 1"]):  # a non-assert check would pass anything
        res = task.score({"prompt": "p", "test": tests}, "```python\nx = 1\n```")
        assert res.score == 0.0 and "bad tests" in res.reason, res
    he = get_task("humaneval").score({"task_id": "t", "prompt": "def f():\n", "test": "def check(c):\n  assert c() == 1\n",
                                      "entry_point": "f"}, "```python\ndef f(:\n```")
    assert he.score == 0.0


# -- loaders ---------------------------------------------------------------------------------------
def test_load_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n" + json.dumps({"problem": "b"}) + "\n")
    with pytest.raises(ConfigError, match=r"mine.jsonl:2: .*'answer'"):
        get_task("math500").load(p)
    p.write_text("{not json\n")
    with pytest.raises(ConfigError, match="mine.jsonl:1"):
        get_task("math500").load(p)
    with pytest.raises(ConfigError, match="not found"):
        get_task("math500").load(tmp_path / "missing.jsonl")
    with pytest.raises(Exception, match="unknown task"):
        get_task("chess")


def test_user_files_in_other_containers(tmp_path):
    import gzip

    recs = [{"problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    for name in ("a.json", "a.jsonl.gz"):
        assert get_task("math500").load(tmp_path / name) == recs
    assert [w for w, _ in read_records(tmp_path / "a.jsonl.gz")][1].endswith("a.jsonl.gz:2")


@needs_bench
def test_iter_texts_for_decontamination():
    texts = list(iter_texts("aime25", data_dir=BENCH))
    assert len(texts) == 30 and "$17_b$" in texts[0]
    he = list(iter_texts("humaneval", data_dir=BENCH))
    assert any("has_close_elements" in t for t in he) and len(he) == 2 * 164


def test_every_task_is_registered_with_a_kind():
    assert {"math500", "aime24", "aime25", "amc23", "gsm8k", "minerva", "humaneval", "mbpp", "livecodebench",
            "codecontests", "world_math", "world_code"} <= set(TASKS)
    assert all(t.kind in ("math", "code") for t in TASKS.values())


# -- pass@k ----------------------------------------------------------------------------------------
def test_pass_at_k_hand_values():
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(5, 1, 3) == pytest.approx(0.6)  # 1 - C(4,3)/C(5,3) = 1 - 4/10
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(comb_pass_at_k(n, c, k), abs=1e-12)
    s = summarise([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], 4)
    assert s["n"] == 3 and s["k"] == 4
    assert s["avg@k"] == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert s["pass@1"] == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert s["pass@2"] == pytest.approx((0.5 + (1 - 1 / 6) + 0) / 3)
    assert s["pass@4"] == pytest.approx(2 / 3)
