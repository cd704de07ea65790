"""Pre-training: bitwise resume after SIGKILL, FSDP2 (2 CPU processes) equals one process, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openmimo.config import ConfigError, load
from openmimo.train.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small world, its tokenizer and shards, prepared once for the module."""
    from openmimo.train.data import prepare_world

    d = tmp_path_factory.mktemp("data")
    cfg = load(PretrainConfig, None, ["data.world_scale=0.05", "data.tokenizer_vocab=300"])
    prepare_world(cfg, d)
    return d


def _args(prepared, out, extra=()):
    src = {s: str(prepared / "shards" / s) for s in ("web", "math", "code", "reasoning")}
    return [
        "pretrain",
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2",
        "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.max_position_embeddings=64",
        "model.num_nextn_predict_layers=1",
        f"data.sources={json.dumps(src)}", f"data.tokenizer={prepared / 'tokenizer'}", "data.world=false",
        "stages=[{name: a, tokens: 3000, seq_len: 32, rope_theta: 10000.0, mixture: {web: 0.5, math: 0.5}},"
        " {name: b, tokens: 3000, seq_len: 64, rope_theta: 40000.0, mixture: {math: 0.5, reasoning: 0.5}}]",
        "batch.batch_size=8", "batch.micro_batch_size=4", "batch.warmup_batch_size=4", "batch.warmup_tokens=500",
        "optim.warmup_tokens=300", "optim.decay_tokens=5000",
        "train.log_every=1", "train.eval_problems=0", f"train.out_dir={out}", *extra,
    ]


def _losses(run):
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["mtp1_loss"], r["grad_norm"]) for r in recs if "loss" in r]


def _cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "openmimo.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_with_the_same_loss_curve(prepared, tmp_path):
    ref = _cli(_args(prepared, tmp_path / "ref", ["train.ckpt_every=3"]))
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    ref_losses = _losses(tmp_path / "ref")
    n_steps = len(ref_losses)
    assert n_steps >= 8 and ref_losses[-1][0] == n_steps

    run = tmp_path / "killed"
    p = _cli(_args(prepared, run, ["train.ckpt_every=3"]))
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step_00000006").is_dir():
        assert p.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "final").exists()
    r = _cli(_args(prepared, run, ["train.ckpt_every=3"]) + ["--resume"])
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out
    assert "resumed from" in out
    assert _losses(run) == ref_losses  # bitwise: same floats, same steps, nothing duplicated
    # the final export is a HF-layout checkpoint with the last stage's RoPE theta
    cfg = json.loads((run / "final" / "config.json").read_text())
    assert cfg["rope_theta"] == 40000.0 and cfg["num_nextn_predict_layers"] == 1
    # the resolved config travels with the run folder, every checkpoint and the export
    import torch
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["batch"]["batch_size"] == 8
    assert yaml.safe_load((run / "final" / "openmimo_config.yaml").read_text())["stages"][1]["name"] == "b"
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    assert torch.load(ckpt / "state.pt", weights_only=False)["config"]["optim"]["warmup_tokens"] == 300
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in recs if "stage" in r]
    assert stages[0] == "a" and stages[-1] == "b"
    assert {r["seq_len"] for r in recs if r.get("stage") == "b"} == {64}


def test_fused_loss_follows_the_unfused_loss_curve(prepared, tmp_path):
    """train.fused_loss=true (each head's loss in row chunks) trains the same model: the same losses, MTP losses
    and gradient norms, step for step, up to float rounding."""
    curves = {}
    for fused in ("false", "true"):
        p = _cli(_args(prepared, tmp_path / fused, [f"train.fused_loss={fused}"]))
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
        curves[fused] = _losses(tmp_path / fused)
    plain, fused = curves["false"], curves["true"]
    assert len(plain) >= 8 and [r[0] for r in fused] == [r[0] for r in plain]
    for a, b in zip(fused, plain):
        assert a[1:] == pytest.approx(b[1:], rel=1e-4, abs=1e-6)


