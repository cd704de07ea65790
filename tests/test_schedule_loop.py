"""Schedules (hand-computed values) and the shared training step (micro-batch split invariance)."""

import math

import pytest
import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.runtime import Runtime
from openmimo.train.loop import Trainer, build_optimizer
from openmimo.train.pretrain import PretrainObjective
from openmimo.train.schedule import batch_size_at, lr_at, lr_at_progress, mtp_weight_at, stage_at


def test_lr_schedule_hand_values():
    args = dict(lr=1.0, min_lr=0.1, warmup=100, constant=50, decay=200)
    assert lr_at(0, **args) == 0.0
    assert lr_at(50, **args) == 0.5
    assert lr_at(100, **args) == 1.0
    assert lr_at(149, **args) == 1.0
    assert lr_at(150, **args) == 1.0
    assert math.isclose(lr_at(250, **args), 0.1 + 0.45 * (1 + math.cos(math.pi / 2)))  # half-way: 0.55
    assert math.isclose(lr_at(350, **args), 0.1)
    assert lr_at(10**9, **args) == 0.1


def test_lr_at_progress_hand_values():
    assert lr_at_progress(0.7, 2.0) == 2.0  # constant
    assert lr_at_progress(0.0, 2.0, "cosine", 0.1) == 2.0
    assert math.isclose(lr_at_progress(0.5, 2.0, "cosine", 0.1), 0.2 + 0.9)  # half-way between 2.0 and 0.2
    assert math.isclose(lr_at_progress(1.0, 2.0, "cosine", 0.1), 0.2)
    assert math.isclose(lr_at_progress(0.25, 2.0, "linear"), 1.5)
    assert lr_at_progress(3.0, 2.0, "linear") == 0.0 and lr_at_progress(-1.0, 2.0, "linear") == 2.0  # clamped
    # warm-up scales the first steps: step 0 of 4 -> 1/4 of the scheduled value
    assert math.isclose(lr_at_progress(0.0, 2.0, "linear", step=0, warmup_steps=4), 0.5)
    assert math.isclose(lr_at_progress(0.5, 2.0, "linear", step=3, warmup_steps=4), 1.0)
    assert lr_at_progress(0.5, 2.0, "linear", step=4, warmup_steps=4) == 1.0
    with pytest.raises(ValueError, match="constant, cosine or linear"):
        lr_at_progress(0.5, 1.0, "step")


def test_batch_warmup_mtp_weight_and_stages():
    assert batch_size_at(0, 32, 8, 100) == 8
    assert batch_size_at(50, 32, 8, 100) == 20
    assert batch_size_at(50, 32, 8, 100, multiple=8) == 16
    assert batch_size_at(100, 32, 8, 100) == 32
    assert batch_size_at(5, 32, 0, 100) == 32
    assert mtp_weight_at(9, 0.3, 0.1, 10) == 0.3 and mtp_weight_at(10, 0.3, 0.1, 10) == 0.1
    assert [stage_at(t, [10, 20, 5]) for t in (0, 9, 10, 29, 30, 34, 35)] == [0, 0, 1, 1, 2, 2, None]


def _batch(cfg, B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    pos = torch.cat([torch.arange(5), torch.arange(T - 5)]).expand(B, T).clone()  # two packed docs per row
    return {"input_ids": ids, "position_ids": pos, "labels": ids.clone()}


@pytest.mark.parametrize("split", [[4], [2, 2], [1, 1, 1, 1], [3, 1]])
def test_step_is_invariant_to_micro_batch_split(split):
    """Token-level global normalisation: the update does not depend on the micro-batch split."""
    cfg = MiMoConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, num_nextn_predict_layers=1)
    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    batch = _batch(cfg)
    results = {}
    for name, parts in (("ref", [4]), ("split", split)):
        model = build_model(cfg, seed=0)
        # SGD makes the update linear in the gradient (Adam would amplify float noise in
        # gradients that are zero in exact arithmetic, such as the k_proj bias).
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        trainer = Trainer(model, opt, rt, grad_clip=1.0)
        mbs, i = [], 0
        for n in parts:
            mbs.append({k: v[i:i + n] for k, v in batch.items()})
            i += n
        stats = trainer.step(mbs, PretrainObjective(1, 0.3), lr=1.0)
        results[name] = (stats, [p.detach().clone() for p in model.parameters()])
    (s1, p1), (s2, p2) = results["ref"], results["split"]
    assert math.isclose(s1["loss_sum"], s2["loss_sum"], rel_tol=1e-6)
    assert math.isclose(s1["grad_norm"], s2["grad_norm"], rel_tol=1e-5)
    for a, b in zip(p1, p2):
        assert torch.allclose(a, b, atol=1e-6)


def test_optimizer_decays_matrices_only():
    cfg = MiMoConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2)
    model = build_model(cfg)
    opt = build_optimizer(model, 1e-3, (0.9, 0.95), 1e-8, 0.1, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])


def test_objective_matches_hand_combination():
    cfg = MiMoConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, num_nextn_predict_layers=2)
    model = build_model(cfg, seed=1)
    mb = _batch(cfg, B=2)
    obj = PretrainObjective(2, 0.3)
    d = obj.denominators([mb])
    # two docs per row (5 and 7 tokens): main targets 4+6, depth 1: 3+5, depth 2: 2+4; two rows
    assert d.tolist() == [20.0, 16.0, 12.0]
    loss, _ = obj(model, mb, d)
    out = model(mb["input_ids"], position_ids=mb["position_ids"], labels=mb["labels"])
    expected = out.loss + 0.3 * (out.mtp_losses[0] + out.mtp_losses[1]) / 2
    assert torch.allclose(loss, expected, atol=1e-6)
