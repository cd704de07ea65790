"""Run folders cannot be clobbered: identity, refusal without --overwrite, compatible --resume, corrupt-checkpoint
fallback, a plain word when --resume finds nothing.  Each case through the real pretrain stage (tiny model)."""

import json
import warnings

import pytest

from openmimo.checkpoint import list_checkpoints
from openmimo.cli import UsageError
from openmimo.cli import main as cli_main
from openmimo.config import load
from openmimo.runs import IDENTITY, first_difference, open_run_folder
from openmimo.train.config import PretrainConfig
from openmimo.train.pretrain import main as pretrain_main


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from openmimo.train.data import prepare_world

    d = tmp_path_factory.mktemp("data")
    prepare_world(load(PretrainConfig, None, ["data.world_scale=0.05", "data.tokenizer_vocab=300"]), d)
    return d


def _cfg(prepared, out, *extra):
    src = {s: str(prepared / "shards" / s) for s in ("math", "web")}
    return load(PretrainConfig, None, [
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
        "model.num_attention_heads=2", "model.num_key_value_heads=1", "model.max_position_embeddings=64",
        "model.num_nextn_predict_layers=0", f"data.sources={json.dumps(src)}",
        f"data.tokenizer={prepared / 'tokenizer'}", "data.world=false",
        "stages=[{name: a, tokens: 2048, seq_len: 32, rope_theta: 10000.0, mixture: {web: 0.5, math: 0.5}}]",
        "batch.batch_size=8", "batch.micro_batch_size=8", "optim.warmup_tokens=0", "optim.decay_tokens=2048",
        "train.log_every=1", "train.eval_problems=0", "train.ckpt_every=2", f"train.out_dir={out}", *extra])


def test_first_difference_names_the_key():
    assert first_difference({"model": {"a": 1, "b": 2}}, {"model": {"a": 1, "b": 3}}) == "model.b: saved 2, now 3"
    assert first_difference({"x": [1, 2]}, {"x": [1, 5]}) == "x.1: saved 2, now 5"
    assert first_difference({"x": 1}, {"x": 1, "y": 2}) == "y: saved '(absent)', now 2"
    assert first_difference({"x": {"k": [1]}}, {"x": {"k": [1]}}) is None


def test_fresh_start_over_another_runs_checkpoints_refuses_then_overwrites(prepared, tmp_path):
    out = tmp_path / "run"
    pretrain_main(_cfg(prepared, out))
    before = [p.name for p in list_checkpoints(out)]
    assert before and (out / IDENTITY).is_file()
    with pytest.raises(UsageError, match="holds another run's checkpoints .*--resume.*--overwrite"):
        pretrain_main(_cfg(prepared, out, "optim.lr=1e-3"))
    assert [p.name for p in list_checkpoints(out)] == before  # nothing touched
    pretrain_main(_cfg(prepared, out, "optim.lr=1e-3"), overwrite=True)
    saved = json.loads((out / IDENTITY).read_text())
    assert saved["config"]["optim"]["lr"] == 1e-3 and list_checkpoints(out)


def test_resume_with_another_model_shape_names_the_key_before_touching_anything(prepared, tmp_path):
    out = tmp_path / "run"
    pretrain_main(_cfg(prepared, out))
    config_yaml = (out / "config.yaml").read_text()
    with pytest.raises(UsageError, match=r"not compatible .*model\.hidden_size: saved 32, now 48"):
        pretrain_main(_cfg(prepared, out, "model.hidden_size=48"), resume=True)
    assert (out / "config.yaml").read_text() == config_yaml


def test_cli_reports_a_refusal_in_one_line_with_exit_2(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain_main(_cfg(prepared, out))
    src = {s: str(prepared / "shards" / s) for s in ("math", "web")}
    rc = cli_main(["pretrain", "model.hidden_size=32", "model.num_hidden_layers=1", f"data.sources={json.dumps(src)}",
                   f"data.tokenizer={prepared / 'tokenizer'}", "data.world=false", f"train.out_dir={out}"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err and "Traceback" not in err


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(prepared, tmp_path):
    out = tmp_path / "run"
    pretrain_main(_cfg(prepared, out, "train.keep_checkpoints=3"))
    ckpts = list_checkpoints(out)
    assert len(ckpts) >= 2
    state = ckpts[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a write cut short
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = pretrain_main(_cfg(prepared, out, "train.keep_checkpoints=3"), resume=True)
    msgs = [str(x.message) for x in w if "unreadable" in str(x.message)]
    assert msgs and ckpts[-1].name in msgs[0] and f"falling back to {ckpts[-2].name}" in msgs[0]
    assert res["tokens"] == 2048  # continued from the previous checkpoint to the end of the schedule


def test_resume_into_an_empty_folder_says_it_starts_fresh(tmp_path, capsys):
    open_run_folder(tmp_path / "new", {"model": {}}, resume=True, stage="pretrain")
    assert "no complete checkpoint" in capsys.readouterr().out and (tmp_path / "new" / IDENTITY).is_file()
    with pytest.raises(UsageError, match="exclude each other"):
        open_run_folder(tmp_path / "new", {}, resume=True, overwrite=True)


def test_resume_refuses_when_no_checkpoint_loads(prepared, tmp_path):
    out = tmp_path / "run"
    pretrain_main(_cfg(prepared, out))
    for c in list_checkpoints(out):
        (c / "state.pt").write_bytes(b"truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="no checkpoint in .* could be loaded"):
            pretrain_main(_cfg(prepared, out), resume=True)
    assert list_checkpoints(out)  # nothing was pruned by a fresh start
