"""The test-difficulty-driven code reward (MiMo-7B, section 4.2) and ``openmimo calibrate-tests``.

Calibration: run several models' solutions through the judge to get a pass matrix
(samples x tests) per problem; each test's pass rate is the column mean; the tests are grouped
into ``L`` difficulty levels (default 3) by optimal 1-D clustering of the pass rates (exact
k-means by dynamic programming over the sorted rates, so it is deterministic).  Levels are
numbered 1..L, **1 = easiest (highest pass rate)**, L = hardest; tests with equal pass rates
share a level; with fewer distinct rates than ``L`` fewer levels are used.

Schemes, for one solution's per-test pass/fail list and the tests' levels:

* ``binary``: 1 if every test passes, else 0.
* ``strict``: walk the levels from easiest to hardest; a level's score is earned only if every
  test in it *and in every easier level* passes (stop at the first level with a failure).
* ``soft``: a level's score is split evenly among its tests; the reward is the sum over passed
  tests.

``level_scores`` maps level -> score; by default the levels present in the problem share 1
equally.  Without levels (an uncalibrated problem) every test is one level, so ``strict`` equals
``binary`` and ``soft`` is the fraction of passed tests.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from openmimo.config import ConfigError, UsageError

SCHEMES = ("binary", "strict", "soft")


# -- calibration ----------------------------------------------------------------------------------
def pass_rates(matrix) -> np.ndarray:
    """Column means of a (samples x tests) 0/1 matrix."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"pass matrix must be 2-D (samples x tests) with at least one sample, got shape {m.shape}")
    if ((m != 0) & (m != 1)).any():
        raise ValueError("pass matrix entries must be 0/1 (or booleans)")
    return m.mean(axis=0)


def cluster_levels(rates, num_levels: int = 3) -> list[int]:
    """Assign each test a level 1..k (k <= num_levels; 1 = highest pass rate) by exact 1-D k-means."""
    r = np.asarray(rates, dtype=float)
    if num_levels < 1:
        raise ValueError("num_levels must be >= 1")
    if r.size == 0:
        return []
    values = np.unique(r)[::-1]  # distinct rates, easiest (highest) first
    counts = np.array([(r == v).sum() for v in values], dtype=float)
    k = min(num_levels, len(values))
    n = len(values)
    # prefix sums over the distinct values, weighted by multiplicity
    w = np.concatenate([[0.0], np.cumsum(counts)])
    s1 = np.concatenate([[0.0], np.cumsum(counts * values)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * values ** 2)])

    def sse(i, j):  # values[i:j]
        cnt = w[j] - w[i]
        mean = (s1[j] - s1[i]) / cnt
        return (s2[j] - s2[i]) - cnt * mean * mean

    inf = float("inf")
    cost = np.full((k + 1, n + 1), inf)
    back = np.zeros((k + 1, n + 1), dtype=int)
    cost[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, n + 1):
            for i in range(g - 1, j):
                c = cost[g - 1, i] + sse(i, j)
                if c < cost[g, j] - 1e-12:
                    cost[g, j], back[g, j] = c, i
    bounds, j = [], n
    for g in range(k, 0, -1):
        i = back[g, j]
        bounds.append((i, j))
        j = i
    bounds.reverse()
    level_of_value = {}
    for lvl, (i, j) in enumerate(bounds, start=1):
        for v in values[i:j]:
            level_of_value[float(v)] = lvl
    return [level_of_value[float(x)] for x in r]


def pass_matrix(codes: list[str], tests: list[dict], judge=None, limits=None) -> np.ndarray:
    """Run each solution through the judge: a (len(codes) x len(tests)) 0/1 matrix."""
    from openmimo.rewards.sandbox import default_judge

    j = judge or default_judge()
    futs = [j.submit(c, tests, limits) for c in codes]
    return np.array([[v.passed for v in f.result()] for f in futs], dtype=int).reshape(len(codes), len(tests))


# -- schemes --------------------------------------------------------------------------------------
def _default_scores(levels) -> dict[int, float]:
    present = sorted(set(levels))
    return {lvl: 1.0 / len(present) for lvl in present}


