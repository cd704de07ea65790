"""`openmimo rl` end to end on a tiny random checkpoint: metrics, engine log-probs = trainer's, exact resume."""

import json

import pytest
import torch

from openmimo.config import ConfigError, load
from openmimo.eval.tasks import get_task
from openmimo.rl.batching import collate
from openmimo.rl.config import RLConfig
from openmimo.rl.problems import load_problems
from openmimo.rl.trainer import RLRun
from openmimo.tokenizer import train_tokenizer


@pytest.fixture
def ckpt(tiny_math_ckpt):
    return tiny_math_ckpt


def _cfg(root, out, steps, mode="early_termination"):
    return load(RLConfig, None, [f"train.model_path={root / 'base'}", f"data.train_path={root / 'train.jsonl'}",
                                 f"data.val_path={root / 'train.jsonl'}", "data.val_problems=3", f"train.out_dir={out}",
                                 f"train.max_steps={steps}", "train.eval_every=0", "train.ckpt_every=1", "train.val_n=2",
                                 "rollout.n=4", "rollout.batch_groups=2", "rollout.max_launch_factor=2",
                                 f"rollout.mode={mode}", "gen.max_new_tokens=6", "gen.max_slots=16",
                                 "gen.max_len=64", "actor.lr=0.01", "actor.ppo_mini_batch_size=2",
                                 "train.reward_workers=1"])


def _fake_rewards(run):
    """Deterministic stand-in scores (the math reward cannot pass on a random model): reward 1 when
    the first response token id is even, so groups have variance and updates happen."""
    from concurrent.futures import Future

    def score(problem, fin):
        f = Future()
        f.set_result(float(fin.token_ids[0] % 2 == 0))
        return f

    run.rewards.score_fn = score


def _train(cfg, resume=False):
    run = RLRun(cfg, resume=resume)
    _fake_rewards(run)
    try:
        with _nowarn():
            run.train()
        return run, torch.cat([p.detach().flatten() for p in run.model.parameters()])
    finally:
        run.close()


class _nowarn:
    def __enter__(self):
        import warnings

        self.cm = warnings.catch_warnings()
        self.cm.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        self.cm.__exit__(*a)


def test_rl_run_updates_syncs_weights_and_resumes_exactly(ckpt, tmp_path):
    run, full = _train(_cfg(ckpt, tmp_path / "a", 2))
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "rollout/time_s" in x]
    assert len(steps) == 2 and all(s["actor/updates"] >= 1 for s in steps)
    # one update per step: at the first one the engine's log-probs equal the trainer's (ratio 1 everywhere)
    assert abs(steps[0]["actor/ratio_min"] - 1) < 1e-4 and abs(steps[0]["actor/ratio_max"] - 1) < 1e-4
    assert "pass@1" in lines[-1]["val_final"] and (tmp_path / "a" / "final" / "config.json").is_file()
    base = torch.cat([p.detach().flatten() for p in build_model_from(ckpt).parameters()])
    assert not torch.allclose(full, base)
    engine_w = torch.cat([p.detach().flatten() for p in run.engine.model.parameters()])
    assert torch.equal(engine_w, full)  # the engine generates with the new weights
    # one step, then --resume for the second: the same weights as two steps in one go
    _train(_cfg(ckpt, tmp_path / "b", 1))
    _, resumed = _train(_cfg(ckpt, tmp_path / "b", 2), resume=True)
    assert torch.allclose(full, resumed, atol=1e-6)


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_lr_schedule_is_logged_per_step_and_budget_horizon_reads_elapsed_time(ckpt, tmp_path):
    cfg = _cfg(ckpt, tmp_path / "lr", 2)
    cfg.actor.lr_scheduler_type, cfg.actor.min_lr_ratio = "cosine", 0.1
    _train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "lr" / "metrics.jsonl").read_text().splitlines()]
    lrs = [x["actor/lr"] for x in lines if "actor/lr" in x]
    # step 0 of 2: the peak; step 1 (half-way): 0.001 + 0.5 * (0.01 - 0.001) * (1 + cos(pi / 2)) = 0.0055
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.0055)
    cfg.actor.lr_scheduler_type, cfg.actor.min_lr_ratio, cfg.actor.lr_horizon = "linear", 0.0, "budget"
    cfg.train.max_steps, cfg.train.time_limit_s, cfg.train.out_dir = 10, 100.0, str(tmp_path / "budget")
    run = RLRun(cfg)
    try:
        run.step, run.elapsed_s = 2, 60.0  # 20% of the steps but 60% of the time budget: time decides
        assert run.lr() == pytest.approx(0.004)
        run.elapsed_s = 10.0  # 20% of the steps, 10% of the time: steps decide
        assert run.lr() == pytest.approx(0.008)
        cfg.actor.lr_horizon = "steps"
        run.elapsed_s = 60.0
        assert run.lr() == pytest.approx(0.008)
    finally:
        run.close()


