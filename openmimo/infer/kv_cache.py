"""A static KV cache: preallocated (slots x max_len) buffers, written by position.

One buffer pair per attention layer of the model (main layers, then MTP layers, as numbered by
``Attention.layer_idx``), each of shape (slots, n_kv, capacity, head_dim).  A sequence owns one
slot; its token at position t has its keys/values at index t.  Nothing is ever moved or
reallocated, so a compiled decode step (CUDA graphs) sees fixed addresses.

:class:`CacheView` is the cache of one forward: which slots the batch rows are, the positions being
written, the attention mask, and how many positions to attend over (a bucket, so compiled graphs are
reused).  The model's attention uses only its ``update`` and ``attn_mask`` (as with Hugging Face's
caches); the engine's forward (``forward.py``) also reads which decode kernels this forward may take.
"""

from __future__ import annotations

import torch
from torch import nn

from openmimo.infer import kernels
from openmimo.model.config import MiMoConfig


def bytes_per_slot(cfg: MiMoConfig, capacity: int, dtype: torch.dtype, num_layers: int | None = None) -> int:
    """Bytes of K and V for one slot of ``capacity`` positions over ``num_layers`` layers (default: all, MTP included)."""
    n = cfg.num_hidden_layers + cfg.num_nextn_predict_layers if num_layers is None else num_layers
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * n * cfg.num_key_value_heads * cfg.head_size * capacity * elem


