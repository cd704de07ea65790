"""bench/bench_prefill.py runs on CPU (eager modes) and prints one row per (mode, prompts per forward)."""

import importlib.util
from pathlib import Path


def test_bench_prefill_dry_run(capsys):
    spec = importlib.util.spec_from_file_location("bench_prefill", Path(__file__).parent.parent / "bench" / "bench_prefill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--tiny", "--no-compile", "--prompts", "4", "--len", "6", "--device", "cpu"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| eager", "| windows"))]
    assert [r.split("|")[1:3] for r in rows] == [[" eager ", " 1 "], [" eager ", " 4 "], [" windows ", " 1 "],
                                                  [" windows ", " 4 "]]
    assert all(float(r.split("|")[3]) > 0 for r in rows)
