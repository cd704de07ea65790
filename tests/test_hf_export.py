"""Saved checkpoints load in transformers as causal LMs through their own model code (``auto_map``,
``trust_remote_code``), with openmimo's logits: main head on a padded batch, every MTP depth, greedy
``generate``; the written files import nothing from openmimo."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from openmimo.model.config import MiMoConfig  # noqa: E402
from openmimo.model.hf import HF_CODE_FILES, load_model  # noqa: E402
from openmimo.model.mimo import build_model  # noqa: E402


def tiny(**kw):
    base = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, max_position_embeddings=64, num_nextn_predict_layers=2,
                tie_word_embeddings=False, rope_theta=5000.0, initializer_range=0.2, eos_token_id=3, bos_token_id=1)
    base.update(kw)
    return MiMoConfig(**base)


def randomise_norms(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


def load_hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=True,
                                                             dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def exported(request, tmp_path_factory):
    model = build_model(tiny(tie_word_embeddings=request.param), seed=2).eval()
    randomise_norms(model)
    path = tmp_path_factory.mktemp(f"mimo_export_{request.param}") / "ckpt"
    model.save_pretrained(path)
    return model, path, load_hf(path)


def test_folder_has_auto_map_and_code(exported):
    _, path, hf = exported
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["MiMoForCausalLM"] and cfg["model_type"] == "mimo"
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_mimo.MiMoForCausalLM"
    for name in HF_CODE_FILES:
        imports = [ln for ln in (path / name).read_text().splitlines() if ln.startswith(("import ", "from "))]
        assert imports and not any("openmimo" in ln for ln in imports), imports
    assert type(hf).__name__ == "MiMoForCausalLM" and len(hf.model.mtp_layers) == 2
    assert hf.config.num_nextn_predict_layers == 2
    # every tensor of the checkpoint is a parameter transformers loaded, nothing re-initialised
    ours = {k: v for k, v in exported[0].state_dict().items()}
    theirs = hf.state_dict()
    for k, v in ours.items():
        assert torch.equal(theirs[k], v), k


def test_padded_batch_logits_match(exported):
    model, _, hf = exported
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 101, (3, 11), generator=g)
    am = torch.ones(3, 11, dtype=torch.long)
    am[1, 7:] = 0  # right padding
    am[2, 4:] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=am).logits
        got = hf(input_ids=ids, attention_mask=am).logits
    keep = am.bool()
    assert torch.allclose(got[keep], ref[keep], atol=1e-4)


def test_mtp_logits_match_every_depth(exported):
    model, _, hf = exported
    ids = torch.randint(0, 101, (2, 13), generator=torch.Generator().manual_seed(4))
    pos = torch.arange(13)[None].expand(2, 13)
    with torch.no_grad():
        out = model(ids, labels=ids)
        got = hf(input_ids=ids, output_mtp_logits=True)
        h = out.hidden_states
        for k in (1, 2):
            h, ref = model.mtp_forward(k, h, F.pad(ids[:, k:], (0, k)), pos)
            assert torch.allclose(got.mtp_logits[k - 1], ref, atol=1e-4), k
        # and the losses openmimo trains on, from transformers' logits
        for k in (1, 2):
            n = 13 - 1 - k
            lk = got.mtp_logits[k - 1][:, :n].reshape(-1, 101)
            loss = F.cross_entropy(lk, ids[:, 1 + k:].reshape(-1))
            assert torch.allclose(loss, out.mtp_losses[k - 1], atol=1e-4)
    assert torch.allclose(got.logits, out.logits, atol=1e-4)


def test_generate_is_openmimo_greedy(exported):
    from openmimo.infer.oracle import generate_oracle

    model, _, hf = exported
    prompt = [5, 17, 2, 40]
    want, _ = generate_oracle(model, prompt, 8)
    with torch.no_grad():
        got = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    assert got[0, len(prompt):].tolist() == want


def test_no_attention_bias_and_round_trip(tmp_path):
    model = build_model(tiny(attention_bias=False, num_nextn_predict_layers=1), seed=5).eval()
    model.save_pretrained(tmp_path / "nb")
    hf = load_hf(tmp_path / "nb")
    assert hf.model.layers[0].self_attn.q_proj.bias is None
    ids = torch.randint(0, 101, (1, 9))
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=ids).logits, model(ids).logits, atol=1e-4)
    # the folder written by transformers' save_pretrained loads back in openmimo
    hf.save_pretrained(tmp_path / "back")
    again = load_model(tmp_path / "back")
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)


def test_loads_where_openmimo_cannot_be_imported(tmp_path):
    """A fresh interpreter in which importing openmimo fails loads the folder and gives the same logits."""
    model = build_model(tiny(), seed=6).eval()
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    ids = [[4, 8, 15, 16, 23, 42]]
    with torch.no_grad():
        want = model(torch.tensor(ids)).logits[0, -1, :5].tolist()
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'openmimo':
            raise ImportError('openmimo blocked')
sys.meta_path.insert(0, Block())
import torch, transformers
m = transformers.AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True, dtype=torch.float32)
with torch.no_grad():
    print(m(input_ids=torch.tensor({ids})).logits[0, -1, :5].tolist())
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=path.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == pytest.approx(want, abs=1e-4)
