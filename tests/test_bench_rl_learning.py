"""bench/bench_rl_learning.py end to end on a tiny random checkpoint: the curve has a row per measurement."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_learning_curve_rows(tiny_math_ckpt, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_rl_learning", ROOT / "bench" / "bench_rl_learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = tiny_math_ckpt
    rows = mod.main(["--model", str(root / "base"), "--train", str(root / "train.jsonl"), "--held-out",
                     str(root / "train.jsonl"), "--levels", "1", "--iters", "3", "--eval-every", "2",
                     "--eval-problems", "4", "--eval-n", "2", "--out-dir", str(tmp_path / "run"),
                     "rollout.n=2", "rollout.batch_groups=2", "rollout.max_launch_factor=2", "gen.max_new_tokens=6",
                     "gen.max_slots=8", "gen.max_len=64", "train.reward_workers=1"])
    assert [r["iters"] for r in rows] == [0, 2, 3]  # the start, every --eval-every, and the end
    assert all(0.0 <= r["pass@1"] <= 1.0 for r in rows)
    assert rows[1]["wall_s"] <= rows[2]["wall_s"]
    out = capsys.readouterr().out
    assert "| RL iterations | held-out pass@1" in out and "4 problems x 2 samples" in out
