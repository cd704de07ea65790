"""Output head + cross-entropy in row chunks: the (rows, vocab) logits are never materialised whole.

``linear_cross_entropy(h, weight, targets)`` returns what ``F.cross_entropy(h @ weight.T, targets,
reduction="sum", ignore_index=IGNORE_INDEX)`` returns (float32), and the arg-max hit count. The forward pass
works through ``chunk_rows`` rows at a time: the chunk's logits (float32), their log-sum-exp, the loss, and at
once the gradient of the summed loss with respect to the chunk's logits (softmax minus the one-hot target,
zero for ignored rows), which gives the chunk's share of the gradients of ``h`` and ``weight``. Only those
two gradients are kept; backward scales them by the incoming gradient. The FLOPs are the unfused head's
(one forward and two backward matmuls); the memory is one chunk of logits instead of all of them, once per
head (the main head and every MTP depth).

Under autocast the matmuls run in the autocast dtype with float32 master weights, as ``nn.Linear`` would;
the weight's gradient is accumulated in float32 and returned in the weight's dtype.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
CHUNK_BYTES = 1 << 30  # float32 logits per chunk


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: about CHUNK_BYTES of float32 logits, a multiple of 256 (at least 256)."""
    rows = CHUNK_BYTES // (4 * vocab_size)
    return max(256, rows // 256 * 256)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows: int, compute_dtype):
        hc_all = h.to(compute_dtype)
        w = weight.to(compute_dtype)
        n = hc_all.shape[0]
        grad_h = torch.empty_like(hc_all)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        correct = torch.zeros((), dtype=torch.long, device=h.device)
        for s in range(0, n, chunk_rows):
            hc = hc_all[s:s + chunk_rows]
            t = targets[s:s + chunk_rows]
            logits = (hc @ w.t()).float()
            valid = t != IGNORE_INDEX
            safe = t.clamp(min=0)
            lse = torch.logsumexp(logits, dim=-1)
            target_logit = logits.gather(1, safe[:, None]).squeeze(1)
            loss = loss + torch.where(valid, lse - target_logit, 0.0).sum()
            correct = correct + ((logits.argmax(-1) == t) & valid).sum()
            g = torch.exp(logits - lse[:, None])
            g = g.scatter_add(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
            g = (g * valid[:, None]).to(compute_dtype)
            grad_h[s:s + chunk_rows] = g @ w
            grad_w = grad_w + (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, weight.dtype)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (grad_h * grad_loss).to(h_dtype), (grad_w * grad_loss).to(w_dtype), None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int | None = None):
    """Summed float32 cross-entropy of ``h @ weight.T`` against ``targets`` (IGNORE_INDEX rows skipped) and the
    arg-max hit count. ``h``: (..., d); ``targets``: (...) matching ``h``'s leading dims; ``weight``: (V, d)."""
    d = h.shape[-1]
    flat_h = h.reshape(-1, d)
    flat_t = targets.reshape(-1)
    if flat_h.shape[0] != flat_t.shape[0]:
        raise ValueError(f"linear_cross_entropy: {flat_h.shape[0]} rows of h but {flat_t.shape[0]} targets")
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(h.dtype, weight.dtype)
    rows = chunk_rows or default_chunk_rows(weight.shape[0])
    with torch.autocast(device_type, enabled=False):
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(flat_h, weight, flat_t, rows, compute_dtype)
        return _loss_only(flat_h.to(compute_dtype), weight.to(compute_dtype), flat_t, rows)


def _loss_only(h, w, targets, chunk_rows: int):
    """The forward of :class:`_LinearCrossEntropy` without its gradients (evaluation, frozen heads)."""
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    correct = torch.zeros((), dtype=torch.long, device=h.device)
    for s in range(0, h.shape[0], chunk_rows):
        t = targets[s:s + chunk_rows]
        logits = (h[s:s + chunk_rows] @ w.t()).float()
        valid = t != IGNORE_INDEX
        target_logit = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
        loss = loss + torch.where(valid, torch.logsumexp(logits, dim=-1) - target_logit, 0.0).sum()
        correct = correct + ((logits.argmax(-1) == t) & valid).sum()
    return loss, correct