def slots_for_budget(cfg: MiMoConfig, budget_bytes: int, capacity: int, dtype: torch.dtype,
                     num_layers: int | None = None) -> int:
    """How many slots of ``capacity`` positions fit in ``budget_bytes`` (at least 1)."""
    return max(1, int(budget_bytes // bytes_per_slot(cfg, capacity, dtype, num_layers)))


class KVCache(nn.Module):
    """Preallocated keys and values, registered as buffers (static addresses for CUDA graphs)."""

    def __init__(self, cfg: MiMoConfig, slots: int, capacity: int, num_layers: int,
                 device=None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.slots, self.capacity, self.num_layers = slots, capacity, num_layers
        shape = (slots, cfg.num_key_value_heads, capacity, cfg.head_size)
        for i in range(num_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.keys = [getattr(self, f"k{i}") for i in range(num_layers)]
        self.values = [getattr(self, f"v{i}") for i in range(num_layers)]
        # Triton decode kernels (see kernels.py) for this device and dtype; decided once, outside compiled code.
        self.use_kernels = kernels.enabled(self.keys[0]) if num_layers else False

    def free(self) -> int:
        """Release every buffer (each becomes an empty tensor); returns the bytes released."""
        freed = sum(t.numel() * t.element_size() for t in self.keys + self.values)
        self._shape = self.keys[0].shape if self.keys else None
        self._set([t.new_empty(0) for t in self.keys], [t.new_empty(0) for t in self.values])
        return freed

    def allocate(self) -> None:
        """Buffers of the original shape again, zeroed (after :meth:`free`)."""
        if self.keys and self.keys[0].numel() == 0:
            self._set([torch.zeros(self._shape, dtype=t.dtype, device=t.device) for t in self.keys],
                      [torch.zeros(self._shape, dtype=t.dtype, device=t.device) for t in self.values])

    def _set(self, keys: list, values: list) -> None:
        for i, (k, v) in enumerate(zip(keys, values)):
            setattr(self, f"k{i}", k)
            setattr(self, f"v{i}", v)
        self.keys, self.values = keys, values

    def mark_static(self) -> None:
        """Tell torch.compile the buffers never move (so CUDA graphs may write them in place)."""
        for t in self.keys + self.values:
            torch._dynamo.mark_static_address(t)

    @torch.no_grad()
    def copy_slot(self, src: int, dst: list[int], length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slots ``dst`` (n samples, one prefill)."""
        if not dst or length <= 0:
            return
        idx = torch.tensor(dst, device=self.keys[0].device)
        for buf in self.keys + self.values:
            buf[idx, :, :length] = buf[src, :, :length].unsqueeze(0)


class CacheView:
    """The ``kv_cache`` of one forward (``update`` and ``attn_mask``: see ``Attention.forward`` in model/mimo.py).

    Without ``slot_ids``, batch row i is slot i and the batch covers every slot (the decode step);
    otherwise ``slot_ids`` (B,) names the slots.  ``positions`` (B, T): where each new token is
    written.  ``kv_len``: attend over cache positions [0, kv_len).  ``attn_mask`` (bool, B, 1, T,
    kv_len) lets a query see keys at positions <= its own; ``None`` means plain causal attention over
    exactly the new tokens (a prefill into an empty slot, which may then use flash kernels).

    What the engine's forward (``forward.py``) may use in this forward: ``fold_gqa``, GQA attention without
    repeating K/V (a masked forward over cached keys); on CUDA in bf16/fp16 (``kernels.py``) ``fast_linear``
    (at most ``kernels.MAX_M`` new tokens in the batch), the small-M projection kernels, and
    ``fast_attention`` (decode over all slots), the Triton attention of :meth:`attend`.
    """

    def __init__(self, cache: KVCache, positions: torch.Tensor, kv_len: int, slot_ids: torch.Tensor | None = None,
                 causal_prefill: bool = False, fold_gqa: bool = True):
        self.cache, self.positions, self.kv_len, self.slot_ids = cache, positions, kv_len, slot_ids
        self.fold_gqa = fold_gqa and not causal_prefill
        B = positions.shape[0]
        self.fast_linear = cache.use_kernels and B * positions.shape[1] <= kernels.MAX_M
        self.fast_attention = cache.use_kernels and self.fold_gqa and slot_ids is None
        rows = torch.arange(B, device=positions.device) if slot_ids is None else slot_ids
        self._rows = rows[:, None]
        self._causal = causal_prefill
        self._mask = None
        if not (causal_prefill or self.fast_attention):  # the fast decode attention needs no mask
            self._mask = self._build_mask()

    def _build_mask(self) -> torch.Tensor:
        keys = torch.arange(self.kv_len, device=self.positions.device)
        return (keys[None, None, :] <= self.positions[:, :, None])[:, None]

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """(bool, B, 1, T, kv_len): query t of row b sees keys <= positions[b, t]; None for a causal prefill."""
        if self._mask is None and not self._causal:
            self._mask = self._build_mask()
        return self._mask

    def layer(self, layer_idx: int) -> "LayerCache":
        """This forward's view of one layer's buffers."""
        return LayerCache(self, self.cache.keys[layer_idx], self.cache.values[layer_idx])

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, n_kv, T, D) at ``positions``; return the visible (B, n_kv, kv_len, D) keys and values."""
        return self.layer(layer_idx).update(k, v)

    def attend(self, layer_idx: int, q: torch.Tensor) -> torch.Tensor:
        """Attention of q (B, H, T, D) over the cache after :meth:`update` (each row up to its own position)."""
        return self.layer(layer_idx).attend(q)


class LayerCache:
    """One layer's part of a :class:`CacheView`: that layer's key and value buffers with the view's positions,
    mask and kernel flags, as plain attributes.  A block that takes one (``forward.block``) reads no layer index,
    so one compiled block serves every layer of the same shape (``Engine(compile_scope="block")``)."""

    def __init__(self, view: CacheView, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values
        self.positions, self.kv_len, self.slot_ids, self.rows = view.positions, view.kv_len, view.slot_ids, view._rows
        self.attn_mask = None if view.fast_attention else view.attn_mask  # fast attention reads positions instead
        self.fold_gqa, self.fast_linear, self.fast_attention = view.fold_gqa, view.fast_linear, view.fast_attention

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, n_kv, T, D) at ``positions``; return the visible (B, n_kv, kv_len, D) keys and values."""
        kc, vc = self.keys, self.values
        # Advanced indices around a slice: the indexed shape is (B, T, n_kv, D).
        kc[self.rows, :, self.positions] = k.transpose(1, 2)
        vc[self.rows, :, self.positions] = v.transpose(1, 2)
        if self.slot_ids is None:
            return kc[:, :, : self.kv_len], vc[:, :, : self.kv_len]
        return kc[self.slot_ids, :, : self.kv_len], vc[self.slot_ids, :, : self.kv_len]

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """Attention of q (B, H, T, D) over the cache after :meth:`update` (each row up to its own position)."""
        return kernels.decode_attention(q, self.keys, self.values, self.positions, self.kv_len)