def test_fsdp2_two_processes_match_one(prepared, tmp_path):
    # no batch warm-up: its rounding to a multiple of the world size would change the global batch
    extra = ["train.max_steps=4", "train.ckpt_every=0", "train.device=cpu", "batch.warmup_batch_size=0"]
    single = _cli(_args(prepared, tmp_path / "one", extra))
    out, _ = single.communicate(timeout=300)
    assert single.returncode == 0, out
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                           f"--master-port={port}", "--master-addr=127.0.0.1",
                           "-m", "openmimo.cli", *_args(prepared, tmp_path / "two", extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert dist.returncode == 0, dist.stdout[-3000:] + dist.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    for (s1, l1, m1, g1), (s2, l2, m2, g2) in zip(a, b):
        assert s1 == s2
        assert abs(l1 - l2) <= 1e-5 and abs(m1 - m2) <= 1e-5, (a, b)
        assert abs(g1 - g2) <= 1e-4 * max(1.0, g1)


@pytest.mark.parametrize("override, pattern", [
    ("stages=[{mixture: {web: 0.7, math: 0.2}}]", "sum to 0.9"),
    ("stages=[{mixture: {nope: 1.0}}]", "unknown source 'nope'"),
    ("stages=[{seq_len: 4096}]", "longer than the model supports"),
])
def test_bad_input_fails_before_training(tmp_path, override, pattern):
    r = subprocess.run([sys.executable, "-m", "openmimo.cli", "pretrain", f"train.out_dir={tmp_path}", override],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and pattern in r.stderr, r.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_empty_and_malformed_corpus_files_are_named(tmp_path):
    from openmimo.data.shards import tokenize_to_shards
    from openmimo.tokenizer import train_tokenizer

    tok = train_tokenizer(["hello world"] * 20, vocab_size=300)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.jsonl"):
        tokenize_to_shards([empty], tok, tmp_path / "s1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl.*2"):
        tokenize_to_shards([bad], tok, tmp_path / "s2")


def test_mtp_extend_trains_only_the_new_layers(prepared, tmp_path):
    import torch

    import openmimo

    r = _cli(_args(prepared, tmp_path / "base", ["train.max_steps=3", "train.ckpt_every=0"]))
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out
    src = {s: str(prepared / "shards" / s) for s in ("web", "math")}
    r = _cli(["mtp-extend", f"init={tmp_path / 'base' / 'final'}", "num_nextn_predict_layers=3", f"data.sources={json.dumps(src)}",
              "stages=[{tokens: 2048, seq_len: 32, rope_theta: 10000.0, mixture: {web: 0.5, math: 0.5}}]",
              "batch.batch_size=8", "batch.micro_batch_size=8", f"train.out_dir={tmp_path / 'ext'}"])
    out, _ = r.communicate(timeout=300)
    assert r.returncode == 0, out
    assert "per-depth MTP accuracy" in out
    base = openmimo.load_model(tmp_path / "base" / "final")
    ext = openmimo.load_model(tmp_path / "ext" / "final")
    assert ext.config.num_nextn_predict_layers == 3
    b, e = base.state_dict(), ext.state_dict()
    for k, v in b.items():  # main model and depth 1 frozen
        assert torch.equal(v, e[k]), k
    d1 = {k.split(".", 3)[3]: v for k, v in e.items() if k.startswith("model.mtp_layers.0.")}
    for depth in (1, 2):  # new depths started as copies of depth 1 and were trained
        dk = {k.split(".", 3)[3]: v for k, v in e.items() if k.startswith(f"model.mtp_layers.{depth}.")}
        assert dk.keys() == d1.keys()
        assert any(not torch.equal(dk[n], d1[n]) for n in dk)
    final = [json.loads(x) for x in (tmp_path / "ext" / "metrics.jsonl").read_text().splitlines()][-1]["final"]
    assert len(final["acc_after"]) == 4  # main + 3 depths
