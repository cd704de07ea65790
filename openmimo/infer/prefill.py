"""The model side of admitting prompts into the engine's KV cache: write their K/V (the MTP layers' too) into
their slots and return the logits at each prompt's last token.  The engine (engine.py) keeps the bookkeeping:
slots, samples, the first token, outputs.

Two paths, the same result (tests/test_engine_fast.py checks them against each other and the oracle):

- **Batched forward** (``Prefill.forward``): the admitted prompts right-padded into one forward, each row
  plain causal attention over its own new tokens.  Eager by default; ``compile_prefill`` compiles it with a
  symbolic prompt count and length (minutes of compile on a GPU).  Used for long prompts and big admissions.
- **Windows** (``Prefill.windows``, ``prefill_graph``; on GPU by default with the compiled engine): the prompts
  cut into windows of ``CHUNK_ROWS`` prompts (one for a single prompt) x ``CHUNK`` tokens, each run by a
  fixed-shape function attending over the slot's first ``chunk_kv`` cache positions (masked to each query's
  position), compiled as a CUDA graph (one per row count): a torch.compile of the whole window, or, with a
  ``window_forward`` of compiled regions, a plain capture of it.  A short prompt then costs a replay instead of an
  eager forward's hundreds of launches (docs/inference.md).  Used while an admission needs at most
  ``MAX_GRAPH_REPLAYS`` windows and its longest prompt fits ``chunk_kv``.

Padding sits after each prompt in both paths: no real token attends to it, and its K/V lands past the row's
length, where decoding overwrites it before any query can see it.
"""

from __future__ import annotations

import torch

from openmimo.infer.forward import EngineForward
from openmimo.infer.kv_cache import CacheView
from openmimo.infer.variants import GraphedFunction


