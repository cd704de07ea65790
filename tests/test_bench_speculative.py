"""bench/bench_speculative.py --tiny: the CPU dry run builds a tiny checkpoint, runs plain and MTP
speculative decoding at two batch sizes and prints a table, with greedy outputs identical to plain."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_speculative_tiny_dry_run(tmp_path):
    out_json = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_speculative.py"), "--tiny", "--num-prompts", "2",
         "--new-tokens", "8", "--batch", "1", "2", "--json", str(out_json)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "MISMATCH" not in out + proc.stderr
    assert "| batch | temp | k | decode tok/s | speed-up |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| batch")]
    assert len(rows) == 2 * 3 * 2  # batches x (plain, k=1, k=2) x temperatures
    assert "Greedy speculative outputs identical to plain greedy outputs" in out
    data = json.loads(out_json.read_text())["rows"]
    assert {(r["batch"], r["k"], r["temperature"]) for r in data} == {
        (b, k, t) for b in (1, 2) for k in (0, 1, 2) for t in (0.0, 1.0)}
    for r in data:
        assert r["decode_tok_s"] > 0 and r["generated"] > 0
        if r["k"]:
            assert len(r["acceptance"]) == r["k"] and all(0 <= a <= 1 for a in r["acceptance"])
            if r["temperature"] == 0:
                assert r["greedy_match"] == "2/2"


def test_bench_speculative_builds_its_model(tmp_path):
    """--build pre-trains configs/spec.yaml (shrunk by --build-set) into a folder, measures drafts from its trained
    MTP layers on the world's held-out problems, and reuses the checkpoint on a second run."""
    run_dir, out_json = tmp_path / "spec", tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shrink = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_hidden_layers=2",
              "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.torch_dtype=float32",
              "data.world_scale=0.2", "data.tokenizer_vocab=512",
              "stages=[{name: s1, tokens: 16384, seq_len: 128, mixture: {arithmetic: 1.0}}]",
              "optim.warmup_tokens=1000", "optim.constant_tokens=8000", "optim.decay_tokens=7384",
              "batch.batch_size=8", "batch.micro_batch_size=8", "train.device=cpu", "train.dtype=float32",
              "train.eval_problems=2"]
    cmd = [sys.executable, str(ROOT / "bench" / "bench_speculative.py"), "--build", str(run_dir),
           "--build-set", *shrink, "--device", "cpu", "--batch", "1", "--k", "1", "3", "--num-prompts", "2",
           "--new-tokens", "6", "--temperatures", "0", "--json", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out_json.read_text())
    assert data["build"]["cached"] is False and data["build"]["tokens"] == 16384
    assert (run_dir / "final" / "config.json").is_file()
    assert json.loads((run_dir / "final" / "config.json").read_text())["num_nextn_predict_layers"] == 3
    assert {(r["batch"], r["k"]) for r in data["rows"]} == {(1, 0), (1, 1), (1, 3)}
    for r in data["rows"]:
        if r["k"]:
            assert len(r["acceptance"]) == r["k"] and r["verify_steps"] > 0
            assert r["greedy_match"] == "2/2"
    prompts = [json.loads(line)["problem"] for line in
               (run_dir / "data" / "world" / "math" / "test.jsonl").read_text().splitlines()[:2]]
    assert all(prompts)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(out_json.read_text())["build"]["cached"] is True
    assert "reusing" in again.stderr
