"""RL maths: advantages, pass@k, the clipped token-level loss (hand-computed), split invariance via Trainer.step."""

import math

import pytest
import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.eval.passk import comb_pass_at_k
from openmimo.rl.advantage import group_advantages, pass_at_k, summarise_validation
from openmimo.rl.loss import RLObjective, aggregate, clipped_token_loss, low_var_kl, summarise_step
from openmimo.runtime import Runtime
from openmimo.train.loop import Trainer


# -- advantages -------------------------------------------------------------------------------------
def test_group_advantages_hand_values():
    # mean 0.25; unbiased std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    a = group_advantages([[1, 0, 0, 0], [0, 1, 1, 0]])
    assert torch.allclose(a[0], torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 0.57735
    assert torch.allclose(a[1], torch.tensor([-0.5, 0.5, 0.5, -0.5]) / math.sqrt(1 / 3), atol=1e-6)
    # population std = sqrt(0.1875) = 0.4330
    p = group_advantages([[1, 0, 0, 0]], unbiased=False)
    assert torch.allclose(p[0], torch.tensor([0.75, -0.25, -0.25, -0.25]) / math.sqrt(0.1875), atol=1e-6)


def test_group_advantages_constant_group_and_floor():
    assert group_advantages([[1, 1, 1], [0, 0, 0]]).abs().max() == 0
    # rewards differing by 2e-7: std ~1.15e-7 < floor 1e-3 -> divided by the floor
    a = group_advantages([[0.0, 2e-7]], std_floor=1e-3)
    assert torch.allclose(a[0], torch.tensor([-1e-4, 1e-4]), atol=1e-9)
    assert torch.allclose(group_advantages([[2.0, 0.0]], norm_by_std=False)[0], torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0])


def test_pass_at_k_hand_values_and_oracle():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(3, 2, 2) == 1.0  # fewer than k wrong samples
    assert pass_at_k(10, 3, 10) == 1.0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(comb_pass_at_k(n, c, k), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_summarise_validation():
    s = summarise_validation([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], ks=(1, 2))
    assert s["avg@4"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert s["pass@1"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert s["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)


# -- loss -------------------------------------------------------------------------------------------
def test_clipped_token_loss_hand_values():
    # tokens: (A=+1, r=1.5) clipped high; (A=-1, r=0.5) clipped low; (A=-1, r=1.5) unclipped (PPO keeps
    # the pessimistic branch); (A=+1, r=0.5) unclipped; (A=+1, r=1.2) inside the clip-higher range
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.2])
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0])
    old = torch.zeros(5)
    logp = ratios.log().requires_grad_()
    loss, ratio, lo, hi = clipped_token_loss(logp, old, adv, 0.2, 0.28)
    assert torch.allclose(loss, torch.tensor([-1.28, 0.8, 1.5, -0.5, -1.2]), atol=1e-6)
    assert hi.tolist() == [True, False, False, False, False]
    assert lo.tolist() == [False, True, False, False, False]
    loss.sum().backward()
    # d(-A r)/d logp = -A r where unclipped, 0 where clipped
    assert torch.allclose(logp.grad, torch.tensor([0.0, 0.0, 1.5, -0.5, -1.2]), atol=1e-6)
    # symmetric clipping at 0.2 would clip the r=1.2 token too
    assert clipped_token_loss(logp.detach(), old, adv, 0.2, 0.2)[3].tolist()[-1] is False
    assert clipped_token_loss(torch.tensor([1.21]).log(), torch.zeros(1), torch.ones(1), 0.2, 0.2)[3].item()


