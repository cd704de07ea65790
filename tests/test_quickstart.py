"""The quickstart: fixed work end to end (a scaled-down run), its override routing and its plain warnings."""

import json

from openmimo.config import load
from openmimo.quickstart import CONFIGS, RL_READY_MATH, main, readiness_note, split_overrides
from openmimo.rl.config import RLConfig
from openmimo.train.config import PretrainConfig


def test_overrides_route_by_prefix():
    assert split_overrides(["pretrain.optim.lr=1e-3", "actor.lr=1e-4", "pretrain.train.seed=3", "sft.optim.lr=2e-4"]) \
        == (["optim.lr=1e-3", "train.seed=3"], ["optim.lr=2e-4"], ["actor.lr=1e-4"])


def test_readiness_note_only_below_the_threshold():
    assert readiness_note(RL_READY_MATH) is None and readiness_note(0.4) is None
    note = readiness_note(0.073)
    assert "7.3%" in note and "below" in note and "phase change" in note


def test_the_presets_are_fixed_work():
    """No time guard decides how much the main job learns: it is the same on a fast and a slow machine."""
    assert load(PretrainConfig, CONFIGS / "tiny.yaml").train.time_limit_s == 0
    rl = load(RLConfig, CONFIGS / "rl_tiny.yaml")
    assert rl.train.time_limit_s == 0 and rl.train.max_steps > 0


SMALL = ["pretrain.stages.0.tokens=8192", "pretrain.stages.1.tokens=4096", "pretrain.stages.2.tokens=4096",
         "pretrain.optim.warmup_tokens=2048", "pretrain.optim.constant_tokens=4096", "pretrain.optim.decay_tokens=8192",
         "pretrain.train.eval_problems=4", "pretrain.data.world_scale=0.05", "pretrain.train.ckpt_every=0",
         "data.val_problems=4", "train.val_n=2", "rollout.batch_groups=2", "rollout.n=2", "gen.max_new_tokens=8",
         "train.ckpt_every=0", "actor.ppo_mini_batch_size=2"]


def test_quickstart_runs_its_fixed_work_and_reports(tmp_path, capsys):
    out = tmp_path / "qs"
    res = main(str(out), rl_steps=2, overrides=SMALL, seed=1)
    saved = json.loads((out / "quickstart.json").read_text())
    assert saved["rl_steps"] == res["rl_steps"] == 2 and saved["seed"] == 1
    assert saved["pretrain_tokens"] >= 16384  # every token of the schedule, no time guard
    assert 0.0 <= saved["pretrain_math_acc"] <= 1.0 and "math" in saved["before"] and "math" in saved["after"]
    captured = capsys.readouterr()
    text = captured.out
    assert "1/2 pre-training" in text and "2/2 RL: 2 GRPO steps" in text and "Measured with seeds 0-2" in text
    assert saved["below_rl_ready"] == (saved["pretrain_math_acc"] < RL_READY_MATH)
    assert ("WARNING" in text) == saved["below_rl_ready"]
    # the pre-training data came through `openmimo data` (dedup, decontamination, tags), its logs kept aside
    card = json.loads((out / "pretrain" / "data" / "pipeline" / "data_card.json").read_text())
    assert card["sources"]["pages"]["read"] > card["sources"]["pages"]["kept"] > 0
    assert "the world through `openmimo data`" in text and "Launching pipeline" not in text + captured.err
    assert (out / "pretrain" / "data" / "pipeline.log").read_text().count("Launching pipeline") > 0


def test_sft_rl_recipe_runs_every_stage_and_prints_the_table(tmp_path, capsys):
    """pretrain -> RL-zero, and pretrain -> SFT -> RL with chat prompts: four stages, one table, one json."""
    out = tmp_path / "qs"
    res = main(str(out), rl_steps=1, seed=0, recipe="sft-rl",
               overrides=SMALL + ["sft.data.world_traces=16", "sft.batch.batch_size=2", "sft.batch.micro_batch_size=2",
                                  "sft.train.ckpt_every=0"])
    saved = json.loads((out / "quickstart.json").read_text())
    assert saved["recipe"] == "sft-rl" and saved["sft_rl"]["rl_steps"] == 1 and saved["sft_rl"]["sft_steps"] >= 1
    assert "math" in saved["sft_rl"]["before"] and "math" in saved["sft_rl"]["after"]
    assert (out / "sft" / "final" / "config.json").is_file() and (out / "sft-rl" / "final").is_dir()
    rl_cfg = json.loads((out / "sft-rl" / "run.json").read_text())["config"]
    assert rl_cfg["data"]["prompt_style"] == "chat" and rl_cfg["train"]["model_path"] == str(out / "sft" / "final")
    assert json.loads((out / "rl" / "run.json").read_text())["config"]["data"]["prompt_style"] == "base"
    text = capsys.readouterr().out
    assert "3/4 SFT" in text and "4/4 RL on the SFT model" in text and "base   RL-zero   SFT   SFT+RL" in text
    assert "SFT then RL" in text and ("beats RL-zero" in text or "does not beat RL-zero" in text)
