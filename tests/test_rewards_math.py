"""Math reward: answer extraction, gold formats, Math-Verify truth tables, timeouts, real gold answers."""

import json
import time
from pathlib import Path

import pytest

from openmimo.rewards.math import (extract_answer, last_boxed, math_reward, math_rewards, normalise_gold,
                                   submit_math_reward, verify_answer)
from openmimo.rewards.pool import RewardPool

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


@pytest.fixture(scope="module")
def pool():
    p = RewardPool(workers=2, timeout=10.0)
    yield p
    p.close()


@pytest.mark.parametrize("response, expected", [
    ("<think>try \\boxed{1}</think> so \\boxed{2}", "2"),  # the boxed inside the reasoning is ignored
    ("<think>\\boxed{1}</think> no box here", None),
    ("<think>still thinking \\boxed{3}", None),  # the reasoning never closes
    ("no think block: \\boxed{7}", "7"),
    ("</think>\\boxed{\\frac{1}{2}} and finally \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # the last one
    ("</think>\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("</think>\\fbox{5}", "5"),
    ("</think>\\boxed{unbalanced", None),
    ("</think>\\boxed {x^{2}}", "x^{2}"),
])
def test_extraction_table(response, expected):
    assert extract_answer(response) == expected


def test_extraction_without_think_requirement():
    assert extract_answer("<think>\\boxed{3}", require_think_end=False) == "3"
    assert extract_answer("a \\boxed{1} </think> b", think_end=None) == "1"
    assert last_boxed("\\boxed{a}\\boxed{b{c}}") == "b{c}"


@pytest.mark.parametrize("gold, expected", [
    ("025", "025"),  # AIME 2024: strings with leading zeros (Math-Verify reads them as 25)
    (25, "25"),  # AIME 2025: integers
    (27.0, "27"),  # AMC: floats
    (2.5, "2.5"),
    ("Natalia sold 48/2 = 24 clips.\n#### 1,234", "1234"),  # GSM8K
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # a solution with the answer boxed
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
])
def test_gold_normalisation(gold, expected):
    assert normalise_gold(gold) == expected


# (gold, prediction, expected) grouped by phenomenon, as in Math-Verify's own tests
TRUTH = {
    "integers and leading zeros": [("025", "25", 1), ("025", "025", 1), (25, "25", 1), ("025", "52", 0)],
    "floats": [(27.0, "27", 1), (27.0, "27.0", 1), (27.5, "\\frac{55}{2}", 1), (27.0, "28", 0)],
    "thousands separators": [("#### 1,234", "1234", 1), ("#### 1234", "1,234", 1), ("#### 1,234", "1235", 0)],
    "fractions and decimals": [("\\frac{1}{2}", "0.5", 1), ("\\frac{1}{2}", "\\dfrac{1}{2}", 1), ("\\frac{1}{3}", "0.3", 0)],
    "radicals": [("2\\sqrt{2}", "\\sqrt{8}", 1), ("\\sqrt{2}", "\\sqrt{3}", 0)],
    "intervals": [("[1,2)", "[1,2)", 1), ("(-\\infty, 3]", "(-\\infty,3]", 1), ("[1,2)", "[1,2]", 0)],
    "tuples": [("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", 1), ("(1,2)", "(2,1)", 0)],
    "degrees and text": [("10^\\circ", "10", 1), ("\\text{(C)}", "C", 1), ("\\text{(C)}", "D", 0)],
    "algebra": [("x^2+2x+1", "(x+1)^2", 1), ("x+1", "x+2", 0)],
}


@pytest.mark.parametrize("gold, pred, expected", [c for cases in TRUTH.values() for c in cases],
                         ids=[f"{k}-{i}" for k, cases in TRUTH.items() for i in range(len(cases))])
def test_verify_truth_table(gold, pred, expected):
    assert verify_answer(pred, gold).score == expected


def test_reward_through_pool(pool):
    r = math_reward("<think>6*7</think>The answer is \\boxed{42}.", "42", pool=pool)
    assert r.score == 1.0 and r.reason == "correct"
    r = math_reward("<think>6*7</think>The answer is \\boxed{41}.", 42, pool=pool)
    assert r.score == 0.0 and r.reason == "wrong answer"
    assert math_reward("no answer", "1", pool=pool).reason.startswith("no \\boxed")


def test_pathological_inputs_score_zero_within_timeout(pool):
    bad = [
        "</think>\\boxed{" + "1" * 100_000 + "}",
        "</think>\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",
        "</think>\\boxed{9^{9^{9^{9}}}}",
        "</think>\\boxed{" + "+".join(["x"] * 500) + "}",
    ]
    t0 = time.time()
    futs = [submit_math_reward(b, "5", pool=pool, timeout=2.0, max_answer_chars=200_000) for b in bad]
    res = [f.result(timeout=30) for f in futs]
    assert all(r.score == 0.0 for r in res), res
    # never longer than the timeouts (2 workers, 4 tasks -> at most 2 rounds) plus worker restarts
    assert time.time() - t0 < 15
    # the pool still serves
    assert math_reward("</think>\\boxed{5}", "5", pool=pool).score == 1.0
    # the default length guard rejects the huge answer at once, without a worker
    assert math_reward(bad[0], "5", pool=pool).reason.startswith("answer longer")


def _gold_answers():
    files = {"aime24_test.jsonl": "answer", "aime25_test.jsonl": "answer", "amc23_test.jsonl": "answer",
             "gsm8k_test.jsonl": "answer", "math_500_test.jsonl": "answer"}
    out = []
    for name, key in files.items():
        path = BENCH / "math" / name
        if not path.exists():
            pytest.skip(f"benchmarks not found at {path}")
        out += [(name, json.loads(line)[key]) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_every_gold_answer_in_a_boxed_response_scores_one(pool):
    """All 1919 gold answers of AIME 24/25, AMC 23, GSM8K and MATH-500 (~10 s on 2 cores)."""
    golds = _gold_answers()
    assert len(golds) == 30 + 30 + 40 + 1319 + 500
    responses = [f"<think>reasoning</think>The final answer is $\\boxed{{{normalise_gold(g)}}}$." for _, g in golds]
    res = math_rewards(responses, [g for _, g in golds], pool=pool)
    bad = [(n, g, r.reason) for (n, g), r in zip(golds, res) if r.score != 1.0]
    assert not bad, bad[:10]
