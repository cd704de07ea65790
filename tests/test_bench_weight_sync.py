"""bench/bench_weight_sync.py on a tiny model: both paths run, time their syncs and leave every worker with the
sent weights (the bench's own exactness check), and the JSON says so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


def test_bench_weight_sync_tiny(tmp_path):
    out = tmp_path / "ws.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_weight_sync.py"), "--layers", "1", "--hidden",
                           "64", "--vocab", "256", "--workers", "2", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == ["object_store", "collective"]
    assert all(r["exact"] is True and r["median_s"] > 0 and r["bytes_per_worker"] > 0 for r in rows)
