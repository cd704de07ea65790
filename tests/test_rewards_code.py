"""Test-difficulty reward: pass rates, level clustering, binary/strict/soft schemes (hand-computed), CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

from openmimo.rewards.code import cluster_levels, code_reward, pass_matrix, pass_rates

CLI = [sys.executable, "-c", "import sys; from openmimo.cli import main; sys.exit(main(sys.argv[1:]))"]


def test_pass_rates_by_hand():
    m = [[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert pass_rates(m).tolist() == [1.0, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError):
        pass_rates([[1, 2]])
    with pytest.raises(ValueError):
        pass_rates([])


@pytest.mark.parametrize("rates, L, levels", [
    ([1.0, 0.9, 0.5, 0.45, 0.1, 0.0], 3, [1, 1, 2, 2, 3, 3]),  # three clear groups
    ([0.0, 1.0, 0.95, 0.05], 2, [2, 1, 1, 2]),  # order of tests does not matter; 1 = easiest
    ([0.8, 0.8, 0.8], 3, [1, 1, 1]),  # one distinct rate -> one level
    ([1.0, 0.0], 3, [1, 2]),  # fewer distinct rates than L
    ([1.0, 0.7, 0.6, 0.0], 3, [1, 2, 2, 3]),  # 0.7/0.6 closer to each other than to 1.0 or 0.0
    ([1.0, 0.7, 0.6, 0.0], 1, [1, 1, 1, 1]),
    ([], 3, []),
])
def test_cluster_levels_table(rates, L, levels):
    assert cluster_levels(rates, L) == levels


def test_cluster_levels_is_optimal_1d_kmeans():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = rng.integers(0, 9, size=8) / 8.0
        lv = cluster_levels(r, 3)
        # monotone: a lower pass rate never gets an easier level
        for a in range(8):
            for b in range(8):
                if r[a] > r[b]:
                    assert lv[a] <= lv[b]
        # no contiguous 3-split of the sorted distinct values has a lower within-level SSE
        def sse(levels):
            return sum(((r[np.array(levels) == k] - r[np.array(levels) == k].mean()) ** 2).sum() for k in set(levels))
        vals = sorted(set(r), reverse=True)
        best = min(sse([1 + (vals.index(x) >= i) + (vals.index(x) >= j) for x in r])
                   for i in range(1, len(vals)) for j in range(i + 1, len(vals))) if len(vals) >= 3 else sse(lv)
        assert sse(lv) <= best + 1e-9


# 6 tests: levels 1,1,2,2,3,3 with default scores 1/3 each (soft: 1/6 per test)
LEVELS = [1, 1, 2, 2, 3, 3]
SCHEME_TABLE = [
    # passed                       binary strict  soft
    ([1, 1, 1, 1, 1, 1],            1.0,  1.0,    1.0),
    ([1, 1, 1, 1, 1, 0],            0.0,  2 / 3,  5 / 6),
    ([1, 1, 1, 0, 1, 1],            0.0,  1 / 3,  5 / 6),  # a level-2 failure voids level 3 under strict
    ([0, 1, 1, 1, 1, 1],            0.0,  0.0,    5 / 6),
    ([1, 1, 0, 0, 0, 0],            0.0,  1 / 3,  2 / 6),
    ([0, 0, 0, 0, 1, 1],            0.0,  0.0,    2 / 6),
    ([0, 0, 0, 0, 0, 0],            0.0,  0.0,    0.0),
]


@pytest.mark.parametrize("passed, binary, strict, soft", SCHEME_TABLE)
def test_scheme_table(passed, binary, strict, soft):
    p = [bool(x) for x in passed]
    assert code_reward(p, LEVELS, "binary") == pytest.approx(binary)
    assert code_reward(p, LEVELS, "strict") == pytest.approx(strict)
    assert code_reward(p, LEVELS, "soft") == pytest.approx(soft)


def test_custom_level_scores_and_uneven_levels():
    scores = {1: 0.2, 2: 0.3, 3: 0.5}
    assert code_reward([1, 1, 1, 1, 0, 1], LEVELS, "strict", scores) == pytest.approx(0.5)
    assert code_reward([1, 1, 1, 1, 0, 1], LEVELS, "soft", scores) == pytest.approx(0.2 + 0.3 + 0.25)
    # levels 1 (1 test) and 3 (3 tests), level 2 absent: default 1/2 per present level
    lv = [1, 3, 3, 3]
    assert code_reward([1, 1, 0, 1], lv, "soft") == pytest.approx(0.5 + 2 * (0.5 / 3))
    assert code_reward([1, 1, 0, 1], lv, "strict") == pytest.approx(0.5)
    # uncalibrated: one level -> strict == binary, soft == fraction passed
    assert code_reward([1, 0, 1, 1], None, "strict") == 0.0
    assert code_reward([1, 0, 1, 1], None, "soft") == pytest.approx(0.75)
    with pytest.raises(ValueError):
        code_reward([1], [1, 2], "soft")
    with pytest.raises(ValueError):
        code_reward([1], None, "partial")


def test_pass_matrix_through_judge():
    from openmimo.rewards.isolation import IsolationUnavailable
    from openmimo.rewards.sandbox import Judge

    try:
        j = Judge(workers=2)
    except IsolationUnavailable as e:
        pytest.skip(str(e))
    tests = [{"input": f"{n}\n", "output": f"{n * n}\n"} for n in (0, 1, 2, 3)]
    codes = ["n = int(input())\nprint(n * n)", "n = int(input())\nprint(n + n)", "print(0)"]
    with j:
        m = pass_matrix(codes, tests, judge=j)
    assert m.tolist() == [[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]]
    assert cluster_levels(pass_rates(m), 3) == [1, 3, 2, 3]


def test_calibrate_tests_cli(tmp_path):
    probs = tmp_path / "problems.jsonl"
    probs.write_text(json.dumps({"id": "a", "tests": [{"input": "", "output": ""}] * 3}) + "\n"
                     + json.dumps({"id": "b", "tests": [{"input": "", "output": ""}]}) + "\n")
    mat = tmp_path / "matrix.jsonl"
    mat.write_text(json.dumps({"id": "a", "passes": [[1, 1, 0], [1, 0, 0]]}) + "\n")
    out = tmp_path / "out.jsonl"
    r = subprocess.run(CLI + ["calibrate-tests", "--problems", str(probs), "--matrix", str(mat), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 calibrated, 1 without a pass matrix" in r.stdout
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs[0]["test_levels"] == [1, 2, 3] and recs[0]["test_pass_rates"] == [1.0, 0.5, 0.0]
    assert "test_levels" not in recs[1] and recs[1]["id"] == "b"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "passes": [[1, 1]]}) + "\n")
    r = subprocess.run(CLI + ["calibrate-tests", "--problems", str(probs), "--matrix", str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr and "2 tests" in r.stderr
