"""MTP speculative decoding: the accept/reject rule, identity with plain greedy decoding, exact output
distribution at temperature 1 (chi-square against the model's enumerated distribution, with a
control showing the test catches a wrong rule), and acceptance statistics."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

import openmimo.infer.engine as engine_mod
from openmimo.infer.engine import Engine, SamplingParams
from openmimo.infer.oracle import generate_oracle
from openmimo.infer.speculative import SpecStats, accept_drafts
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model


def cfg(**kw):
    base = dict(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=96, num_nextn_predict_layers=2,
                tie_word_embeddings=False, initializer_range=0.3)
    base.update(kw)
    return MiMoConfig(**base)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit, bins with expected count < 5 pooled into one."""
    n = counts.sum()
    exp = probs.double() * n
    small = exp < 5
    obs = torch.cat([counts[~small].double(), counts[small].sum().double()[None]])
    exp = torch.cat([exp[~small], exp[small].sum()[None]])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


def test_accept_rule_edge_cases():
    p = torch.log_softmax(torch.randn(4, 3, 7), -1)
    drafts = torch.randint(0, 7, (4, 2))
    n, toks = accept_drafts(p, p[:, :2], drafts, torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert n.tolist() == [2, 2, 2, 2] and torch.equal(toks[:, :2], drafts)  # q == p: always accepted
    q = torch.full((4, 2, 7), float("-inf"))
    q[..., 0] = 0.0  # drafts certain of token 0, which p never proposes
    p2 = p.clone()
    p2[..., 0] = float("-inf")
    n, toks = accept_drafts(p2, q, torch.zeros(4, 2, dtype=torch.long), torch.arange(4), torch.zeros(4, dtype=torch.long))
    assert n.tolist() == [0] * 4 and (toks[:, 0] != 0).all()


def test_accept_rule_emits_the_target_distribution():
    torch.manual_seed(0)
    V, B = 5, 100_000
    p = torch.log_softmax(torch.randn(1, 2, V) * 1.5, -1).expand(B, 2, V)
    q = torch.log_softmax(torch.randn(1, 1, V) * 1.5, -1).expand(B, 1, V)
    seed = torch.arange(B)
    drafts = torch.multinomial(q[0, 0].exp(), B, replacement=True)[:, None]
    n, toks = accept_drafts(p, q, drafts, seed, torch.zeros(B, dtype=torch.long))
    first = torch.bincount(toks[:, 0], minlength=V)
    assert chi2_pvalue(first, p[0, 0].exp()) > 1e-3
    assert chi2_pvalue(first, q[0, 0].exp()) < 1e-6  # the drafts alone are a different distribution
    rate = n.float().mean().item()  # expected acceptance: sum_x min(p, q)
    assert abs(rate - torch.minimum(p[0, 0].exp(), q[0, 0].exp()).sum().item()) < 0.01


@pytest.mark.parametrize("k", [1, 2])
def test_speculative_greedy_equals_plain_greedy_batched(k):
    model = build_model(cfg(), seed=1)
    prompts = [[1, 2, 3], [5] * 9, [7, 8], list(range(3, 17)), [2]]
    params = SamplingParams(max_new_tokens=14, temperature=0)
    spec = Engine(model, max_slots=3, max_len=64, spec_k=k).generate(prompts, params)
    for p, (c,) in zip(prompts, spec):
        assert c.token_ids == generate_oracle(model, p, 14)[0]


def perfect_drafter(seed=0, k=2):
    """A model whose MTP layers predict exactly what the main model will: every block is switched off
    (zero output projections), so the main model is a bigram f(token), and MTP depth j reads only the
    token embedding (input_proj = [0 | I]) and so predicts f(that token) = the main model's next token."""
    model = build_model(cfg(num_nextn_predict_layers=k, initializer_range=0.5), seed=seed)
    d = model.config.hidden_size
    with torch.no_grad():
        for layer in list(model.model.layers) + list(model.model.mtp_layers):
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for layer in model.model.mtp_layers:
            layer.input_proj.weight.copy_(torch.cat([torch.zeros(d, d), torch.eye(d)], 1))
    return model


def test_perfect_drafts_are_all_accepted():
    model = perfect_drafter()
    # no one-token prompt: at position 0 the MTP layer's token embedding is zeroed (as in vLLM and SGLang),
    # so a draft made there sees no token
    prompts = [[1, 2, 3], [4, 10], [5, 6, 7, 8, 9]]
    engine = Engine(model, max_slots=3, max_len=64, spec_k=2)
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=13, temperature=0))
    for p, (c,) in zip(prompts, outs):
        assert c.token_ids == generate_oracle(model, p, 13)[0]
    stats = engine.spec_stats
    assert stats.acceptance_rate() == [1.0, 1.0] and stats.mean_accepted_length() == 2.0
    assert engine.counters["decode_steps"] == 4  # 1 prefill token + 4 steps x 3 tokens = 13


def test_spec_stats_bookkeeping():
    s = SpecStats(3)
    s.record([0, 3, 1])
    assert s.drafted == [3, 3, 3] and s.accepted == [2, 1, 1]
    assert s.mean_accepted_length() == pytest.approx(4 / 3)
    assert s.as_dict()["tokens_per_step"] == pytest.approx(7 / 3)


@torch.no_grad()
def exact_distribution(model, prompt, n_new):
    V = model.config.vocab_size
    seqs = torch.tensor([prompt + list(c) for c in itertools.product(range(V), repeat=n_new)])
    lp = torch.log_softmax(model(seqs).logits.float(), -1)
    P = len(prompt)
    tot = sum(lp[torch.arange(len(seqs)), P - 1 + i, seqs[:, P + i]] for i in range(n_new))
    return tot.exp()


def sample_counts(model, prompt, n_new, N, spec_k):
    V = model.config.vocab_size
    per = 100  # samples per request: they share one prefill and each has its own seed
    engine = Engine(model, max_slots=per, max_len=16, spec_k=spec_k)
    params = [SamplingParams(max_new_tokens=n_new, temperature=1.0, seed=1000 * r, n=per) for r in range(N // per)]
    outs = engine.generate([prompt] * (N // per), params)
    idx = torch.tensor([sum(t * V ** (n_new - 1 - i) for i, t in enumerate(c.token_ids)) for cs in outs for c in cs])
    return torch.bincount(idx, minlength=V ** n_new), engine


def test_speculative_sampling_has_the_exact_distribution(monkeypatch):
    """Three tokens from a 6-token vocabulary (216 outcomes), 2000 samples, batched, k = 2."""
    model = build_model(cfg(vocab_size=6, initializer_range=0.5), seed=3)
    prompt, n_new, N = [1, 2], 3, 2000
    exact = exact_distribution(model, prompt, n_new)
    counts, engine = sample_counts(model, prompt, n_new, N, spec_k=2)
    rates = engine.spec_stats.acceptance_rate()
    assert 0.05 < rates[0] < 0.95  # drafts are both accepted and rejected: every branch of the rule runs
    assert chi2_pvalue(counts, exact) > 1e-3
    # Control: the same test rejects a wrong rule (accept every draft).
    def accept_all(target_lp, draft_lp, drafts, seed, first_pos):
        n, toks = accept_drafts(target_lp, draft_lp, drafts, seed, first_pos)
        k = drafts.shape[1]
        return torch.full_like(n, k), torch.cat([drafts, toks[:, -1:]], 1)
    monkeypatch.setattr(engine_mod, "accept_drafts", accept_all)
    bad, _ = sample_counts(model, prompt, n_new, 1000, spec_k=2)
    assert chi2_pvalue(bad, exact) < 1e-6
