"""SFT: labels from the chat template (hand-computed), packed rows equal documents trained one by one, decontamination,
the loss going down, and resume equality (bitwise) of SFT and mtp-extend through the shared run loop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openmimo.config import ConfigError, load
from openmimo.model.mimo import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[1]


def _conv(a, b):
    return [{"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "reasoning_content": f"{a} plus {b} makes {a + b}.",
             "content": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models here are tiny: one intra-op thread is many times faster on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random checkpoint with one MTP layer and a tokenizer trained on the chat records; SFT records."""
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import format_chat, train_tokenizer

    root = tmp_path_factory.mktemp("sft")
    convs = [_conv(a, b) for a in range(12) for b in range(6)]
    tok = train_tokenizer([format_chat(c) for c in convs], vocab_size=400)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     num_nextn_predict_layers=1, eos_token_id=tok.eos_id)
    build_model(cfg, seed=0).save_pretrained(root / "base", tokenizer=tok)
    (root / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs[:60]))
    (root / "val.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs[60:]))
    return root


def _tok(ckpt):
    from openmimo.tokenizer import load_tokenizer

    return load_tokenizer(ckpt / "base")


def test_labels_cover_exactly_the_assistant_turn_by_hand(ckpt):
    from openmimo.train.sft_data import load_sft_samples, row_tensors

    tok = _tok(ckpt)
    conv = _conv(3, 4)
    # the hand rendering of openmimo's template: header, then the trained assistant text, then the untrained newline
    head = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
    body = "<think>\n3 plus 4 makes 7.\n</think>\n\n3 + 4 = 7. The answer is \\boxed{7}.<|im_end|>"
    h, b, t = tok.encode(head), tok.encode(body), tok.encode("\n")
    assert tok.encode(head + body + "\n") == h + b + t  # special tokens split the pieces
    path = ckpt / "one.jsonl"
    path.write_text(json.dumps({"messages": conv}) + "\n"
                    + json.dumps({"prompt": "What is 3 + 4?", "response": "3 + 4 = 7. The answer is \\boxed{7}.",
                                  "reasoning": "3 plus 4 makes 7."}) + "\n")
    samples, counts = load_sft_samples(str(path), tok, seq_len=200)
    assert counts["kept"] == 2 and samples[0] == samples[1]  # prompt/response pairs render the same conversation
    ids, mask = samples[0]
    assert ids == h + b + t and mask == [0] * len(h) + [1] * len(b) + [0] * len(t)
    assert tok.think_start_id in [i for i, m in zip(ids, mask) if m]  # the reasoning block is a training target
    rows = row_tensors(samples, [[0, 1]], 2 * len(ids) + 5, pad_id=tok.pad_id)
    n = len(ids)
    want = [i if m else IGNORE_INDEX for i, m in zip(ids, mask)]
    assert rows["labels"][0].tolist() == want + want + [IGNORE_INDEX] * 5
    assert rows["position_ids"][0].tolist() == list(range(n)) + list(range(n)) + list(range(5))
    assert rows["input_ids"][0, 2 * n:].tolist() == [tok.pad_id] * 5


def test_packing_is_first_fit_and_drops_what_does_not_fit(ckpt):
    from openmimo.train.sft_data import load_sft_samples, pack

    assert pack([3, 4, 2, 5, 1], [0, 1, 2, 3, 4], 7) == [[0, 1], [2, 3], [4]]
    assert pack([5, 5, 2, 2], [0, 1, 2, 3], 7) == [[0, 2], [1, 3]]  # first fit: short samples fill earlier rows
    assert pack([5, 5, 2, 2], [0, 1, 2, 3], 7, open_rows=1) == [[0], [1, 2], [3]]  # one open row: sequential
    assert pack([8], [0], 7) == [[0]]  # never called with a too-long sample: the loader drops them first
    samples, counts = load_sft_samples(str(ckpt / "train.jsonl"), _tok(ckpt), seq_len=20)
    assert counts["too_long"] == 60 and counts["kept"] == 0


def test_packed_rows_equal_documents_trained_one_by_one(ckpt):
    """The oracle: a packed row's loss sums (main and MTP) and their gradients equal those of its samples run alone."""
    from openmimo.model.hf import load_model
    from openmimo.train.sft_data import load_sft_samples, row_tensors

    tok = _tok(ckpt)
    samples, _ = load_sft_samples(str(ckpt / "train.jsonl"), tok, seq_len=256, max_samples=4)
    model = load_model(ckpt / "base", dtype=torch.float32)

    def run(batch):
        model.zero_grad()
        out = model(batch["input_ids"], position_ids=batch.get("position_ids"), labels=batch["labels"])
        total = sum(out.loss_sums)
        total.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return [float(s.detach()) for s in out.loss_sums], [int(n) for n in out.num_targets], grads

    packed = row_tensors(samples, [[0, 1, 2, 3]], 256, tok.pad_id)
    sums, ns, g_packed = run(packed)
    alone_sums, alone_ns, g_alone = [0.0, 0.0], [0, 0], 0
    for i in range(4):
        one = row_tensors(samples, [[i]], len(samples[i][0]), tok.pad_id)
        s, n, g = run({"input_ids": one["input_ids"], "labels": one["labels"]})  # no packing at all
        alone_sums = [a + b for a, b in zip(alone_sums, s)]
        alone_ns = [a + b for a, b in zip(alone_ns, n)]
        g_alone = g_alone + g
    assert ns == alone_ns and ns[0] == sum(sum(m[1:]) for _, m in samples)
    assert sums == pytest.approx(alone_sums, rel=1e-5)
    assert torch.allclose(g_packed, g_alone, atol=1e-5)


def test_decontamination_drops_a_planted_problem_and_keeps_a_near_miss(ckpt, tmp_path):
    from openmimo.train.sft import SFTDataConfig, build_decontaminator
    from openmimo.train.sft_data import load_sft_samples

    problem = ("A train leaves the station at nine in the morning and travels at sixty miles per hour until it "
               "reaches a city that is one hundred and twenty miles away; at what time does it arrive there")
    (tmp_path / "bench" / "math").mkdir(parents=True)
    # planted in a benchmark file of the evaluation tasks (AIME 2024's name and fields)
    (tmp_path / "bench" / "math" / "aime24_test.jsonl").write_text(
        json.dumps({"id": 1, "problem": problem, "solution": "", "answer": "011"}) + "\n")
    words = problem.split()
    near = " ".join(w if i % 8 else w + "s" for i, w in enumerate(words))  # every 8th word changed: no 16-gram left
    recs = [{"prompt": "Solve: " + problem.upper(), "response": "eleven"},  # planted (case does not hide it)
            {"prompt": near, "response": "eleven"}, {"prompt": "What is 2 + 2?", "response": "4"}]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    dec = build_decontaminator(SFTDataConfig(train_path=str(path), benchmarks_dir=str(tmp_path / "bench")))
    samples, counts = load_sft_samples(str(path), _tok(ckpt), seq_len=400, decontaminator=dec)
    assert counts["contaminated"] == 1 and counts["contaminated_by"] == {"aime24": 1} and counts["kept"] == 2
    assert build_decontaminator(SFTDataConfig(train_path="x", benchmarks_dir=str(tmp_path / "none"))) is None


def test_bad_records_are_named(ckpt, tmp_path):
    from openmimo.train.sft_data import load_sft_samples

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": _conv(1, 2)}) + "\n" + json.dumps({"text": "no chat"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        load_sft_samples(str(bad), _tok(ckpt), 100)
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: .*no assistant turn"):
        load_sft_samples(str(bad), _tok(ckpt), 100)
    bad.write_text(json.dumps({"messages": [{"role": "robot", "content": "hi"}]}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: .*unknown role"):
        load_sft_samples(str(bad), _tok(ckpt), 100)
    from openmimo.train.sft import SFTConfig

    with pytest.raises(ConfigError, match="train_path"):
        load(SFTConfig, None, [])


def _sft_cfg(ckpt, out, extra=()):
    from openmimo.train.sft import SFTConfig

    return load(SFTConfig, None, [f"init={ckpt / 'base'}", f"data.train_path={ckpt / 'train.jsonl'}",
                                  f"data.val_path={ckpt / 'val.jsonl'}", "data.seq_len=96", "data.epochs=2",
                                  "data.benchmarks_dir=", "batch.batch_size=4", "batch.micro_batch_size=2",
                                  "optim.lr=0.01", "optim.warmup_steps=2", "train.device=cpu", "train.log_every=1",
                                  "train.ckpt_every=3", f"train.out_dir={out}", *extra])


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    from openmimo.model.hf import load_model

    return torch.cat([p.detach().flatten() for p in load_model(path, dtype=torch.float32).parameters()])


def test_sft_lowers_the_held_out_loss_trains_mtp_and_resumes_bitwise(ckpt, tmp_path):
    from openmimo.train.sft import main

    res = main(_sft_cfg(ckpt, tmp_path / "full"))
    recs = _metrics(tmp_path / "full")
    start = next(r["val"] for r in recs if "val" in r and r["step"] == 0)
    assert res["val"]["loss"] < start["loss"] - 0.5 and res["val"]["mtp1_loss"] < start["mtp1_loss"] - 0.5
    steps = [r for r in recs if "loss" in r]
    assert steps[-1]["epoch"] == 2.0 and res["samples"] == 120 and steps[-1]["lr"] < steps[2]["lr"]
    base, full = _weights(ckpt / "base"), _weights(tmp_path / "full" / "final")
    assert not torch.equal(base, full)
    # stop after 4 steps (a checkpoint at 3 and the stop's own at 4), then --resume to the end: the same run
    main(_sft_cfg(ckpt, tmp_path / "split", ["train.max_steps=4"]))
    main(_sft_cfg(ckpt, tmp_path / "split"), resume=True)
    assert torch.equal(_weights(tmp_path / "split" / "final"), full)
    loss = lambda rs: [(r["step"], r["loss"], r["mtp1_loss"], r["lr"]) for r in rs if "loss" in r]  # noqa: E731
    assert loss(_metrics(tmp_path / "split")) == loss(recs)


def test_sft_killed_with_sigkill_resumes_to_the_same_weights(ckpt, tmp_path):
    args = [sys.executable, "-m", "openmimo.cli", "sft", f"init={ckpt / 'base'}", f"data.train_path={ckpt / 'train.jsonl'}",
            "data.seq_len=96", "data.epochs=3", "data.benchmarks_dir=", "batch.batch_size=4", "batch.micro_batch_size=4",
            "optim.lr=0.01", "train.device=cpu", "train.ckpt_every=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as the in-process reference run (one thread)
    from openmimo.train.sft import SFTConfig, main

    main(load(SFTConfig, None, args[4:] + [f"train.out_dir={tmp_path / 'ref'}"]))
    run = tmp_path / "killed"
    p = subprocess.Popen(args + [f"train.out_dir={run}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "step_00000004").is_dir():
        assert p.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = subprocess.run(args + [f"train.out_dir={run}", "--resume"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert torch.equal(_weights(run / "final"), _weights(tmp_path / "ref" / "final"))


def test_mtp_extend_resumes_bitwise(tiny_mtp_base, tmp_path):
    """mtp-extend gained checkpoints and --resume with the shared run loop: 2 steps + resume == 4 steps."""
    from openmimo.train.mtp_extend import MTPExtendConfig, main

    def cfg_for(out, extra=()):
        return load(MTPExtendConfig, None, [f"init={tiny_mtp_base / 'base'}", "num_nextn_predict_layers=2",
                                            f"data.sources={json.dumps({'web': str(tiny_mtp_base / 'shards')})}",
                                            "stages=[{tokens: 1024, seq_len: 32, mixture: {web: 1.0}}]",
                                            "batch.batch_size=8", "batch.micro_batch_size=8", "train.device=cpu",
                                            "train.ckpt_every=1", f"train.out_dir={out}", *extra])

    main(cfg_for(tmp_path / "full"))
    main(cfg_for(tmp_path / "split", ["train.max_steps=2"]))
    with pytest.raises(Exception, match="another run's checkpoints"):
        main(cfg_for(tmp_path / "split"))  # a fresh start over a run's checkpoints is refused, as in every stage
    res = main(cfg_for(tmp_path / "split"), resume=True)
    assert res["steps"] == 4
    assert torch.equal(_weights(tmp_path / "split" / "final"), _weights(tmp_path / "full" / "final"))


def test_world_traces_are_rewritten_for_another_world_and_reused_for_the_same(tmp_path, capsys):
    from types import SimpleNamespace

    from openmimo.data.world import make_world
    from openmimo.train.sft import SFTDataConfig, prepare_world_traces

    rt = SimpleNamespace(is_main=True, distributed=False)
    for seed in (0, 1):
        make_world(tmp_path / f"world{seed}", seed=seed, scale=0.05)
    run = tmp_path / "run"
    d0 = SFTDataConfig(world_dir=str(tmp_path / "world0"), world_traces=20, world_trace_levels=[1])
    path = prepare_world_traces(d0, run, rt)
    first = path.read_text()
    stamp = path.stat().st_mtime_ns
    assert prepare_world_traces(d0, run, rt) == path and path.stat().st_mtime_ns == stamp  # same spec: reused
    d1 = SFTDataConfig(world_dir=str(tmp_path / "world1"), world_traces=20, world_trace_levels=[1])
    prepare_world_traces(d1, run, rt)
    assert "holds traces of another world or setting: rewriting it" in capsys.readouterr().out
    assert path.read_text() != first
    problems = {json.loads(x)["messages"][0]["content"] for x in path.read_text().splitlines()}
    train1 = {json.loads(x)["problem"] for x in (tmp_path / "world1" / "math" / "train.jsonl").read_text().splitlines()}
    assert all(p.split("\n")[0] in train1 for p in problems)  # the traces are world 1's training problems
