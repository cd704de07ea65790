"""The chunked head + cross-entropy against the unfused oracle: loss, arg-max hits and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from openmimo.model.fused_ce import IGNORE_INDEX, default_chunk_rows, linear_cross_entropy
from openmimo.model.mimo import build_model
from tests.test_model import tiny_cfg


def _oracle(h, w, t):
    logits = (h @ w.t()).float()
    loss = F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")
    hits = ((logits.argmax(-1) == t) & (t != IGNORE_INDEX)).sum()
    return loss, hits


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
def test_loss_hits_and_gradients_equal_the_unfused_head(chunk):
    g = torch.Generator().manual_seed(0)
    n, d, v = 37, 16, 50
    h0 = torch.randn(n, d, generator=g)
    w0 = torch.randn(v, d, generator=g)
    t = torch.randint(0, v, (n,), generator=g)
    t[::5] = IGNORE_INDEX
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss, hits = linear_cross_entropy(h, w, t, chunk_rows=chunk)
    (1.7 * loss).backward()
    hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    ref, ref_hits = _oracle(hr, wr, t)
    (1.7 * ref).backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
    assert int(hits) == int(ref_hits)
    torch.testing.assert_close(h.grad, hr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-5, atol=1e-5)
    assert float(h.grad[::5].abs().sum()) == 0.0  # ignored rows get no gradient


def test_all_rows_ignored_gives_zero_loss_and_gradients():
    h = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    loss, hits = linear_cross_entropy(h, w, torch.full((6,), IGNORE_INDEX), chunk_rows=4)
    loss.backward()
    assert float(loss.detach()) == 0.0 and int(hits) == 0
    assert float(h.grad.abs().sum()) == 0.0 and float(w.grad.abs().sum()) == 0.0


def test_autocast_runs_in_bf16_with_float32_weight_gradients():
    g = torch.Generator().manual_seed(1)
    h0, w0 = torch.randn(24, 16, generator=g), torch.randn(40, 16, generator=g)
    t = torch.randint(0, 40, (24,), generator=g)
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(h, w, t, chunk_rows=7)
    loss.backward()
    hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(hr, wr).float(), t, reduction="sum")
    ref.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(w.grad, wr.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(h.grad, hr.grad, rtol=2e-2, atol=2e-2)


def test_shape_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="rows of h"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(5, 8), torch.zeros(3, dtype=torch.long))


def test_default_chunk_is_about_a_gib_of_logits():
    assert default_chunk_rows(151680) == 1536
    assert default_chunk_rows(97) % 256 == 0 and default_chunk_rows(10**9) == 256


@pytest.mark.parametrize("tied", [False, True])
def test_model_with_fused_loss_equals_unfused_main_and_mtp_losses_and_gradients(tied):
    cfg = tiny_cfg(tie_word_embeddings=tied)
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (3, 20))
    labels = ids.clone()
    labels[0, :4] = IGNORE_INDEX
    # two packed documents in row 1 (positions restart), one in the others
    pos = torch.arange(20).expand(3, 20).clone()
    pos[1, 9:] = torch.arange(11)

    def run(fused):
        model = build_model(cfg, seed=3)
        model.fused_loss, model.fused_loss_chunk_rows = fused, 7
        out = model(ids, position_ids=pos, labels=labels)
        total = out.loss + 0.3 * sum(out.mtp_losses)
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return out, grads

    fused, gf = run(True)
    plain, gp = run(False)
    assert fused.logits is None and plain.logits is not None
    assert len(fused.mtp_losses) == cfg.num_nextn_predict_layers
    for a, b in zip(fused.loss_sums, plain.loss_sums):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert [int(x) for x in fused.num_correct] == [int(x) for x in plain.num_correct]
    assert [int(x) for x in fused.num_targets] == [int(x) for x in plain.num_targets]
    assert gf.keys() == gp.keys()
    for name in gp:
        torch.testing.assert_close(gf[name], gp[name], rtol=1e-4, atol=1e-6, msg=name)


def test_without_gradients_the_loss_is_the_same_and_nothing_is_kept():
    g = torch.Generator().manual_seed(2)
    h, w = torch.randn(19, 8, generator=g), torch.randn(13, 8, generator=g)
    t = torch.randint(0, 13, (19,), generator=g)
    with torch.no_grad():
        loss, hits = linear_cross_entropy(h, w, t, chunk_rows=5)
    ref, ref_hits = _oracle(h, w, t)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, ref)
    assert int(hits) == int(ref_hits)

