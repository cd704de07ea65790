"""bench/bench_rollout_engine.py end to end on a tiny random checkpoint: every mode runs, the numbers are sane."""

import importlib.util
import json
import math
from concurrent.futures import Future
from pathlib import Path

import pytest

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.rl.rollout import MODES
from openmimo.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout_engine", ROOT / "bench" / "bench_rollout_engine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_rollout")
    texts = [f"Problem: What is {a} + {b}?\nSolution: {a} + {b} = {a + b}.\nThe answer is \\boxed{{{a + b}}}."
             for a in range(20) for b in range(10)]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     num_nextn_predict_layers=0, eos_token_id=tok.eos_id)
    build_model(cfg, seed=0).save_pretrained(root / "model", tokenizer=tok)
    probs = [{"problem": f"What is {a} + 1?", "answer": str(a + 1), "level": 1 + a % 2} for a in range(12)]
    (root / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probs))
    return root


def _argv(root, out):
    return ["--model", str(root / "model"), "--problems", str(root / "train.jsonl"), "--steps", "1", "--batch", "2",
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
