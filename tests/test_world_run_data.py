"""WorldRunData names exactly the folders and files prepare_world writes, and later stages find them from a checkpoint."""

from pathlib import Path

from openmimo.config import load
from openmimo.train.config import PretrainConfig
from openmimo.train.data import WORLD_SOURCES, WorldRunData, prepare_world


def test_world_run_data_names_what_prepare_world_writes(tmp_path):
    run = tmp_path / "run"
    d = WorldRunData.of_run(run)
    assert d.root == run / "data"
    assert WorldRunData.of_checkpoint(run / "final") == d  # mtp-extend and the quickstart start from RUN_DIR/final
    prepare_world(load(PretrainConfig, None, ["data.world_scale=0.05", "data.tokenizer_vocab=300"]), d.root)
    assert d.ready.is_file() and (d.tokenizer / "tokenizer.json").is_file()
    assert sorted(p.name for p in d.shards().iterdir()) == sorted(WORLD_SOURCES)
    for src in WORLD_SOURCES:
        assert any(d.shards(src).iterdir()), src
        assert d.text(src, "train").is_file() and d.text(src, "val").is_file(), src
    for kind in ("math", "code"):
        for split in ("train", "val", "test"):
            assert d.records(kind, split).is_file() and d.records(kind, split).stat().st_size > 0, (kind, split)
    assert d.world == run / "data" / "world" and d.records("math", "test") == Path(d.world, "math", "test.jsonl")


def test_prepared_data_is_reused_for_the_same_spec_and_rebuilt_for_another_seed(tmp_path, capsys):
    from types import SimpleNamespace

    from openmimo.train.data import data_spec, prepare_data

    rt = SimpleNamespace(is_main=True, distributed=False)
    run = tmp_path / "run"
    d = WorldRunData.of_run(run)
    args = ["data.world_scale=0.05", "data.tokenizer_vocab=300"]
    prepare_data(load(PretrainConfig, None, args + ["train.seed=0"]), run, rt)
    assert d.ready.read_text() == data_spec(load(PretrainConfig, None, args + ["train.seed=0"]))
    world0, stamp = (d.world / "manifest.json").read_text(), d.ready.stat().st_mtime_ns
    prepare_data(load(PretrainConfig, None, args + ["train.seed=0"]), run, rt)  # same spec: reused as it is
    assert d.ready.stat().st_mtime_ns == stamp and "rebuilding" not in capsys.readouterr().out
    prepare_data(load(PretrainConfig, None, args + ["train.seed=1"]), run, rt)  # another seed: another world
    assert "prepared for another config (world_seed: 0, now 1): rebuilding it" in capsys.readouterr().out
    assert (d.world / "manifest.json").read_text() != world0
    assert d.ready.read_text() == data_spec(load(PretrainConfig, None, args + ["train.seed=1"]))
    d.ready.write_text("ok\n")  # a folder from before the spec was recorded
    prepare_data(load(PretrainConfig, None, args + ["train.seed=1"]), run, rt)
    assert "(no spec recorded): rebuilding it" in capsys.readouterr().out
