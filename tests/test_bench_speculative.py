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
    data = json.loads(out_json.read_text())
    assert {(r["batch"], r["k"], r["temperature"]) for r in data} == {
        (b, k, t) for b in (1, 2) for k in (0, 1, 2) for t in (0.0, 1.0)}
    for r in data:
        assert r["decode_tok_s"] > 0 and r["generated"] > 0
        if r["k"]:
            assert len(r["acceptance"]) == r["k"] and all(0 <= a <= 1 for a in r["acceptance"])
            if r["temperature"] == 0:
                assert r["greedy_match"] == "2/2"