def test_aggregation_modes_hand_values():
    per_tok = torch.tensor([[2.0, 0, 0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    assert aggregate(per_tok, mask, "token-mean", 4).item() == pytest.approx(5 / 4)
    assert aggregate(per_tok, mask, "seq-mean-token-mean", 2).item() == pytest.approx((2 + 1) / 2)
    assert aggregate(per_tok, mask, "seq-mean-token-sum", 2).item() == pytest.approx((2 + 3) / 2)
    with pytest.raises(ValueError):
        aggregate(per_tok, mask, "sum", 1)


def test_low_var_kl_hand_values():
    assert low_var_kl(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0
    assert low_var_kl(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.e - 2)


# -- the objective on a model -----------------------------------------------------------------------
CFG = MiMoConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, num_nextn_predict_layers=0)


def _rl_batch(model, B=4, T=10, seed=0, perturb=0.0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, CFG.vocab_size, (B, T), generator=g)
    mask = torch.zeros(B, T)
    prompt = 3
    for i, L in enumerate([2, 7, 4, 5][:B]):  # different response lengths, right padding after them
        mask[i, prompt:prompt + L] = 1
        ids[i, prompt + L:] = 0
    with torch.no_grad():
        lp = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    old = torch.zeros(B, T)
    old[:, 1:] = lp + perturb * torch.randn(B, T - 1, generator=g)
    adv = torch.tensor([1.5, -0.5, -0.5, -0.5])[:B]
    return {"input_ids": ids, "response_mask": mask, "old_logprobs": old * mask, "advantages": adv}


def test_objective_at_ratio_one_is_minus_token_mean_advantage():
    model = build_model(CFG, seed=0)
    mb = _rl_batch(model)
    obj = RLObjective()
    d = obj.denominators([mb])
    assert d.tolist() == [18.0, 4.0]  # 2 + 7 + 4 + 5 response tokens, 4 sequences
    loss, st = obj(model, mb, d)
    # ratio 1 everywhere: loss = -(1.5*2 - 0.5*7 - 0.5*4 - 0.5*5) / 18 = 5 / 18
    assert loss.item() == pytest.approx(5 / 18, abs=1e-5)
    s = summarise_step(st, obj.extrema)
    assert s["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and s["clip_frac"] == 0.0
    assert abs(s["ratio_min"] - 1) < 1e-4 and abs(s["ratio_max"] - 1) < 1e-4
    assert 0 < s["entropy"] <= math.log(CFG.vocab_size) + 1e-4
    # seq-mean-token-mean: -(1.5 - 0.5 - 0.5 - 0.5) / 4 = 0
    obj2 = RLObjective(loss_agg_mode="seq-mean-token-mean")
    assert obj2(model, mb, obj2.denominators([mb]))[0].item() == pytest.approx(0.0, abs=1e-5)


class _PerMicroBatchMean(RLObjective):
    """A wrong objective (per-micro-batch normalisation): the control that the split test can fail."""

    def __call__(self, model, mb, denoms):
        return super().__call__(model, mb, self.denominators([mb]))


@pytest.mark.parametrize("split", [[1, 3], [2, 2], [1, 1, 1, 1]])
def test_rl_step_is_invariant_to_micro_batch_split(split):
    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    batch = _rl_batch(build_model(CFG, seed=0), perturb=0.3)

    def run(parts, obj):
        model = build_model(CFG, seed=0)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), rt, grad_clip=0.0)
        mbs, i = [], 0
        for n in parts:
            mbs.append({k: v[i:i + n] for k, v in batch.items()})
            i += n
        st = trainer.step(mbs, obj, lr=1.0)
        return st, torch.cat([p.detach().flatten() for p in model.parameters()])

    (s_ref, p_ref), (s_split, p_split) = run([4], RLObjective()), run(split, RLObjective())
    assert s_ref["n_tokens"] == s_split["n_tokens"] == 18
    assert math.isclose(s_ref["grad_norm"], s_split["grad_norm"], rel_tol=1e-5)
    assert torch.allclose(p_ref, p_split, atol=1e-6)
    _, p_wrong = run(split, _PerMicroBatchMean())
    assert not torch.allclose(p_ref, p_wrong, atol=1e-4)


def test_kl_term_requires_reference_and_adds_penalty():
    model = build_model(CFG, seed=0)
    mb = _rl_batch(model)
    mb["ref_logprobs"] = mb["old_logprobs"].clone()
    obj = RLObjective(kl_coef=0.5)
    loss, st = obj(model, mb, obj.denominators([mb]))
    assert st["kl_sum"] == pytest.approx(0.0, abs=1e-5) and loss.item() == pytest.approx(5 / 18, abs=1e-5)
    mb["ref_logprobs"] = mb["old_logprobs"] - 1.0 * mb["response_mask"]  # ref - logp = -1 on every token
    loss2, st2 = obj(model, mb, obj.denominators([mb]))
    assert st2["kl_sum"] / 18 == pytest.approx(math.exp(-1), abs=1e-4)  # e^-1 + 1 - 1
    assert loss2.item() == pytest.approx(5 / 18 + 0.5 * math.exp(-1), abs=1e-4)