def code_reward(passed, levels=None, scheme: str = "soft", level_scores: dict | None = None) -> float:
    """Reward of one solution from its per-test pass list (bools or Verdicts) and the test levels."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    ok = [bool(getattr(p, "passed", p)) for p in passed]
    if not ok:
        return 0.0
    if scheme == "binary":
        return float(all(ok))
    lv = [1] * len(ok) if levels is None else [int(x) for x in levels]
    if len(lv) != len(ok):
        raise ValueError(f"{len(ok)} test results but {len(lv)} levels")
    scores = level_scores if level_scores is not None else _default_scores(lv)
    scores = {int(k): float(v) for k, v in scores.items()}
    total = 0.0
    if scheme == "strict":
        for lvl in sorted(set(lv)):
            if not all(o for o, l_ in zip(ok, lv) if l_ == lvl):
                break
            total += scores.get(lvl, 0.0)
        return round(total, 12)
    size = {lvl: lv.count(lvl) for lvl in set(lv)}
    # Exactly-rounded sum: a full pass scores 1.0, not 0.9999999999999999 (pass thresholds compare with 1).
    return round(math.fsum(scores.get(l_, 0.0) / size[l_] for o, l_ in zip(ok, lv) if o), 12)


# -- CLI: openmimo calibrate-tests ----------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", required=True, help="problem records (JSONL), each with an id and a 'tests' list")
    parser.add_argument("--matrix", help="pass matrices (JSONL): {id, passes: [[0/1 per test] per sample]}")
    parser.add_argument("--solutions", help="instead of --matrix: JSONL {id, codes: [program, ...]} run through the judge")
    parser.add_argument("--out", required=True, help="output JSONL: the problem records with test_levels and test_pass_rates")
    parser.add_argument("--levels", type=int, default=3, help="number of difficulty levels L (default 3)")
    parser.add_argument("--id-key", default="id", help="the record field that identifies a problem")


def _read_jsonl(path: Path):
    from openmimo.jsonl import iter_jsonl

    return list(iter_jsonl(path))


def run(args) -> int:
    if (args.matrix is None) == (args.solutions is None):
        raise UsageError("give exactly one of --matrix or --solutions")
    if args.levels < 1:
        raise UsageError("--levels must be >= 1")
    key = args.id_key
    problems = _read_jsonl(Path(args.problems))
    src = Path(args.matrix or args.solutions)
    by_id: dict = {}
    for n, rec in _read_jsonl(src):
        if key not in rec:
            raise ConfigError(f"{src}:{n}: missing '{key}'")
        by_id[rec[key]] = (n, rec)
    kept = calibrated = 0
    missing = []
    with open(args.out, "w") as out:
        for n, rec in problems:
            if key not in rec:
                raise ConfigError(f"{args.problems}:{n}: missing '{key}'")
            tests = rec.get("tests")
            hit = by_id.get(rec[key])
            if hit is None:
                missing.append(rec[key])
            else:
                mn, m = hit
                if args.matrix:
                    mat = m.get("passes")
                else:
                    if not isinstance(tests, list):
                        raise ConfigError(f"{args.problems}:{n}: --solutions needs a 'tests' list in the problem record")
                    mat = pass_matrix(list(m.get("codes", [])), tests)
                try:
                    rates = pass_rates(mat)
                except ValueError as e:
                    raise ConfigError(f"{src}:{mn}: {e}") from None
                if isinstance(tests, list) and len(tests) != len(rates):
                    raise ConfigError(f"{src}:{mn}: pass matrix has {len(rates)} tests, problem has {len(tests)}")
                rec = dict(rec, test_pass_rates=[round(float(x), 6) for x in rates],
                           test_levels=cluster_levels(rates, args.levels))
                calibrated += 1
            out.write(json.dumps(rec) + "\n")
            kept += 1
    print(f"calibrate-tests: wrote {kept} records to {args.out}: {calibrated} calibrated, "
          f"{len(missing)} without a pass matrix (written unchanged)" + (f", e.g. {missing[:3]}" if missing else ""))
    return 0
