"""`openmimo report`: renders report.html and the PNGs from run folders written by the stages' metrics sink
and eval results; the figures exist and the HTML carries the runs' numbers."""

import json

import pytest

from openmimo.cli import main
from openmimo.metrics import Metrics

pytest.importorskip("matplotlib")


def _run(folder, gain):
    for sub in ("pretrain", "rl"):
        (folder / sub).mkdir(parents=True)
    pre = Metrics(folder / "pretrain", console=False)
    for step in range(1, 6):
        pre.log({"loss": 5.0 / step, "lr": 1e-3, "tok_per_s": 1000.0}, step=step, progress=step / 5)
    pre.log({"eval": {"math_acc": 0.2, "main_acc": 0.6, "mtp_acc": [0.4, 0.2]}}, step=5)
    rl = Metrics(folder / "rl", console=False)
    rl.log({"val": {"pass@1": 0.3, "n_problems": 8}}, step=0)
    for step in range(1, 4):
        rl.log({"reward_mean": 0.2 + 0.1 * step, "clip_frac": 0.01 * step, "entropy": 1.0 / step,
                "response_len": 30.0 + step, "rollout": {"gpu_idle_ratio": 0.1, "sample_waste_ratio": 0.05}}, step=step)
    rl.log({"val_final": {"pass@1": 0.3 + gain, "n_problems": 8}}, step=3)
    pre.close()
    rl.close()
    (folder / "eval.json").write_text(json.dumps({"tasks": {
        "math500": {"n": 500, "k": 4, "avg@k": 0.25 + gain, "pass@1": 0.25 + gain, "pass@4": 0.5},
        "humaneval": {"n": 164, "k": 4, "avg@k": 0.125, "pass@1": 0.125, "pass@4": 0.25}}}))
    with open(folder / "rl" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward_me')  # a torn line of a killed run


def test_report_renders_figures_and_numbers(tmp_path, capsys):
    _run(tmp_path / "a", 0.0)
    _run(tmp_path / "b", 0.123)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "rep")]) == 0
    rep = tmp_path / "rep"
    page = (rep / "report.html").read_text()
    for png in ("pretrain_loss", "mtp_accuracy", "rl_reward", "val_pass1", "response_length", "clip_fraction",
                "entropy", "rollout_efficiency", "eval_pass1"):
        assert (rep / f"{png}.png").stat().st_size > 1000, png
        assert f"alt='{png}.png'" in page
    assert page.count("data:image/png;base64,") == 9
    # the eval table: both runs side by side, each benchmark a row
    assert "<td>math500</td><td>25.0 (k=4, n=500)</td><td>25.0</td><td>37.3 (k=4, n=500)</td><td>37.3</td>" in page
    assert "<td>humaneval</td><td>12.5 (k=4, n=164)</td>" in page
    assert "2 runs" in capsys.readouterr().out


def test_report_of_an_empty_folder_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--output", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "No evaluation results found" in page and "No metrics found" in page
    assert main(["report", str(tmp_path / "missing"), "--output", str(tmp_path / "rep")]) == 2
