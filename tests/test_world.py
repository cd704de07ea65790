"""The embedded tiny world: determinism, layout, correct solutions and tests, disjoint decontaminated splits."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from openmimo.cli import main as cli_main
from openmimo.data import world
from openmimo.tokenizer import format_chat, split_reasoning

SCALE = 0.1


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world.make_world(out, seed=3, scale=SCALE)
    return out


def test_same_seed_is_byte_identical_and_seeds_differ(wdir, tmp_path):
    world.make_world(tmp_path / "a", seed=3, scale=SCALE)
    world.make_world(tmp_path / "b", seed=4, scale=SCALE)
    files = sorted(p.relative_to(wdir) for p in wdir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files:
        assert (wdir / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes(), rel
    assert (wdir / "math/test.jsonl").read_bytes() != (tmp_path / "b" / "math/test.jsonl").read_bytes()


def test_layout_and_manifest(wdir):
    m = json.loads((wdir / "manifest.json").read_text())
    expected = {f"text/{c}.{s}.jsonl" for c in ("web", "math", "arithmetic", "code", "reasoning") for s in ("train", "val")}
    expected |= {f"{k}/{s}.jsonl" for k in ("math", "code") for s in ("train", "val", "test")} | {"html/pages.jsonl"}
    assert set(m["counts"]) == expected
    for rel, n in m["counts"].items():
        recs = _read(wdir / rel)
        assert len(recs) == n > 0, rel
        if rel.startswith("text/"):
            assert all(isinstance(r["text"], str) and r["text"].strip() for r in recs), rel
    assert m["seed"] == 3 and m["scale"] == SCALE
    # the arithmetic source is exactly the level-1 part of the math source
    for split in ("train", "val"):
        math_l1 = [r for r in _read(wdir / f"text/math.{split}.jsonl") if r["level"] == 1]
        assert _read(wdir / f"text/arithmetic.{split}.jsonl") == math_l1 and math_l1


def test_default_scale_is_small_and_arithmetic_heavy():
    w = world.generate(seed=0, scale=1.0)
    text_bytes = sum(len(r["text"].encode()) for k, v in w["files"].items() if k.startswith("text/") and ".train." in k
                     for r in v)
    assert 2e6 < text_bytes < 10e6
    levels = [r["level"] for r in w["files"]["math/train.jsonl"]]
    assert levels.count(1) + levels.count(2) >= 10000
    assert {r["level"] for r in w["files"]["math/test.jsonl"]} == {1, 2, 3, 4}


def _check_math(rec):
    ans = int(rec["answer"])
    assert rec["solution"].endswith(f"\\boxed{{{ans}}}."), rec
    assert re.findall(r"\\boxed\{(-?\d+)\}", rec["solution"]) == [rec["answer"]]
    if rec["level"] in (1, 2):
        expr = re.fullmatch(r"What is (.*)\?", rec["problem"])[1]
        assert eval(expr) == ans  # the problem's own arithmetic, computed independently
    elif rec["level"] == 3:
        a, sign, b, c = re.fullmatch(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)\.", rec["problem"]).groups()
        assert int(a) * ans + (int(b) if sign == "+" else -int(b)) == int(c)
    else:
        start, n, k, give = map(int, re.search(r"has (\d+) \w+\. \w+ buys (\d+) \w+ with (\d+) \w+ in each\. "
                                               r"Then \w+ gives (\d+)", rec["problem"]).groups())
        assert start + n * k - give == ans
    # each "a op b [op c] = d" step in the solution is right
    steps = re.findall(r"((?:-?\d+ [+\-*] )+-?\d+) = (-?\d+)", rec["solution"])
    assert steps or rec["level"] == 3, rec
    for expr, c in steps:
        assert eval(expr) == int(c), (expr, c, rec)


def test_column_steps_rebuild_every_level1_answer():
    """The ones column's digit (or difference) and the tens column's value make the answer, for every operand pair."""
    cases = [(a, "+", b) for a in range(100) for b in range(100)] + [(a, "-", b) for a in range(100) for b in range(a + 1)]
    cases += [(a, "*", b) for a in range(2, 100) for b in range(2, 10)]
    for a, op, b in cases:
        ones, tens = world.world_math.column_steps(a, op, b)
        ones_value = int(re.search(r"= (\d+),", ones)[1])
        carry = int(re.search(r"(?:carry|borrow) (\d)\.$", ones)[1])
        tens_value = int(re.search(r"= (\d+)\.$", tens)[1])
        assert 10 * tens_value + ones_value % 10 == eval(f"{a} {op} {b}"), (a, op, b)
        assert carry == (ones_value // 10 if op != "-" else int(a % 10 < b % 10)), (a, op, b)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_math_records_are_correct(wdir, split):
    recs = _read(wdir / f"math/{split}.jsonl")
    assert set(recs[0]) >= {"problem", "solution", "answer", "level", "subject", "unique_id"}
    for r in recs:
        _check_math(r)


def test_splits_are_disjoint_at_problem_level(wdir):
    probs = {s: {r["problem"] for r in _read(wdir / f"math/{s}.jsonl")} for s in ("train", "val", "test")}
    assert not (probs["train"] & probs["val"]) and not (probs["train"] & probs["test"]) and not (probs["val"] & probs["test"])
    fams = {s: {r["family"] for r in _read(wdir / f"code/{s}.jsonl")} for s in ("train", "val", "test")}
    assert fams["test"] and fams["val"] and not (fams["train"] & fams["test"]) and not (fams["train"] & fams["val"])


def _grams(text, n=16):
    t = text.lower().split()
    return {tuple(t[i:i + n]) for i in range(len(t) - n + 1)}


def test_no_val_or_test_16gram_in_any_training_text(wdir):
    held = set()
    for s in ("val", "test"):
        for r in _read(wdir / f"math/{s}.jsonl"):
            held |= _grams(r["problem"] + "\n" + r["solution"])
        for r in _read(wdir / f"code/{s}.jsonl"):
            held |= _grams(r["question_content"].split("\n\n")[0] + "\n" + r["solution"].split("def main")[0])
    assert len(held) > 100
    training = [r["text"] for p in (wdir / "text").glob("*.train.jsonl") for r in _read(p)]
    training += [r["problem"] + "\n" + r["solution"] for r in _read(wdir / "math/train.jsonl")]
    training += [r["question_content"] + "\n" + r["solution"] for r in _read(wdir / "code/train.jsonl")]
    training += [p["main_text"] + "\n" + p["html"] for p in _read(wdir / "html/pages.jsonl")]
    hits = [t[:80] for t in training if not held.isdisjoint(_grams(t))]
    assert hits == []


def test_decontaminator_drops_and_counts_a_planted_collision():
    rec = {"problem": "Solve for x: 3x + 4 = 19.", "solution": "Subtract 4 from both sides: 3x = 15.\n"
           "Divide both sides by 3: x = 5.\nThe answer is \\boxed{5}."}
    d = world.heldout_decontaminator([rec])
    assert not d.clean("Intro words. " + rec["problem"] + " " + rec["solution"], "math")
    assert d.clean("Solve for x: 3x + 4 = 22. Subtract 4 from both sides: 3x = 18.", "math")
    assert d.dropped == {"math": 1}


def _run_program(src, stdin_text):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        import sys
        old = sys.stdin
        sys.stdin = io.StringIO(stdin_text)
        try:
            exec(src, {"__name__": "__main__"})
        finally:
            sys.stdin = old
    return out.getvalue()


@pytest.mark.parametrize("split", ["train", "test"])
def test_code_records_lcb_format_and_reference_passes_every_test(wdir, split):
    recs = _read(wdir / f"code/{split}.jsonl")
    assert {r["testtype"] for r in recs} == {"stdin", "functional"}
    for r in recs:
        for k in ("question_title", "question_content", "platform", "question_id", "starter_code", "difficulty",
                  "public_test_cases", "private_test_cases", "metadata", "task_id", "fn_name", "prompt", "inputs",
                  "outputs", "tests"):
            assert k in r, k
        meta = json.loads(r["metadata"])
        tests = json.loads(r["public_test_cases"]) + json.loads(r["private_test_cases"])
        assert [{k: t[k] for k in ("input", "output", "testtype")} for t in r["tests"]] == tests
        assert [t["input"] for t in tests] == r["inputs"] and [t["output"] for t in tests] == r["outputs"]
        assert {t["difficulty"] for t in r["tests"]} == {"basic", "edge", "large"}
        if r["testtype"] == "functional":
            assert meta["func_name"] == r["fn_name"] and r["starter_code"].startswith("class Solution")
            scope = {}
            exec(r["solution"], scope)
            fn = getattr(scope["Solution"](), r["fn_name"])
            for t in tests:
                assert json.dumps(fn(*[json.loads(x) for x in t["input"].split("\n")])) == t["output"]
        else:
            assert meta["func_name"] is None and r["starter_code"] == ""
            for t in tests:
                assert _run_program(r["solution"], t["input"]) == t["output"]
        # a wrong program fails at least one test (tests can tell programs apart)
        if r["testtype"] == "stdin":
            assert any(_run_program("print(0)", t["input"]) != t["output"] for t in tests)


def test_reasoning_texts_are_chat_format_with_think_blocks(wdir):
    recs = _read(wdir / "text/reasoning.train.jsonl")
    assert {r["kind"] for r in recs} == {"math", "code"}
    for r in recs:
        assert r["text"] == format_chat(r["messages"])
        reply = r["text"].split("<|im_start|>assistant\n")[1].removesuffix("<|im_end|>\n")
        reasoning, answer = split_reasoning(reply)
        assert reasoning == r["messages"][1]["reasoning_content"] and len(reasoning) > 100
        assert answer == r["messages"][1]["content"]
        if r["kind"] == "math":
            assert "\\boxed{" in answer


def test_html_pages_cover_the_web_phenomena(wdir):
    pages = _read(wdir / "html/pages.jsonl")
    by_url = {p["url"]: p for p in pages}
    assert len(by_url) == len(pages)
    assert {p["kind"] for p in pages} == {"article", "forum", "spam"}
    assert {p["math_markup"] for p in pages} == {None, "mathjax", "katex", "mathml"}
    for p in pages:
        h = p["html"]
        assert h.startswith("<!DOCTYPE html>") and "<footer>" in h
        if p["kind"] == "spam":
            assert p["main_text"] == ""
        else:
            assert p["main_text"].strip()
        if p["math_markup"] == "mathjax":
            assert re.search(r"\\\(|\$\$|math/tex", h)
        elif p["math_markup"] == "katex":
            assert 'class="katex"' in h and 'annotation encoding="application/x-tex"' in h
        elif p["math_markup"] == "mathml":
            assert "<math" in h
        if p["has_code"]:
            assert "<pre><code" in h
        if p["kind"] == "forum":
            assert 'class="question"' in h and 'class="answer' in h
        if p["duplicate_of"]:
            assert h == by_url[p["duplicate_of"]]["html"]
        if p["near_duplicate_of"]:
            src = by_url[p["near_duplicate_of"]]
            assert h != src["html"] and p["main_text"] == src["main_text"]
    assert sum(bool(p["duplicate_of"]) for p in pages) and sum(bool(p["near_duplicate_of"]) for p in pages)
    assert any("cookie" in p["html"] for p in pages) and any('class="ad"' in p["html"] for p in pages)


def test_cli_writes_world_and_rejects_bad_scale(tmp_path, capsys):
    assert cli_main(["make-world", str(tmp_path / "w"), "--scale", "0.02", "--seed", "1"]) == 0
    assert (tmp_path / "w" / "manifest.json").is_file()
    assert cli_main(["make-world", str(tmp_path / "x"), "--scale", "0"]) == 2
    assert "scale" in capsys.readouterr().err
    assert not Path(tmp_path / "x" / "manifest.json").exists()


def test_arithmetic_count_sets_level_one_training_problems_disjoint_from_eval():
    w = world.generate(seed=2, scale=0.1, arithmetic=3000)
    train = [r for r in w["files"]["math/train.jsonl"] if r["level"] == 1]
    held = [r for s in ("val", "test") for r in w["files"][f"math/{s}.jsonl"] if r["level"] == 1]
    assert len(train) == 3000 == len(w["files"]["text/arithmetic.train.jsonl"])
    assert len({r["problem"] for r in train}) == 3000
    assert not {r["problem"] for r in train} & {r["problem"] for r in held}
    # the count is checked against the level's distinct problems less the held-out draws
    cap = world.LEVEL1_SPACE - len(held)
    assert world.generate(seed=2, scale=0.1, arithmetic=cap)["files"]["text/arithmetic.train.jsonl"]
    for bad in (cap + 1, 5):
        with pytest.raises(world.UsageError, match="--arithmetic must be between 20 and"):
            world.generate(seed=2, scale=0.1, arithmetic=bad)


def test_level_one_space_counts_the_generator_distinct_problems():
    import random

    r = random.Random(0)
    keys = {world.world_math.level1(r)[0] for _ in range(400000)}
    assert len(keys) == world.LEVEL1_SPACE


def test_steps_reasoning_is_the_solution_split_at_its_answer_line():
    import random

    from openmimo.data.world_math import level1, level2, math_steps_reasoning

    rng = random.Random(0)
    for rec in [level1(rng) for _ in range(20)] + [level2(rng) for _ in range(20)]:
        r = {"solution": rec[2], "answer": rec[3]}
        reasoning, answer = math_steps_reasoning(r)
        assert reasoning + "\n" + answer == rec[2]
        assert answer == f"The answer is \\boxed{{{rec[3]}}}." and "\\boxed" not in reasoning
