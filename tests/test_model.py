"""The MiMo model: shapes of the real checkpoint layout, parity with transformers' Qwen2, packing, MTP."""

import json
from pathlib import Path

import pytest
import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.hf import expected_tensors
from openmimo.model.mimo import IGNORE_INDEX, MiMoForCausalLM, build_model

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "mimo-7b"


def tiny_cfg(**kw):
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, num_nextn_predict_layers=2,
                tie_word_embeddings=False, attention_bias=True, rope_theta=10000.0)
    base.update(kw)
    return MiMoConfig(**base)


def test_reference_mimo7b_layout_matches_all_451_tensors():
    if not REF.is_dir():
        pytest.skip("../shared/reference/mimo-7b not present")
    cfg = MiMoConfig.from_file(REF / "config.json")
    with torch.device("meta"):
        model = MiMoForCausalLM(cfg)
    shapes = expected_tensors(model)
    names = set(json.loads((REF / "model.safetensors.index.json").read_text())["weight_map"])
    assert len(names) == 451
    assert set(shapes) == names
    d, f, v, kv = 4096, 11008, 151680, 8 * 128
    assert shapes["model.embed_tokens.weight"] == (v, d)
    assert shapes["lm_head.weight"] == (v, d)
    assert shapes["model.layers.35.self_attn.q_proj.weight"] == (d, d)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (kv, d)
    assert shapes["model.layers.0.self_attn.v_proj.bias"] == (kv,)
    assert shapes["model.layers.0.self_attn.o_proj.weight"] == (d, d)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (f, d)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (d, f)
    assert shapes["model.mtp_layers.0.input_proj.weight"] == (d, 2 * d)
    assert shapes["model.mtp_layers.0.final_layernorm.weight"] == (d,)
    # Meta-device parameter count matches the analytic count, with no memory allocated.
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()


def _qwen2(cfg: MiMoConfig):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
        attn_implementation="eager")
    return transformers.Qwen2ForCausalLM(hf_cfg).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_logits_match_transformers_qwen2_on_padded_batch(tied):
    cfg = tiny_cfg(tie_word_embeddings=tied, num_nextn_predict_layers=0, rope_theta=640000.0)
    ours = build_model(cfg, seed=1).eval()
    ref = _qwen2(cfg)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in m for m in missing)
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (3, 11))
    am = torch.ones(3, 11, dtype=torch.long)
    am[1, :4] = 0  # left padding
    am[2, 8:] = 0  # right padding
    with torch.no_grad():
        a = ours(ids, attention_mask=am).logits
        b = ref(input_ids=ids, attention_mask=am).logits
    valid = am.bool()
    rel = (a[valid] - b[valid]).abs().max() / b[valid].abs().max()
    assert rel <= 1e-5, rel


def test_saved_checkpoint_loads_in_qwen2_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = tiny_cfg()
    ours = build_model(cfg, seed=2).eval()
    ours.save_pretrained(tmp_path / "ckpt")
    ref = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "ckpt", torch_dtype=torch.float32).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        a = ours(ids).logits
        b = ref(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def _docs_batch(cfg, lens, seed=0):
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(0, cfg.vocab_size, (n,), generator=g) for n in lens]
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    return docs, ids, pos


def test_packed_batch_equals_documents_run_one_by_one():
    cfg = tiny_cfg(num_nextn_predict_layers=2)
    model = build_model(cfg, seed=3).eval()
    lens = [5, 9, 4, 7]
    docs, ids, pos = _docs_batch(cfg, lens)
    with torch.no_grad():
        packed = model(ids, position_ids=pos, labels=ids)
        singles = [model(d[None], labels=d[None]) for d in docs]
    # logits: each document's slice of the packed run equals its own run
    start = 0
    for d, s in zip(docs, singles):
        assert torch.allclose(packed.logits[0, start:start + len(d)], s.logits[0], atol=1e-5)
        start += len(d)
    # losses: packed sums/counts equal the sums over single documents, for main and every MTP depth
    for depth in range(3):
        n_single = sum(s.num_targets[depth] for s in singles)
        assert packed.num_targets[depth] == n_single == sum(max(n - 1 - depth, 0) for n in lens)
        total = sum(s.loss_sums[depth] for s in singles)
        assert torch.allclose(packed.loss_sums[depth], total, atol=1e-4)


def test_mtp_depth_k_predicts_token_t_plus_1_plus_k():
    """A hand-checked MTP loss: depth k's logits at t are scored against token t+1+k."""
    cfg = tiny_cfg(num_nextn_predict_layers=2)
    model = build_model(cfg, seed=4).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 8))
    with torch.no_grad():
        out = model(ids, labels=ids)
        x = out.hidden_states
        pos = torch.arange(8)[None]
        prev = x
        for k in (1, 2):
            next_ids = torch.nn.functional.pad(ids[:, k:], (0, k))
            prev, logits = model.mtp_forward(k, prev, next_ids, pos)
            lp = torch.log_softmax(logits[0, : 8 - 1 - k].float(), -1)
            manual = -lp[torch.arange(8 - 1 - k), ids[0, 1 + k:]].mean()
            assert torch.allclose(out.mtp_losses[k - 1], manual, atol=1e-5)


def test_ignore_index_and_logits_to_keep():
    cfg = tiny_cfg(num_nextn_predict_layers=1)
    model = build_model(cfg, seed=5).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 6))
    labels = ids.clone()
    labels[:, :3] = IGNORE_INDEX
    with torch.no_grad():
        out = model(ids, labels=labels)
        last = model(ids, logits_to_keep=1).logits
        per_row = model(ids, logits_to_keep=torch.tensor([2, 5])).logits  # one position per row
    assert out.num_targets == [2 * 3, 2 * 3]  # targets at positions 3..5 for both shifts
    assert last.shape == (2, 1, cfg.vocab_size)
    assert torch.allclose(last[:, 0], out.logits[:, -1], atol=1e-6)
    assert per_row.shape == (2, 1, cfg.vocab_size)
    assert torch.allclose(per_row[0, 0], out.logits[0, 2], atol=1e-6)
    assert torch.allclose(per_row[1, 0], out.logits[1, 5], atol=1e-6)


def test_backward_reaches_every_parameter_and_bf16_forward_runs():
    cfg = tiny_cfg()
    model = build_model(cfg, seed=6)
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    out = model(ids, labels=ids)
    (out.loss + sum(out.mtp_losses)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    bf = build_model(cfg, dtype=torch.bfloat16, seed=6)
    assert bf(ids).logits.dtype == torch.bfloat16


def test_build_model_is_seeded_and_initialised_once():
    cfg = tiny_cfg()
    a, b = build_model(cfg, seed=7), build_model(cfg, seed=7)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert torch.all(a.model.norm.weight == 1) and torch.all(a.model.layers[0].self_attn.q_proj.bias == 0)
    tied = build_model(tiny_cfg(tie_word_embeddings=True))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