class Prefill:
    """Prefill of one engine's model into its cache; see the module docstring."""

    # 4 x 16 = 64 rows keeps the window's projections on the small-M kernels (kernels.MAX_M).
    CHUNK, CHUNK_ROWS, CHUNK_MAX, MAX_GRAPH_REPLAYS = 16, 4, 256, 16

    def __init__(self, model_forward: EngineForward, cache, tokens, h0, k: int, capacity: int, *, compiled: bool,
                 compile_prefill: bool = False, graph: bool | None = None, variants=None,
                 window_forward: EngineForward | None = None):
        self.model_forward, self.cache, self.tokens, self.h0, self.k = model_forward, cache, tokens, h0, k
        # the windows' forward: a forward of compiled regions (``EngineForward(regions=True)``) makes each window
        # graph a capture of those regions instead of a torch.compile of the whole window
        self.window_forward = window_forward
        self.variants = variants  # the engine's variants.Variants: a window row count not built runs batched
        self.device = tokens.device
        self.cuda_graphs = compiled and self.device.type == "cuda"
        self.forwards = 0  # model calls (one per batched forward or window)
        self._forward_fn = torch.compile(self.forward_impl, fullgraph=True) if compile_prefill else self.forward_impl
        # the window attends over [0, chunk_kv); the MTP layers read tokens up to pos + k
        self.chunk_kv = min(self.CHUNK_MAX, (capacity - k) // self.CHUNK * self.CHUNK)
        use = self.cuda_graphs if graph is None else graph
        self._window_fn = None
        if use and self.chunk_kv > 0:
            self._window_fn = self.window_impl
            if compiled and window_forward is not None:
                self._window_fn = GraphedFunction(self.window_impl) if self.cuda_graphs else self.window_impl
            elif compiled:
                self._window_fn = torch.compile(self.window_impl, mode="reduce-overhead", fullgraph=True,
                                                dynamic=False)

    def __call__(self, host_ids: torch.Tensor, ids: torch.Tensor, s0: torch.Tensor, last: torch.Tensor,
                 slots: list[int], lens: list[int]) -> torch.Tensor:
        """Prefill prompts ``ids`` (R, L) of lengths ``lens``, right-padded, into slots ``s0`` (their tokens
        already in ``tokens``); returns the float32 logits (R, V) at positions ``last``.  ``host_ids`` and
        ``slots`` are ``ids`` and ``s0`` on the host (no device sync to read them back)."""
        R, L = ids.shape
        n_windows = -(-R // self.CHUNK_ROWS) * -(-L // self.CHUNK)
        if self._window_fn is not None and L <= self.chunk_kv and n_windows <= self.MAX_GRAPH_REPLAYS and (
                self.variants is None or self.variants.use(("window", 1 if R == 1 else self.CHUNK_ROWS))):
            return self.windows(host_ids, slots, lens)
        pos = torch.arange(L, device=ids.device)[None].expand(R, L)
        for t in (ids, pos):  # prompt count and length are symbolic in the compiled prefill (not the cache)
            torch._dynamo.maybe_mark_dynamic(t, 0)
            torch._dynamo.maybe_mark_dynamic(t, 1)
        self.forwards += 1
        return self._forward_fn(ids, pos, s0, last)

    def window_rows(self) -> list[int]:
        """The row counts of the window graphs (one per count): none without windows."""
        return [] if self._window_fn is None else [1, self.CHUNK_ROWS]

    def prepare_window(self, rows: int) -> None:
        """Build the window graph of ``rows`` rows: three windows (warm-up, recording, replay) of placeholder
        tokens into the first slots (their K/V is overwritten by the next admission there)."""
        n_slots = self.cache.keys[0].shape[0] if self.cache.keys else 1
        ids = torch.ones(rows, self.CHUNK, dtype=torch.long)
        for _ in range(3):
            self.windows(ids, [i % n_slots for i in range(rows)], [self.CHUNK] * rows)

    def _fill(self, ids, pos, slots, last, view, fwd: EngineForward | None = None):
        """Run the engine's forward over ``ids`` at ``pos`` through cache ``view`` (writing K/V into ``slots``), then
        fill the MTP layers' caches (depth j at t reads token t + j; unknown ones are placeholders, rewritten
        by the first draft window) and keep the main hidden states; logits at ``last`` (float32, (B, V))."""
        fwd = fwd or self.model_forward
        out = fwd(ids, pos, view, logits_to_keep=last)
        if self.k:
            hidden = out.hidden_states
            self.h0[slots[:, None], pos] = hidden
            cos, sin = fwd.rope(pos, hidden.dtype)
            h, emb = hidden, fwd.model.model.embed_tokens
            for j in range(1, self.k + 1):
                nxt = self.tokens[slots[:, None], pos + j]
                h = fwd.mtp_layer(j, h, emb(nxt), pos, cos, sin, view)
        return out.logits[:, 0].float()

    def forward_impl(self, ids, pos, s0, last):
        """The batched forward (compiled with ``compile_prefill``): plain causal attention over each row."""
        return self._fill(ids, pos, s0, last, CacheView(self.cache, pos, ids.shape[1], slot_ids=s0,
                                                        causal_prefill=True))

    def window_impl(self, ids, pos, slots, last):
        """One window at fixed shapes (rows, CHUNK) (a CUDA graph per row count): each query attends to its slot's
        cache up to its own position, over the first ``chunk_kv`` positions."""
        return self._fill(ids, pos, slots, last, CacheView(self.cache, pos, self.chunk_kv, slot_ids=slots),
                          self.window_forward)

    def windows(self, ids: torch.Tensor, s0: list[int], lens: list[int]) -> torch.Tensor:
        """Prefill window by window.  A group with fewer than CHUNK_ROWS prompts repeats its first row (same
        slot, positions and tokens: identical writes); windows past a prompt's end write its right padding.
        A single prompt runs in one-row windows (a second graph): a quarter of the rows, where the four-row
        window would compute its prompt four times.
        ``ids``: (R, L) on the host; every window's inputs cross to the device in one copy."""
        R, L = ids.shape
        C, G, dev = self.CHUNK, 1 if R == 1 else self.CHUNK_ROWS, self.device
        n_c, n_g = -(-L // C), -(-R // G)
        padded = torch.nn.functional.pad(ids, (0, n_c * C - L))
        plan, picks = [], []  # the windows to run; per prompt, in order: (window, its row there)
        win = torch.zeros(n_g, n_c, G, 2 * C + 2, dtype=torch.long)  # ids | positions | slot | last
        for gi in range(n_g):
            members = list(range(gi * G, min(R, gi * G + G)))
            rows = members + [members[0]] * (G - len(members))
            glen = [lens[r] for r in rows]
            for c in range(-(-max(glen) // C)):
                win[gi, c, :, :C] = padded[rows, c * C: (c + 1) * C]
                win[gi, c, :, C: 2 * C] = torch.arange(c * C, (c + 1) * C)
                win[gi, c, :, 2 * C] = torch.tensor([s0[r] for r in rows])
                win[gi, c, :, 2 * C + 1] = torch.tensor([min(max(n - 1 - c * C, 0), C - 1) for n in glen])
                plan.append((gi, c))
            for i, r in enumerate(members):
                picks.append((plan.index((gi, (lens[r] - 1) // C)), i))
        win = win.to(dev)
        outs = []
        for gi, c in plan:
            w = win[gi, c]
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            args = (w[:, :C], w[:, C: 2 * C], w[:, 2 * C], w[:, 2 * C + 1])
            if isinstance(self._window_fn, GraphedFunction) and not self._window_fn.captured(*args):
                self._window_fn.capture(*args)
            # a CUDA graph's output is overwritten by its next replay: copy it out first
            outs.append(self._window_fn(*args).clone())
            self.forwards += 1
        flat = outs[0] if len(outs) == 1 else torch.stack(outs).flatten(0, 1)  # (windows * G, V)
        at = [w * G + i for w, i in picks]
        if at == list(range(R)):  # one window, or prompts of one window's length: no gather
            return flat[:R]
        return flat[torch.tensor(at, device=dev)]
