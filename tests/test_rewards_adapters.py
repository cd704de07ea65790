"""verl- and TRL-style adapters, code extraction and the benchmark test formats."""

import json
from pathlib import Path

import pytest

from openmimo.rewards import adapters
from openmimo.rewards.adapters import compute_score, extract_code, make_trl_code_reward, trl_math_reward
from openmimo.rewards.adapters import tests_from_record as parse_tests

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
SQUARE = "<think>easy</think>\n```python\nn = int(input())\nprint(n * n)\n```\n"
HALF = "<think>oops</think>\n```python\nn = int(input())\nprint(n + n)\n```\n"
TESTS = [{"input": f"{n}\n", "output": f"{n * n}\n"} for n in (0, 1, 2, 3)]


@pytest.mark.parametrize("text, code", [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("<think>```python\nprint(0)\n```</think>```py\nprint(2)\n```", "print(2)\n"),  # after the reasoning only
    ("```python\na\n```\ntext\n```python\nb\n```", "b\n"),  # the last block
    ("```python\na\n```\n```bash\nls\n```", "a\n"),  # a non-Python block is skipped
    ("```\nx = 1\n```", "x = 1\n"),
    ("no code at all", None),
    ("<think>never closes ```python\nprint(1)\n```", None),
])
def test_extract_code_table(text, code):
    assert extract_code(text) == code


def test_test_formats():
    assert parse_tests(json.dumps(TESTS)) == TESTS
    lcb = {"inputs": ["[1, 2]\n3", "[]\n0"], "outputs": ["true", "false"], "fn_name": "has"}
    assert parse_tests(lcb) == [{"fn": "has", "args": [[1, 2], 3], "expected": True},
                                      {"fn": "has", "args": [[], 0], "expected": False}]
    assert parse_tests({"inputs": ["1\n"], "outputs": ["2\n"], "fn_name": None}) == [{"input": "1\n", "output": "2\n"}]
    sf = json.dumps([{"input": {"stdin": "1\n"}, "output": {"stdout": "2\n"}}])
    assert parse_tests(sf) == [{"input": "1\n", "output": "2\n"}]
    mbpp = {"test_list": "['assert f(1) == 2']", "test_setup_code": "import math"}
    assert parse_tests(mbpp) == [{"check": "import math\nassert f(1) == 2"}]
    with pytest.raises(ValueError):
        parse_tests(42)


def test_verl_compute_score_math_and_code():
    assert compute_score("openai/gsm8k", "<think>..</think>\\boxed{1234}", "so #### 1,234") == 1.0
    assert compute_score("aime24", "<think>..</think>\\boxed{26}", "025") == 0.0
    assert compute_score("livecodebench", SQUARE, TESTS) == 1.0
    assert compute_score("livecodebench", HALF, TESTS) == pytest.approx(0.5)  # soft by default: n=0 and n=2 pass
    extra = {"scheme": "strict", "test_levels": [1, 2, 1, 3]}
    # 3 levels at 1/3 each; level 1 (tests 0, 2) passes, level 2 (test 1) fails -> stop
    assert compute_score("code", HALF, TESTS, extra) == pytest.approx(1 / 3)
    assert compute_score("code", HALF, TESTS, {"scheme": "binary"}) == 0.0
    assert compute_score("code", "no code", TESTS) == 0.0


def test_trl_reward_functions():
    out = trl_math_reward(["p1", "p2"], [[{"role": "assistant", "content": "</think>\\boxed{27}"}], "</think>\\boxed{3}"],
                          answer=[27.0, 4])
    assert out == [1.0, 0.0]
    fn = make_trl_code_reward(scheme="binary")
    assert fn(["p", "p"], [SQUARE, HALF], tests=[TESTS, TESTS]) == [1.0, 0.0]
    with pytest.raises(KeyError, match="answer"):
        trl_math_reward(["p"], ["x"], solution=["1"])


def test_mbpp_and_livecodebench_samples_end_to_end():
    mbpp = BENCH / "code" / "mbpp_samples_sandboxfusion.jsonl"
    if not mbpp.exists():
        pytest.skip(f"benchmarks not found at {mbpp}")
    for line in mbpp.read_text().splitlines()[:5]:
        rec = json.loads(line)
        labels = rec["labels"]
        tests = parse_tests({"test_list": rec["test_list"]})
        sol = "<think></think>```python\n" + rec["canonical_solution"] + "\n```"
        assert adapters.score_code(sol, tests, scheme="binary").score == 1.0, labels


def test_submit_code_reward_is_async_and_never_raises():
    futs = [adapters.submit_code_reward(SQUARE, TESTS), adapters.submit_code_reward(HALF, TESTS, scheme="binary"),
            adapters.submit_code_reward("no code", TESTS), adapters.submit_code_reward(SQUARE, 42)]
    res = [f.result(timeout=60) for f in futs]
    assert [r.score for r in res] == [1.0, 0.0, 0.0, 0.0]
    assert res[0].reason == "4/4 tests passed (soft)" and res[3].reason.startswith("bad tests")
