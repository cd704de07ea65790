"""Triton kernels for the decode step (CUDA, bf16/fp16), each with the plain PyTorch function it replaces.

A decode step multiplies a handful of rows (batch x new tokens, at most 64) by every weight matrix
once, so it is bound by reading the weights: these kernels read each weight byte once, in one launch,
with no split-K reduction pass.

- :func:`small_m_linear`: ``cat([x @ W_i^T + b_i for i], -1)`` for up to three weights sharing the
  input (q, k and v in one launch, without concatenating the weights in memory).
- :func:`gate_up_silu`: ``silu(x @ Wg^T) * (x @ Wu^T)`` in one launch (the SwiGLU input of ``down_proj``).
- :func:`decode_attention`: GQA attention of a few query positions per sequence against a static KV
  cache, split over the keys (flash-decoding); each sequence reads only the keys up to its own
  position, not the whole attention-length bucket.
- :func:`folded_gqa_attention` (PyTorch): GQA attention over cached keys with the query groups folded into the
  query axis, so K/V are never repeated; the engine's attention wherever the Triton one does not apply.
- :func:`filter_logprobs`: ``sampling.process_logits`` (temperature, top-k, top-p) as one opaque custom op, so
  that a compiled decode step runs its sort and cumulative sum as the eager kernels inside its CUDA graph
  instead of asking Inductor to generate a scan over the whole vocabulary.

:func:`enabled` says whether a tensor can take these paths; everywhere else (CPU, float32, long
prefills) the engine's forward (``forward.py``) runs the model's plain PyTorch modules, which the tests compare
these kernels with.
``OPENMIMO_TRITON=0`` turns them off.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F

from openmimo.infer.sampling import process_logits

try:  # CPU-only installs have no Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

MAX_M = 64  # rows handled by the small-M kernels (batch x new tokens)


def enabled(t: torch.Tensor) -> bool:
    """Can ``t`` (an activation) take the Triton decode paths?"""
    if triton is None or os.environ.get("OPENMIMO_TRITON", "1") == "0":
        return False
    interp = os.environ.get("TRITON_INTERPRET") == "1"  # CPU tests run the kernels in Triton's interpreter
    return (t.is_cuda or interp) and t.dtype in (torch.bfloat16, torch.float16)


@torch.library.custom_op("openmimo::filter_logprobs", mutates_args=())
def filter_logprobs(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                    top_k: torch.Tensor) -> torch.Tensor:
    """``process_logits`` (float32 (B, V) log-probs) as an op that torch.compile does not look inside."""
    return process_logits(logits, temperature, top_p, top_k)


@filter_logprobs.register_fake
def _(logits, temperature, top_p, top_k):
    return torch.empty(logits.shape, dtype=torch.float32, device=logits.device)


# -- references (what the kernels compute) ------------------------------------------------------
def small_m_linear_ref(x, weights, biases=None):
    biases = biases or [None] * len(weights)
    return torch.cat([F.linear(x, w, b) for w, b in zip(weights, biases)], -1)


def gate_up_silu_ref(x, w_gate, w_up):
    return F.silu(F.linear(x, w_gate)) * F.linear(x, w_up)


def folded_gqa_attention(q, k, v, mask):
    """GQA attention without repeating K/V: the G query heads of a KV group become G x T query rows.

    q: (B, H, T, D); k, v: (B, n_kv, S, D); mask: bool, broadcastable to (B, 1, T, S) (required).
    The engine's attention over cached keys (decode steps, prefill windows): every SDPA backend that takes a
    mask then reads each cached key once, where SDPA's ``enable_gqa`` fallbacks may copy the cache G times.
    Same result as ``enable_gqa=True``.
    """
    B, H, T, D = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    G = H // n_kv
    qf = q.reshape(B, n_kv, G * T, D)
    m = mask.expand(B, 1, T, S)[:, :, None].expand(B, 1, G, T, S).reshape(B, 1, G * T, S)
    y = F.scaled_dot_product_attention(qf, k, v, attn_mask=m)
    return y.reshape(B, H, T, D)


def decode_attention_ref(q, k_cache, v_cache, positions, kv_len):
    """q (B, H, T, D); caches (B, n_kv, capacity, D) (row b = slot b); query t of row b sees keys <= positions[b, t]."""
    keys = torch.arange(kv_len, device=q.device)
    mask = (keys[None, None, :] <= positions[:, :, None])[:, None]
    return folded_gqa_attention(q, k_cache[:, :, :kv_len], v_cache[:, :, :kv_len], mask)


if triton is not None:

    @triton.jit
    def _tile_dot(x_ptr, w_ptr, rn, N, M, K, stride_xm, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
        """(BLOCK_N, BLOCK_M) float32: rows rn of W (N, K) times the first M rows of x (M, K), transposed."""
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        w_ptrs = w_ptr + rn[:, None] * K + rk[None, :]
        x_ptrs = x_ptr + rm[None, :] * stride_xm + rk[:, None]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs, mask=rn[:, None] < N, other=0.0, eviction_policy="evict_first")
                x = tl.load(x_ptrs, mask=rm[None, :] < M, other=0.0)
            else:
                kk = k0 + rk
                w = tl.load(w_ptrs, mask=(rn[:, None] < N) & (kk[None, :] < K), other=0.0,
                            eviction_policy="evict_first")
                x = tl.load(x_ptrs, mask=(rm[None, :] < M) & (kk[:, None] < K), other=0.0)
            acc = tl.dot(w, x, acc)
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        return acc

    @triton.jit
    def _tile_fma(x_ptr, w_ptr, rn, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
        """(BLOCK_N,) float32: rows rn of W (N, K) times the vector x (K,) (one row: no tensor cores needed)."""
        rk = tl.arange(0, BLOCK_K)
        w_ptrs = w_ptr + rn[:, None] * K + rk[None, :]
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs, mask=rn[:, None] < N, other=0.0, eviction_policy="evict_first")
                x = tl.load(x_ptr + k0 + rk)
            else:
                kk = k0 + rk
                w = tl.load(w_ptrs, mask=(rn[:, None] < N) & (kk[None, :] < K), other=0.0,
                            eviction_policy="evict_first")
                x = tl.load(x_ptr + kk, mask=kk < K, other=0.0)
            acc += w.to(tl.float32) * x[None, :].to(tl.float32)
            w_ptrs += BLOCK_K
        return tl.sum(acc, 1)

    @triton.jit
    def _linear_kernel(x_ptr, y_ptr, w0, w1, w2, b0, b1, b2, M, K, N0, N1, N2, stride_xm, stride_ym,
                       HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
        pid = tl.program_id(0)
        nb0 = tl.cdiv(N0, BLOCK_N)
        nb1 = tl.cdiv(N1, BLOCK_N)
        # Which of the (up to) three weights this block of output columns belongs to.
        if pid < nb0:
            w_ptr = w0
            b_ptr = b0
            n_start = pid * BLOCK_N
            N = N0
            col0 = N0 * 0
        elif pid < nb0 + nb1:
            w_ptr = w1
            b_ptr = b1
            n_start = (pid - nb0) * BLOCK_N
            N = N1
            col0 = N0
        else:
            w_ptr = w2
            b_ptr = b2
            n_start = (pid - nb0 - nb1) * BLOCK_N
            N = N2
            col0 = N0 + N1
        rn = n_start + tl.arange(0, BLOCK_N)
        if USE_DOT:
            acc = _tile_dot(x_ptr, w_ptr, rn, N, M, K, stride_xm, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K)
            if HAS_BIAS:
                acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[:, None]
            rm = tl.arange(0, BLOCK_M)
            y_ptrs = y_ptr + rm[None, :] * stride_ym + (col0 + rn)[:, None]
            tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(rn[:, None] < N) & (rm[None, :] < M))
        else:
            acc = _tile_fma(x_ptr, w_ptr, rn, N, K, BLOCK_N, BLOCK_K, EVEN_K)
            if HAS_BIAS:
                acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
            tl.store(y_ptr + col0 + rn, acc.to(y_ptr.dtype.element_ty), mask=rn < N)

    @triton.jit
    def _gate_up_kernel(x_ptr, y_ptr, wg, wu, M, K, N, stride_xm, stride_ym, USE_DOT: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        if USE_DOT:
            g = _tile_dot(x_ptr, wg, rn, N, M, K, stride_xm, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K)
            u = _tile_dot(x_ptr, wu, rn, N, M, K, stride_xm, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K)
        else:
            g = _tile_fma(x_ptr, wg, rn, N, K, BLOCK_N, BLOCK_K, EVEN_K)
            u = _tile_fma(x_ptr, wu, rn, N, K, BLOCK_N, BLOCK_K, EVEN_K)
        # Round like the reference does (each linear output, then silu, then the product).
        ty = y_ptr.dtype.element_ty
        g = g.to(ty).to(tl.float32)
        u = u.to(ty).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(ty).to(tl.float32)
        y = (s * u).to(ty)
        if USE_DOT:
            rm = tl.arange(0, BLOCK_M)
            tl.store(y_ptr + rm[None, :] * stride_ym + rn[:, None], y, mask=(rn[:, None] < N) & (rm[None, :] < M))
        else:
            tl.store(y_ptr + rn, y, mask=rn < N)

    @triton.jit
    def _decode_attn_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, o_ptr, m_ptr, l_ptr, N_KV, kv_len, chunk,
                            sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sp_b, sy_b, sy_h, sy_t, y_ptr,
                            QK_SCALE: tl.constexpr, T: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
                            BLOCK_Q: tl.constexpr, BLOCK_KV: tl.constexpr, DIRECT: tl.constexpr):
        """One (sequence, KV head, key chunk): partial softmax statistics and output of its G x T query rows."""
        pid_bh = tl.program_id(0)
        split = tl.program_id(1)
        n_split = tl.num_programs(1)
        b = pid_bh // N_KV
        h = pid_bh % N_KV
        r = tl.arange(0, BLOCK_Q)  # query row r = g * T + t (the folded GQA layout)
        g = r // T
        t = r % T
        rvalid = r < G * T
        rd = tl.arange(0, D)
        q = tl.load(q_ptr + b * sq_b + (h * G + g)[:, None] * sq_h + t[:, None] * sq_t + rd[None, :],
                    mask=rvalid[:, None], other=0.0)
        pos = tl.load(pos_ptr + b * sp_b + t, mask=rvalid, other=-1)
        maxpos = tl.max(pos, 0)
        lo = split * chunk
        hi = tl.minimum(lo + chunk, tl.minimum(kv_len, maxpos + 1))  # keys past the last query: skipped
        m_i = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_Q,), tl.float32)
        acc = tl.zeros((BLOCK_Q, D), tl.float32)
        kbase = k_ptr + b * sk_b + h * sk_h
        vbase = v_ptr + b * sk_b + h * sk_h
        for start in range(lo, hi, BLOCK_KV):
            j = start + tl.arange(0, BLOCK_KV)
            jvalid = j < hi
            k = tl.load(kbase + j[:, None] * sk_s + rd[None, :], mask=jvalid[:, None], other=0.0)
            v = tl.load(vbase + j[:, None] * sk_s + rd[None, :], mask=jvalid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * QK_SCALE  # softmax scale times log2(e): exp2 below
            s = tl.where((j[None, :] <= pos[:, None]) & jvalid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        if DIRECT:  # one chunk: the final output, no combine pass
            y = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
            tl.store(y_ptr + b * sy_b + (h * G + g)[:, None] * sy_h + t[:, None] * sy_t + rd[None, :],
                     y.to(y_ptr.dtype.element_ty), mask=rvalid[:, None])
        else:
            row = (pid_bh * n_split + split) * BLOCK_Q + r
            tl.store(m_ptr + row, m_i)
            tl.store(l_ptr + row, l_i)
            tl.store(o_ptr + row[:, None] * D + rd[None, :], acc)


# -- wrappers -------------------------------------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _linear_config(M: int, N: int, gate_up: bool = False):
    """(USE_DOT, BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for M rows and N output columns.

    One row -> CUDA-core dot products over wide K tiles; more rows -> tensor-core tiles with the rows padded
    to 16; wide outputs -> wider tiles (tuned on MiMo-7B shapes and the speculative bench's 768-wide model;
    docs/benchmarks.md).
    """
    if M == 1:  # narrow tiles where wide ones would leave SMs without one
        narrow = triton.cdiv(N, 16) < _num_sms()
        if gate_up:
            return (False, 1, 8, 1024, 8, 3) if narrow else (False, 1, 8, 1024, 4, 3)
        return False, 1, 8 if narrow else 16, 1024, 8, 2
    bn, bk = (64, 128) if (N >= 6144 or gate_up) else (32, 256)
    if M <= 8:
        # A few rows (speculative verify at small batch) read all of W, like one row: the kernel is bound
        # by weight bandwidth only if every SM has a tile, so narrow the tiles until one wave is filled.
        while bn > 16 and triton.cdiv(N, bn) < _num_sms():
            bn //= 2
    return True, max(16, _pow2(M)), bn, bk, 4, 4


@functools.lru_cache(maxsize=None)
def _num_sms() -> int:
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def small_m_linear(x: torch.Tensor, weights, biases=None, config=None) -> torch.Tensor:
    """``cat([F.linear(x, w, b) for w, b], -1)`` for x (..., K) of at most MAX_M rows, 1 to 3 weights."""
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    if not (enabled(x) and 1 <= M <= MAX_M and 1 <= len(weights) <= 3) or x2.stride(-1) != 1:
        return small_m_linear_ref(x, weights, biases)
    ws = list(weights) + [weights[0]] * (3 - len(weights))
    Ns = [w.shape[0] for w in weights] + [0] * (3 - len(weights))
    has_bias = biases is not None and biases[0] is not None
    bs = (list(biases) + [biases[0]] * (3 - len(biases))) if has_bias else ws
    y = torch.empty(M, sum(Ns), device=x.device, dtype=x.dtype)
    use_dot, bm, bn, bk, nw, ns = config or _linear_config(M, sum(Ns))
    grid = (sum(triton.cdiv(n, bn) for n in Ns),)
    _linear_kernel[grid](x2, y, ws[0], ws[1], ws[2], bs[0], bs[1], bs[2], M, K, Ns[0], Ns[1], Ns[2],
                         x2.stride(0), y.stride(0), HAS_BIAS=has_bias, USE_DOT=use_dot, BLOCK_M=bm, BLOCK_N=bn,
                         BLOCK_K=bk, EVEN_K=K % bk == 0, num_warps=nw, num_stages=ns)
    return y.view(*lead, sum(Ns))


def gate_up_silu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, config=None) -> torch.Tensor:
    """``silu(x @ w_gate^T) * (x @ w_up^T)`` for x (..., K) of at most MAX_M rows."""
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    if not (enabled(x) and 1 <= M <= MAX_M) or x2.stride(-1) != 1:
        return gate_up_silu_ref(x, w_gate, w_up)
    N = w_gate.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    use_dot, bm, bn, bk, nw, ns = config or _linear_config(M, N, gate_up=True)
    _gate_up_kernel[(triton.cdiv(N, bn),)](x2, y, w_gate, w_up, M, K, N, x2.stride(0), y.stride(0),
                                            USE_DOT=use_dot, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                            EVEN_K=K % bk == 0, num_warps=nw, num_stages=ns)
    return y.view(*lead, N)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, positions: torch.Tensor,
                     kv_len: int, target_programs: int = 264) -> torch.Tensor:
    """GQA attention of q (B, H, T, D) over cache rows 0..B-1 (keys 0..kv_len-1, each query t of row b
    seeing keys <= positions[b, t]); returns (B, H, T, D) like :func:`decode_attention_ref`."""
    B, H, T, D = q.shape
    n_kv = k_cache.shape[1]
    G = H // n_kv
    if not enabled(q) or D not in (64, 128, 256) or H % n_kv or k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        return decode_attention_ref(q, k_cache, v_cache, positions, kv_len)
    BLOCK_KV = 64
    BLOCK_Q = max(16, _pow2(G * T))
    blocks = triton.cdiv(kv_len, BLOCK_KV)
    # Split the keys only where there are too few (sequence, head) programs and enough keys (>= 4 blocks
    # a chunk): at short lengths one pass writing the output beats a split plus a combine.
    n_split = max(1, min(triton.cdiv(target_programs, B * n_kv), blocks // 4))
    chunk = triton.cdiv(blocks, n_split) * BLOCK_KV
    n_split = triton.cdiv(kv_len, chunk)
    direct = n_split == 1
    y = torch.empty(B, H, T, D, device=q.device, dtype=q.dtype)
    rows = 1 if direct else B * n_kv * n_split * BLOCK_Q
    o = torch.empty(rows, D, device=q.device, dtype=torch.float32)
    m = torch.empty(rows, device=q.device, dtype=torch.float32)
    l_ = torch.empty_like(m)
    _decode_attn_kernel[(B * n_kv, n_split)](
        q, k_cache, v_cache, positions, o, m, l_, n_kv, kv_len, chunk,
        q.stride(0), q.stride(1), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        positions.stride(0), y.stride(0), y.stride(1), y.stride(2), y, QK_SCALE=1.4426950408889634 / math.sqrt(D),
        T=T, G=G, D=D, BLOCK_Q=BLOCK_Q, BLOCK_KV=BLOCK_KV, DIRECT=direct, num_warps=4, num_stages=2)
    if direct:
        return y
    # Combine the chunks (a few element-wise ops; fused by torch.compile).
    o = o.view(B, n_kv, n_split, BLOCK_Q, D)[:, :, :, : G * T]
    m = m.view(B, n_kv, n_split, BLOCK_Q)[:, :, :, : G * T]
    l_ = l_.view(B, n_kv, n_split, BLOCK_Q)[:, :, :, : G * T]
    m_max = m.amax(2, keepdim=True)
    w = torch.exp2(m - m_max)  # a chunk with no visible key has m = -inf: weight 0
    out = (o * w[..., None]).sum(2) / (l_ * w).sum(2)[..., None]
    return out.to(q.dtype).view(B, n_kv, G, T, D).reshape(B, H, T, D)