def test_mtp_layers_are_frozen_in_rl_and_resume_exactly(ckpt, tmp_path):
    # RL's loss never reaches the MTP layers: they have no optimizer state, so they must be frozen, or a checkpoint
    # cannot be loaded back (torch refuses a trainable parameter without saved optimizer state)
    import shutil

    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import load_tokenizer

    src = build_model_from(ckpt)
    cfg = src.config.__class__(**{**src.config.__dict__, "num_nextn_predict_layers": 1})
    root = tmp_path / "mtp"
    build_model(cfg, seed=0).save_pretrained(root / "base", tokenizer=load_tokenizer(ckpt / "base"))
    shutil.copy(ckpt / "train.jsonl", root / "train.jsonl")
    run, full = _train(_cfg(root, tmp_path / "m2", 2))
    mtp = [p for n, p in run.model.named_parameters() if "mtp_layers" in n]
    assert mtp and not any(p.requires_grad for p in mtp)
    base_mtp = [p for n, p in build_model_from(root).named_parameters() if "mtp_layers" in n]
    assert all(torch.equal(a, b) for a, b in zip(mtp, base_mtp))  # untouched
    _train(_cfg(root, tmp_path / "m1", 1))
    _, resumed = _train(_cfg(root, tmp_path / "m1", 2), resume=True)
    assert torch.allclose(full, resumed, atol=1e-6)


def test_ema_weights_follow_the_hand_recursion_are_exported_and_resume_exactly(ckpt, tmp_path):
    from openmimo.model.hf import load_model

    d = 0.75
    cfg = _cfg(ckpt, tmp_path / "e1", 1)
    cfg.actor.ema_decay = d
    run, w1 = _train(cfg)
    base = _weights(build_model_from(ckpt))
    assert torch.allclose(_weights(run.ema), d * base + (1 - d) * w1, atol=1e-7)
    # the exported model is the average, and the engine was handed back the trained weights after validation
    assert torch.allclose(_weights(load_model(tmp_path / "e1" / "final", dtype=torch.float32)), _weights(run.ema))
    assert torch.equal(_weights(run.engine.model), w1)
    # two steps in one go == one step, then --resume: model and average
    cfg2 = _cfg(ckpt, tmp_path / "e2", 2)
    cfg2.actor.ema_decay = d
    full, w2 = _train(cfg2)
    cfg1 = _cfg(ckpt, tmp_path / "e3", 1)
    cfg1.actor.ema_decay = d
    _train(cfg1)
    cfg3 = _cfg(ckpt, tmp_path / "e3", 2)
    cfg3.actor.ema_decay = d
    resumed, w2r = _train(cfg3, resume=True)
    assert torch.allclose(w2, w2r, atol=1e-6) and torch.allclose(_weights(full.ema), _weights(resumed.ema), atol=1e-6)


def _p_even_first_token(model, problems) -> float:
    """The policy's probability of an even first response token, averaged over the prompts (exact, no sampling)."""
    with torch.no_grad():
        probs = []
        for p in problems:
            logits = model(torch.tensor([p["prompt_ids"]])).logits[0, -1].float()
            probs.append(torch.softmax(logits, -1)[0::2].sum())
        return float(torch.stack(probs).mean())


def test_rl_raises_the_reward_it_is_trained_on(ckpt, tmp_path):
    # the update must move the policy toward what the reward pays for: with the stand-in reward (1 when the
    # first response token is even) the probability of an even first token rises on the training prompts
    cfg = _cfg(ckpt, tmp_path / "learn", 20)
    run = RLRun(cfg)
    _fake_rewards(run)
    try:
        before = _p_even_first_token(run.model, run.problems)
        with _nowarn():
            run.train()
        after = _p_even_first_token(run.model, run.problems)
    finally:
        run.close()
    assert after > before + 0.1, (before, after)


