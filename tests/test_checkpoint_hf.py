"""HF-layout checkpoints: round trips (single file and sharded) and one clear error per bad folder."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import openmimo
from openmimo.model.config import MiMoConfig
from openmimo.model.hf import CheckpointError
from openmimo.model.mimo import build_model


def _cfg(**kw):
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, num_nextn_predict_layers=1, tie_word_embeddings=False)
    base.update(kw)
    return MiMoConfig(**base)


@pytest.mark.parametrize("shard_size", [10**9, 20_000])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip(tmp_path, shard_size, tied):
    model = build_model(_cfg(tie_word_embeddings=tied), seed=0)
    model.save_pretrained(tmp_path / "m", max_shard_size=shard_size)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    if shard_size < 10**9:
        assert "model.safetensors.index.json" in files and any("-of-" in f for f in files)
    else:
        assert "model.safetensors" in files
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "mimo" and cfg["architectures"] == ["MiMoForCausalLM"]
    assert cfg["num_nextn_predict_layers"] == 1 and cfg["attention_bias"] is True
    loaded = openmimo.load_model(tmp_path / "m")
    for (n, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), n
    if tied:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = torch.randint(0, 64, (1, 7))
    assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_load_casts_dtype_and_device(tmp_path):
    build_model(_cfg(), seed=0).save_pretrained(tmp_path / "m")
    m = openmimo.load_model(tmp_path / "m", dtype=torch.bfloat16, device="cpu")
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())


def test_save_is_atomic_and_replaces(tmp_path):
    model = build_model(_cfg(), seed=0)
    model.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


@pytest.fixture
def saved(tmp_path):
    build_model(_cfg(), seed=0).save_pretrained(tmp_path / "m", max_shard_size=20_000)
    return tmp_path / "m"


def test_missing_shard_names_the_file(saved):
    shard = sorted(saved.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        openmimo.load_model(saved)


def _rewrite(folder, fn):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    for fname in set(index["weight_map"].values()):
        tensors = load_file(str(folder / fname))
        if fn(tensors):
            save_file(tensors, str(folder / fname))
            return fname


def test_wrong_shape_names_file_and_tensor(saved):
    def shrink(t):
        if "model.norm.weight" in t:
            t["model.norm.weight"] = torch.ones(5)
            return True
    fname = _rewrite(saved, shrink)
    with pytest.raises(CheckpointError, match=rf"{fname}.*model\.norm\.weight.*shape"):
        openmimo.load_model(saved)


def test_wrong_dtype_names_tensor(saved):
    def to_int(t):
        if "model.norm.weight" in t:
            t["model.norm.weight"] = torch.ones(32, dtype=torch.int32)
            return True
    _rewrite(saved, to_int)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*dtype"):
        openmimo.load_model(saved)


def test_missing_tensor_is_named(saved):
    def drop(t):
        if "model.layers.1.mlp.up_proj.weight" in t:
            del t["model.layers.1.mlp.up_proj.weight"]
            return True
    _rewrite(saved, drop)
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        openmimo.load_model(saved)


@pytest.mark.parametrize("edit, pattern", [
    (lambda c: c.update(model_type="llama"), "model_type"),
    (lambda c: c.pop("hidden_size"), "hidden_size"),
    (lambda c: c.pop("num_nextn_predict_layers"), "num_nextn_predict_layers"),
    (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads"),
])
def test_bad_config_names_file_and_field(saved, edit, pattern):
    p = saved / "config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"config\.json.*{pattern}"):
        openmimo.load_model(saved)


def test_reference_config_round_trips_unknown_fields():
    from pathlib import Path

    ref = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "mimo-7b" / "config.json"
    if not ref.is_file():
        pytest.skip("../shared/reference/mimo-7b not present")
    cfg = MiMoConfig.from_file(ref)
    d = cfg.to_hf_dict()
    orig = json.loads(ref.read_text())
    for k, v in orig.items():
        assert d[k] == v, k
