"""bench/bench_rollout_engine.py end to end on a tiny random checkpoint: every mode runs, the numbers are sane."""

import importlib.util
import json
import math
from concurrent.futures import Future
from pathlib import Path

import pytest

from openmimo.rl.rollout import MODES

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout_engine", ROOT / "bench" / "bench_rollout_engine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def ckpt(tiny_math_ckpt):
    return tiny_math_ckpt


def _argv(root, out):
    return ["--model", str(root / "base"), "--problems", str(root / "train.jsonl"), "--steps", "1", "--batch", "2",
            "--n", "2", "--slots", "8", "--max-new-tokens", "6", "--max-launch-factor", "2", "--reward-workers", "1",
            "--json", str(out)]


def _check(res, batch=2):
    assert list(res["modes"]) == list(MODES)
    for m, r in res["modes"].items():
        x = r["mean"]
        assert math.isfinite(x["time_s"]) and x["time_s"] > 0, m
        assert 0.0 <= x["gpu_idle_ratio"] <= 1.0, m
        assert 0.0 <= x["sample_waste_ratio"] and x["selected_groups"] <= batch, m
        assert 0.0 <= x["pass_rate"] <= 1.0, m
    none = res["modes"]["none"]["mean"]
    assert none["sample_waste_ratio"] == 0 and none["aborted_tokens"] == 0 and none["aborted_sequences"] == 0
    assert none["selected_groups"] == batch and none["launches"] == batch


def test_bench_real_rewards(ckpt, tmp_path, capsys):
    """The math reward on a random model (pass rate ~0: dynamic sampling hits the launch limit)."""
    res = _bench().main(_argv(ckpt, tmp_path / "out.json") + ["--levels", "1"])
    _check(res)
    assert res["problems"]["kept"] == 6 and res["problems"]["math"] == 6
    assert json.loads((tmp_path / "out.json").read_text())["modes"].keys() == res["modes"].keys()
    table = capsys.readouterr().out
    for m in MODES:
        assert f"| {m} |" in table
    assert "2.29x" in table and "GPU idle" in table


def test_bench_groups_with_variance(ckpt, tmp_path):
    """Stand-in rewards with variance (first token id even) so the dynamic-sampling modes fill batches."""

    def score(problem, fin):
        f = Future()
        f.set_result(float(fin.token_ids[0] % 2 == 0))
        return f

    res = _bench().main(_argv(ckpt, tmp_path / "out.json"), score_fn=score)
    _check(res)
    assert any(r["mean"]["valid_group_fraction"] > 0 for r in res["modes"].values())


def test_reweight_code_gives_code_its_share_spread_through_math():
    bench = _bench()
    math_ = [{"problem": f"m{i}"} for i in range(90)]
    code = [{"tests": [], "id": j} for j in range(3)]
    out = bench.reweight_code(math_ + code, 0.25)
    is_code = ["tests" in p for p in out]
    assert [p for p in out if "tests" not in p] == math_  # every math problem once, in order
    assert sum(is_code) == 30  # 30 / (90 + 30) = 0.25
    assert {p["id"] for p in out if "tests" in p} == {0, 1, 2}
    assert max(sum(is_code[i:i + 16]) for i in range(len(out) - 15)) <= 5  # spread, not bunched: ~4 per 16
    with pytest.raises(SystemExit, match="needs math and code"):
        bench.reweight_code(math_, 0.25)