def test_val_levels_filter_validation_records(ckpt, tmp_path):
    cfg = _cfg(ckpt, tmp_path / "v", 1)
    cfg.data.val_levels, cfg.data.val_problems = [2], 100
    run = RLRun(cfg)
    try:
        assert len(run.val) == 6 and all(p["level"] == 2 for p in run.val)
    finally:
        run.close()


def build_model_from(root):
    from openmimo.model.hf import load_model

    return load_model(root / "base", dtype=torch.float32)


def test_bad_data_and_config_errors(ckpt, tmp_path):
    from openmimo.tokenizer import load_tokenizer

    tok = load_tokenizer(ckpt / "base")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "answer": "1"}\n{"problem": "y"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2"):
        load_problems(str(bad), "math", tok, 100)
    probs, counts = load_problems(str(ckpt / "train.jsonl"), "math", tok, 100)
    assert counts == {"kept": 12, "too_long": 0, "other_level": 0, "math": 12, "code": 0}
    assert all(p["prompt_ids"] and p["reward_kind"] == "math" for p in probs)
    with pytest.raises(ConfigError, match="no usable problems"):
        load_problems(str(ckpt / "train.jsonl"), "math", tok, 2)  # every prompt is longer: counted, then named
    with pytest.raises(ConfigError, match="model_path"):
        load(RLConfig, None, [])
    with pytest.raises(ConfigError, match="kind"):
        load(RLConfig, None, ["train.model_path=x", "data.kind=chess"])
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        load(RLConfig, None, ["train.model_path=x", "actor.lr_scheduler_type=step"])
    with pytest.raises(ConfigError, match="lr_horizon"):
        load(RLConfig, None, ["train.model_path=x", "actor.lr_horizon=tokens"])
    with pytest.raises(ConfigError, match="ema_decay"):
        load(RLConfig, None, ["train.model_path=x", "actor.ema_decay=1.0"])


def test_collate_right_pads_and_masks_responses():
    mb = collate([{"ids": [5, 6, 7], "mask": [0, 1, 1], "old": [0, -1.0, -2.0], "adv": 1.5},
                  {"ids": [5, 8], "mask": [0, 1], "old": [0, -0.5], "adv": -1.5}], pad_id=0)
    assert mb["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert mb["response_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]
    assert mb["old_logprobs"].tolist() == [[0, -1, -2], [0, -0.5, 0]]
    assert mb["advantages"].tolist() == [1.5, -1.5]


def test_code_reward_in_rl_judges_world_records_with_their_function_names():
    """World code records (LiveCodeBench fields, functional and stdin) score 1 with the reference
    solution and less with a wrong program; a full pass is exactly 1.0 (the pass threshold)."""
    from types import SimpleNamespace

    from openmimo.data.world import generate
    from openmimo.rl.backends import make_score_fn
    from openmimo.tokenizer import train_tokenizer

    recs = generate(seed=0, scale=0.05)["files"]["code/train.jsonl"]
    kinds = {r["testtype"]: r for r in recs}
    assert set(kinds) == {"functional", "stdin"}
    tok = train_tokenizer(["def f(x):\n    return x\n"] * 10, vocab_size=300)
    score = make_score_fn("code", tok, None, 10.0)
    for r in kinds.values():
        good = "<think>ok</think>\n```python\n" + r["solution"] + "\n```"
        bad = "<think>ok</think>\n```python\nprint(-12345)\n```"
        assert score(r, SimpleNamespace(token_ids=tok.encode(good))).result(timeout=120).score == 1.0
        assert score(r, SimpleNamespace(token_ids=tok.encode(bad))).result(timeout=120).score < 1.0


def test_load_problems_filters_levels_and_counts(tmp_path):
    import json

    from openmimo.rl.problems import load_problems
    from openmimo.tokenizer import train_tokenizer

    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1), "level": 1 + i % 3}) + "\n"
                         for i in range(9)))
    tok = train_tokenizer(["What is 1 + 1?"] * 10, vocab_size=300)
    probs, counts = load_problems(str(p), "math", tok, 256, levels=[1, 2])
    assert [r["level"] for r in probs] == [1, 2, 1, 2, 1, 2]
    assert counts == {"kept": 6, "too_long": 0, "other_level": 3, "math": 6, "code": 0}


def test_auto_kind_mixes_math_and_code_files(tmp_path):
    """kind=auto: records with tests are code (scored by the judge, prompt in the pre-training format),
    the others math; the level filter leaves level-less code records alone; limits apply per file."""
    from openmimo.rl.backends import make_score_fn
    from openmimo.rl.problems import load_problems
    from openmimo.tokenizer import train_tokenizer

    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1), "level": 1 + i % 2}) + "\n"
                         for i in range(6)))
    c = tmp_path / "c.jsonl"
    tests = [{"input": "2\n", "output": "4\n", "testtype": "stdin"}]
    c.write_text(json.dumps({"question_content": "Print twice the number.", "tests": tests}) + "\n")
    tok = train_tokenizer(["What is 1 + 1? Print twice the number. Solution:"] * 10, vocab_size=300)
    probs, counts = load_problems([str(m), str(c)], "auto", tok, 256, levels=[1])
    assert [p["reward_kind"] for p in probs] == ["math"] * 3 + ["code"]
    assert counts["math"] == 3 and counts["code"] == 1 and counts["other_level"] == 3
    assert tok.decode(probs[-1]["prompt_ids"]).endswith("Solution:\n```python\n")
    assert load_problems([str(m), str(c)], "auto", tok, 256, limit=2)[1]["kept"] == 3  # 2 math + 1 code

    class Fin:  # the engine's finished sequence: the completion continues inside the opened fence
        def __init__(self, text):
            self.token_ids = tok.encode(text)

    score = make_score_fn("auto", tok, pool=None, timeout=10.0)
    good = score(probs[-1], Fin("print(2 * int(input()))\n```\n")).result()
    bad = score(probs[-1], Fin("print(int(input()))\n```\n")).result()
    right = score(probs[0], Fin(" 0 + 1 = 1.\nThe answer is \\boxed{1}.")).result()
    assert (good.score, bad.score, right.score) == (1.0, 0.0, 1.0)


def test_chat_prompt_style_renders_the_template_and_reads_after_the_reasoning(tmp_path):
    """prompt_style chat: the prompt is the tokenizer's chat template with the generation prompt; the score reads
    the boxed answer after the <think> block (a boxed number inside the reasoning does not count), and a code
    answer must open its own fence."""
    from openmimo.rl.backends import make_score_fn

    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"problem": "What is 2 + 1?", "answer": "3", "level": 1}) + "\n")
    c = tmp_path / "c.jsonl"
    tests = [{"input": "2\n", "output": "4\n", "testtype": "stdin"}]
    c.write_text(json.dumps({"question_content": "Print twice the number.", "tests": tests}) + "\n")
    tok = train_tokenizer(["What is 2 + 1? Print twice the number. The answer is"] * 10, vocab_size=300)
    probs, _ = load_problems([str(m), str(c)], "auto", tok, 256, style="chat")
    msgs = [{"role": "user", "content": get_task("world_math").chat_content(probs[0])}]
    assert probs[0]["prompt_ids"] == tok.encode(tok.apply_chat_template(msgs, add_generation_prompt=True))
    assert tok.decode(probs[0]["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert load_problems(str(m), "math", tok, 256)[0][0]["prompt_ids"] != probs[0]["prompt_ids"]  # base differs

    class Fin:
        def __init__(self, text):
            self.token_ids = tok.encode(text)

    score = make_score_fn("auto", tok, pool=None, timeout=10.0, style="chat")
    cases = [(probs[0], "<think>\n2 + 1 = 3.\n</think>\n\nThe answer is \\boxed{3}.<|im_end|>", 1.0),
             (probs[0], "<think>\nmaybe \\boxed{3}\n</think>\n\nThe answer is \\boxed{4}.<|im_end|>", 0.0),
             (probs[0], "<think>\nThe answer is \\boxed{3}.", 0.0),  # the reasoning never closed: no answer
             (probs[1], "<think>\ndouble it\n</think>\n\n```python\nprint(2 * int(input()))\n```<|im_end|>", 1.0),
             (probs[1], "print(2 * int(input()))\n```\n", 0.0)]  # no fence of its own: nothing to judge
    assert [score(p, Fin(t)).result().score for p, t, _ in cases] == [want for _, _, want in cases]
    with pytest.raises(ValueError, match="prompt_style"):
        load(RLConfig, None, ["data.prompt_style=fancy"]).data.check()
