"""The generation engine: a static KV cache, continuous batching, optional MTP speculative decoding.

Usage (the rollout engine, ``openmimo generate`` and the server all drive it this way)::

    engine = Engine(model, max_slots=32, max_len=4096, spec_k=1)
    rid = engine.add_request(prompt_ids, SamplingParams(max_new_tokens=256, temperature=1.0, n=4))
    while engine.has_unfinished():
        for out in engine.step():          # StepOutput: new tokens of one sample, finish reason
            ...
    engine.abort(rid)                        # at any time; the slots are freed at once

How it works.  The cache has ``max_slots`` slots of ``capacity`` positions (sized from a memory budget
when asked).  ``step()`` admits waiting requests into free slots — the admitted prompts are prefilled together in one
right-padded forward (up to ``max_prefill_tokens``), and each prompt's KV is copied to the slots of its n
samples — then runs one decode step over *all* slots at fixed
shapes (inactive slots compute garbage that is ignored), so on GPU the step is one compiled
CUDA graph per (attention-length bucket, sampling mode: greedy / sample / filter), or per sampling mode
with ``kv_buckets=False`` (attention over the whole capacity: fewer compiles, longer attention).  A sequence that
finishes frees its slot in the same step.  On GPU the steps overlap with the host (``overlap``): each
``step()`` launches the next decode step before it reads the tokens of the previous one, so tokens
come out one call later and the host's work hides behind the GPU's (see :meth:`Engine.step`).
The model runs through the engine's own forward (``forward.py``): the model's modules with, at few rows per
step, the projections and attention through Triton kernels (``kernels.py``).  With ``spec_k = k > 0`` a decode
step drafts k tokens with the MTP layers, verifies them in one main-model forward and emits 1 to k+1 tokens per
sequence (see ``speculative.py``).

Log-probs.  Each emitted token comes with ``logprobs``: its log-probability under the model's
unmodified distribution (temperature 1, no top-k/top-p) — the same number the training model gives
(``log_softmax(model(ids).logits)``), as the RL importance ratio needs — and ``sampling_logprobs``:
under the processed distribution it was actually sampled from (temperature, top-k, top-p; 0 for
greedy picks).

Randomness.  Sampling uses counter-based noise keyed by (seed, position); a request's output
depends only on its seed, never on the batch it shares (see ``sampling.py``).  Sample i of a request
with seed s uses :func:`sample_seed` (s, i); sample 0 uses s itself.

Compiled variants.  Each compiled function runs at static shapes, one variant per (decode: sampling mode,
attention length; prefill window: row count; first token: padded sample count).  ``warmup()`` builds them all
before serving; with ``compile_on_request=False`` (the server) a variant not built is run by the eager function
instead of compiling on the request path.  The keys, the warm-up and the registry of built variants are in
``variants.py``.

Compile scope.  ``compile_scope="block"`` (the default) compiles regions — each block, each MTP depth, the head
and the rotary tables (``EngineForward(regions=True)``), one graph per region and input shape, shared by every
layer, and the glue between them (the step's inputs, each draft's pick, the verification) — and captures the whole
decode step as one plain CUDA graph per variant (``variants.StepGraphs``); prefill windows are captured the same
way.  A warm-up then compiles a few small graphs whatever the depth.  ``"step"`` compiles each decode variant whole
with torch.compile (``reduce-overhead``: Inductor fuses across layers, CUDA graphs by cudagraph trees), so a warm-up
compiles every layer of the model once per variant (docs/benchmarks.md has both scopes' warm-up and decode figures).

Sleeping.  ``sleep()`` frees the cache (and optionally moves the weights to host memory) while no sequence runs,
``wake()`` allocates it again: RL's update then has the device to itself.  Only an uncompiled or block-scope
engine sleeps (its graphs are captured again after ``wake``; a step-scope graph keeps the cache's addresses).

Short admissions (on GPU by default) are prefilled window by window through one fixed-shape CUDA graph
(``prefill_graph``; see ``prefill.py``): a batch-1 prompt then costs a replay instead of an eager forward of
hundreds of launches.

Simplifications: longer prompts are one eager (or ``compile_prefill``) forward, not chunked, and there is no prefix
cache; on CPU attention in a decode step covers the bucketed longest active sequence for every
slot (the CUDA kernel stops at each slot's own position).
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from openmimo.infer.forward import EngineForward, compile_region
from openmimo.infer.kernels import filter_logprobs
from openmimo.infer.kv_cache import CacheView, KVCache, slots_for_budget
from openmimo.infer.prefill import Prefill
from openmimo.infer.requests import Completion, SamplingParams, StepOutput, sample_seed  # noqa: F401 (re-exported)
from openmimo.infer.sampling import STREAM_DRAFT, first_tokens, gumbel_sample, padded_count, process_logits
from openmimo.infer.speculative import SpecStats, accept_drafts
from openmimo.infer.variants import GraphedFunction, StepGraphs, Variants, build_variant, variant_keys
from openmimo.runtime import allow_recompiles


@dataclass
class _Request:
    request_id: str
    prompt_ids: list
    params: SamplingParams
    seed: int


@dataclass
class _Seq:
    req: _Request
    index: int
    slot: int
    max_new: int
    tokens: list = field(default_factory=list)


class Engine:
    """Continuous-batching generation over a :class:`KVCache`; see the module docstring."""

    def __init__(self, model, *, max_slots: int | None = None, max_len: int | None = None,
                 kv_budget_bytes: int | None = None, spec_k: int = 0, compile: bool | None = None,
                 compile_prefill: bool = False, max_prefill_tokens: int = 8192, prefill_graph: bool | None = None,
                 seed: int | None = None, overlap: bool | None = None, kv_buckets: bool = True,
                 compile_on_request: bool = True, compile_scope: str = "block"):
        cfg = model.config
        p = next(model.parameters())
        self.model, self.cfg, self.device, self.dtype = model.eval(), cfg, p.device, p.dtype
        # The model's forwards through the cache, with the decode kernels where a step can take them.
        self.model_forward = EngineForward(self.model)
        if compile_scope not in self.COMPILE_SCOPES:
            raise ValueError(f"compile_scope={compile_scope!r}: expected one of {', '.join(self.COMPILE_SCOPES)}")
        self.compile_scope = compile_scope
        self.step_forward = self.model_forward  # the decode step's forward (see compile_scope below)
        if not 0 <= spec_k <= cfg.num_nextn_predict_layers:
            raise ValueError(f"spec_k={spec_k}: the model has {cfg.num_nextn_predict_layers} MTP layers")
        self.k = spec_k
        # admitted prompts are prefilled together, up to this many (padded) tokens per forward
        self.max_prefill_tokens = max_prefill_tokens
        # kv_buckets=False: every decode step attends over the whole capacity, so a compiled engine has one
        # graph per sampling mode instead of one per (power-of-two length bucket, mode).  Correct on every
        # device; cheap only where attention stops at each row's own position (the CUDA decode kernel).
        self.kv_buckets = kv_buckets
        self.max_len = min(max_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.capacity = self.max_len + 2 * spec_k + 2  # verify/draft windows may write past max_len
        n_layers = cfg.num_hidden_layers + spec_k
        if kv_budget_bytes is None and max_slots is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                kv_budget_bytes = int(free * 0.8)
            else:
                max_slots = 8
        if kv_budget_bytes is not None:
            fit = slots_for_budget(cfg, kv_budget_bytes, self.capacity, self.dtype, n_layers)
            max_slots = min(max_slots or fit, fit, 512)
        S = self.slots = max_slots
        self.cache = KVCache(cfg, S, self.capacity, n_layers, self.device, self.dtype)
        dev = self.device
        self.tokens = torch.zeros(S, self.capacity, dtype=torch.long, device=dev)
        self.length = torch.zeros(S, dtype=torch.long, device=dev)
        self.active = torch.zeros(S, dtype=torch.bool, device=dev)
        self.seeds = torch.zeros(S, dtype=torch.long, device=dev)
        self.temp = torch.zeros(S, device=dev)
        self.top_p = torch.ones(S, device=dev)
        self.top_k = torch.zeros(S, dtype=torch.long, device=dev)
        self.h0 = torch.zeros(S, self.capacity, cfg.hidden_size, dtype=self.dtype, device=dev) if spec_k else None
        self._rng = random.Random(seed)
        self._ids = itertools.count()
        self.waiting: deque[_Request] = deque()
        self.running: dict[int, _Seq] = {}  # slot -> sequence
        self._pending: list[StepOutput] = []
        self.spec_stats = SpecStats(spec_k)
        self.asleep, self._weights_on_host = False, False  # sleep() / wake()
        self.counters = {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0, "decode_steps": 0,
                         "decode_seconds": 0.0, "prefill_seconds": 0.0}
        self.compiled = (self.device.type == "cuda") if compile is None else compile
        self._decode_fn = self._decode_impl
        self._glue = None  # block scope: the decode step's glue as compiled regions (_decode_impl)
        # Compiled variants built so far (``warmup``).  compile_on_request=False (the server): the request path
        # runs the eager function for a variant not built, instead of compiling it there (variants.py).
        self.variants = Variants(self.compiled, on_request=compile_on_request)
        if self.compiled and compile_scope == "step":
            allow_recompiles(64)
            self.cache.mark_static()
            for t in (self.tokens, self.length, self.active, self.seeds, self.temp, self.top_p, self.top_k, self.h0):
                if t is not None:
                    torch._dynamo.mark_static_address(t)
            self._decode_fn = torch.compile(self._decode_impl, mode="reduce-overhead", fullgraph=True, dynamic=False)
        elif self.compiled:  # "block": compiled regions (a graph per region and shape), the step captured whole
            allow_recompiles(64)
            self.step_forward = EngineForward(self.model, regions=True)
            self._glue = tuple(compile_region(f) for f in (self._step_inputs, self._pick, self._verify))
            self._decode_fn = StepGraphs(self._decode_impl, graphs=self.device.type == "cuda")
        # The model side of admissions (prefill.py): a batched forward, or CUDA-graph windows for short ones.
        self.prefill = Prefill(self.model_forward, self.cache, self.tokens, self.h0, spec_k, self.capacity,
                               compiled=self.compiled, compile_prefill=compile_prefill, graph=prefill_graph,
                               variants=self.variants,
                               window_forward=self.step_forward if compile_scope == "block" else None)
        # The first token of each admitted sample: eager, the counter-based noise alone is ~50 launches.  On GPU
        # one CUDA graph per power-of-four sample count (the samples padded up to it), captured from the eager
        # function without torch.compile (variants.GraphedFunction): nothing to generate, so the capture takes
        # milliseconds and no Inductor code generation (of a scan over a whole vocabulary) can fail.
        self._first_fn = first_tokens
        self._first_pad = self.compiled
        if self.compiled:
            self._first_fn = (GraphedFunction(first_tokens) if self.device.type == "cuda" else
                              torch.compile(first_tokens, mode="reduce-overhead", fullgraph=True, dynamic=False))
        # Overlap: launch decode step n+1 before reading step n's tokens (see ``step``); default on GPU.
        self.overlap = (self.device.type == "cuda") if overlap is None else overlap
        self._inflight: _Inflight | None = None
        width = 1 + 3 * (spec_k + 1)  # per slot: accepted drafts, tokens, raw and processed log-probs
        pin = self.device.type == "cuda"
        self._host = [torch.zeros(S, width, dtype=torch.float64, pin_memory=pin) for _ in range(2)]
        self._flip = 0

    # -- public API ------------------------------------------------------------------------------
    def add_request(self, prompt_ids, params: SamplingParams | None = None, request_id: str | None = None) -> str:
        """Queue a request; returns its id.  Raises ValueError for prompts or params that cannot run."""
        req = self.make_request(prompt_ids, params, request_id)
        self.enqueue(req)
        return req.request_id

    def make_request(self, prompt_ids, params: SamplingParams | None = None, request_id: str | None = None):
        """A checked request for :meth:`enqueue` (ValueError for prompts or params that cannot run).  It reads only
        the engine's fixed shape, so another thread may call it while the engine steps."""
        params = params or SamplingParams()
        params.check()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.max_len:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the context of {self.max_len}")
        if params.n > self.slots:
            raise ValueError(f"n={params.n} exceeds the engine's {self.slots} slots")
        bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the vocabulary of {self.cfg.vocab_size}")
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        seed = params.seed if params.seed is not None else self._rng.getrandbits(31)
        return _Request(rid, prompt, params, int(seed) & 0x7FFFFFFF)

    def enqueue(self, req) -> None:
        """Queue a request made by :meth:`make_request` (on the thread that steps the engine)."""
        self.waiting.append(req)
        self.counters["requests"] += 1

    def abort(self, request_id: str) -> bool:
        """Drop a waiting or running request; its samples end with finish_reason "abort" at the next step."""
        found = False
        for req in list(self.waiting):
            if req.request_id == request_id:
                self.waiting.remove(req)
                self._pending += [StepOutput(request_id, i, [], [], [], "abort", len(req.prompt_ids))
                                  for i in range(req.params.n)]
                found = True
        for slot, seq in list(self.running.items()):
            if seq.req.request_id == request_id:
                self._free(slot)
                self._pending.append(StepOutput(request_id, seq.index, [], [], [], "abort", len(seq.req.prompt_ids)))
                found = True
        return found

    # -- releasing the device memory while idle (RL's update on the same GPU) -----------------------------
    @torch.no_grad()
    def sleep(self, offload_weights: bool = False) -> int:
        """Free the KV cache and the MTP hidden-state buffer, and with ``offload_weights`` move the weights to
        host memory, while no sequence runs: the memory is the update's (RL colocated on one device) until
        :meth:`wake`.  The CUDA graphs that point at it are dropped and captured again at their next use; compiled
        regions are kept, so this needs ``compile_scope="block"`` or an uncompiled engine.  Outputs still to be
        delivered (aborts) wait for the next :meth:`step`.  Returns the device bytes freed."""
        if self.compiled and self.compile_scope != "block":
            raise RuntimeError("sleep() needs Engine(compile_scope='block') or an uncompiled engine: a step-scope "
                               "compiled engine's graphs hold the cache's addresses for good")
        self._drain()
        if self.running or self.waiting:
            raise RuntimeError(f"sleep() needs an idle engine ({len(self.running)} running, {len(self.waiting)} "
                               f"waiting requests)")
        if self.asleep:
            return 0
        on_device = self.device.type != "cpu"
        freed = self.cache.free()
        if self.h0 is not None:
            freed += self.h0.numel() * self.h0.element_size()
            self._set_h0(self.h0.new_empty(0))
        self._weights_on_host = offload_weights and on_device
        if self._weights_on_host:
            for t in itertools.chain(self.model.parameters(), self.model.buffers()):
                freed += t.numel() * t.element_size()
                t.data = t.data.to("cpu")
        for fn in (self._decode_fn, self.prefill._window_fn):
            if isinstance(fn, (StepGraphs, GraphedFunction)):
                fn.reset()
        self.asleep = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return freed if on_device else 0

    @torch.no_grad()
    def wake(self) -> None:
        """Allocate what :meth:`sleep` freed again (the cache zeroed) and bring the weights back."""
        if not self.asleep:
            return
        if self._weights_on_host:
            for t in itertools.chain(self.model.parameters(), self.model.buffers()):
                t.data = t.data.to(self.device)
        self.cache.allocate()
        if self.k:
            self._set_h0(torch.zeros(self.slots, self.capacity, self.cfg.hidden_size, dtype=self.dtype,
                                     device=self.device))
        self.asleep = False

    def _set_h0(self, h0) -> None:
        self.h0 = self.prefill.h0 = h0

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self._pending or self._inflight is not None)

    def num_waiting(self) -> int:
        return len(self.waiting)

    def num_running(self) -> int:
        return len(self.running)

    @torch.no_grad()
    def update_weights(self, weights, strict: bool = True) -> None:
        """Copy new weights in place (a state dict or a model), keeping addresses for compiled graphs; with
        ``strict=False`` a state dict may hold some of the parameters (a bucket of a broadcast)."""
        sd = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
        self._drain()  # tokens of a step already launched belong to the old weights: deliver them as such
        params = dict(self.model.named_parameters())
        missing = [n for n in params if n not in sd]
        if missing and strict:
            raise KeyError(f"update_weights: missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        for name, p in params.items():
            if name in sd:
                p.copy_(sd[name].to(device=p.device, dtype=p.dtype))

    @torch.no_grad()  # the engine's model may require grad (a trainer's copy): never build a graph here
    def step(self) -> list[StepOutput]:
        """Admit waiting requests, run one decode step, return what every touched sample produced.

        With ``overlap`` (default on GPU) the decode step launched here is read by the *next* call:
        each call first launches step n+1 (it reads step n's tokens on the device), then waits for
        step n and emits its tokens, so the host's work (emitting, scheduling, launching the graph)
        runs while the GPU computes.  Outputs then arrive one call later; a sequence that finished in
        step n has computed one discarded token in step n+1.  Without it, a call prefills and runs one
        decode step to the end.
        """
        if self.asleep:
            raise RuntimeError("the engine is asleep (sleep()): call wake() before step()")
        outs, self._pending = self._pending, []
        if self._inflight is not None:
            t0 = time.perf_counter()
            prev, self._inflight = self._inflight, None
            if self._may_continue(prev):
                self._inflight = self._launch(inflight=True)
            outs += self._finish(prev)
            self.counters["decode_seconds"] += time.perf_counter() - t0
        admit, free, padded = [], self.slots - len(self.running), 0
        while self.waiting and self.waiting[0].params.n <= free:
            width = max(padded, len(self.waiting[0].prompt_ids)) * (len(admit) + 1)
            if admit and width > self.max_prefill_tokens:
                break
            req = self.waiting.popleft()
            admit.append(req)
            free -= req.params.n
            padded = max(padded, len(req.prompt_ids))
        if admit:
            outs += self._prefill(admit)
        if self._inflight is None and self.running:
            t0 = time.perf_counter()
            self._inflight = self._launch(inflight=False)
            if not self.overlap:
                outs += self._finish(self._inflight)
                self._inflight = None
            self.counters["decode_seconds"] += time.perf_counter() - t0
        return outs

    def generate(self, prompts, params: SamplingParams | list | None = None, progress=None) -> list[list[Completion]]:
        """Run prompts to completion; returns, per prompt, its n completions (index order).

        ``params`` is one SamplingParams for all prompts or one per prompt; ``progress`` is an
        optional callable, called with the number of samples finished in each step.
        """
        plist = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        rids = [self.add_request(p, sp) for p, sp in zip(prompts, plist)]
        acc = {rid: [Completion(rid, i, list(p)) for i in range(sp.n)] for rid, p, sp in zip(rids, prompts, plist)}
        while self.has_unfinished():
            done = 0
            for o in self.step():
                if o.request_id not in acc:
                    continue
                done += acc[o.request_id][o.index].extend(o)
            if progress and done:
                progress(done)
        return [acc[r] for r in rids]

    # -- compiled variants: built before serving (see variants.py) ----------------------------------
    MODES = ("greedy", "sample", "filter")
    COMPILE_SCOPES = ("step", "block")

    def kv_lengths(self) -> list[int]:
        """Every attention length a decode step can use (``_kv_bucket``'s values)."""
        if not self.kv_buckets:
            return [self.capacity]
        out, p = [], 1 << (max(2 * self.k, 16) - 1).bit_length()
        while p < self.capacity:
            out.append(p)
            p *= 2
        return out + [self.capacity]

    def compiled_variants(self) -> list[tuple]:
        """The keys of every compiled variant this engine can reach (none when it is not compiled): a decode
        step per (sampling mode, attention length), a prefill window per row count, a first-token graph per
        padded sample count (``variants.variant_keys``)."""
        if not self.compiled:
            return []
        return variant_keys(self.MODES, self.kv_lengths(), self.prefill.window_rows(), self.slots)

    @torch.no_grad()
    def warmup(self, log=None, keys=None, progress=None) -> dict:
        """Build ``keys`` (default: :meth:`compiled_variants`, all of them) now, on an idle engine; ``log(line)``
        gets one line per variant, ``progress(done, total)`` is called after each.  Returns {key: seconds}."""
        keys = self.compiled_variants() if keys is None else keys
        return self.variants.warmup(self.prepare, keys, log, progress)

    @torch.no_grad()
    def prepare(self, key: tuple) -> None:
        """Compile and capture one variant by running it on the idle engine (every slot free, so its writes land
        where admissions overwrite them before anything reads them)."""
        if self.running or self._inflight is not None:
            raise RuntimeError("prepare() needs an engine with no running sequences")
        if key in self.variants.ready or not self.compiled:
            return
        build_variant(key, decode_fn=self._decode_fn, prefill=self.prefill, first_fn=self._first_fn,
                      vocab_size=self.cfg.vocab_size, device=self.device)
        self.variants.ready.add(key)

    def prepare_pending(self, log=None) -> tuple | None:
        """Build one variant that the request path had to serve eagerly, if the engine is idle; returns its key."""
        if self.has_unfinished():
            return None
        return self.variants.build_pending(self.prepare, log)

    def reset_stats(self) -> None:
        """Zero the counters and speculative statistics (e.g. after a benchmark's warm-up)."""
        for key, v in self.counters.items():
            self.counters[key] = 0.0 if isinstance(v, float) else 0
        self.spec_stats = SpecStats(self.k)

    def metrics(self) -> dict:
        """Counters for monitoring (throughput, queue, acceptance)."""
        c = dict(self.counters)
        c["waiting"], c["running"], c["slots"] = len(self.waiting), len(self.running), self.slots
        c["decode_tokens_per_second"] = c["generated_tokens"] / c["decode_seconds"] if c["decode_seconds"] else 0.0
        c["compiled_variants_ready"] = len(self.variants.ready)
        c["eager_fallback_calls"] = self.variants.eager_calls  # request-path calls whose variant was not built
        if self.k:
            c["speculative"] = self.spec_stats.as_dict()
        return c

    # -- internals -------------------------------------------------------------------------------
    def _free(self, slot: int) -> None:
        self.running.pop(slot, None)
        self.active[slot] = False

    def _emit(self, seq: _Seq, toks: list[int], raw: list[float], proc: list[float]) -> StepOutput:
        """Append tokens to a sequence up to its stop token / length limit; free it if finished."""
        params, reason, n = seq.req.params, None, 0
        for t in toks:
            n += 1
            seq.tokens.append(t)
            if t in params.stop_ids:
                reason = "stop"
                break
            if len(seq.tokens) >= seq.max_new:
                reason = "length"
                break
        self.counters["generated_tokens"] += n
        if reason:
            self._free(seq.slot)
        return StepOutput(seq.req.request_id, seq.index, toks[:n], raw[:n], proc[:n], reason, len(seq.req.prompt_ids))

    @torch.no_grad()
    def _prefill(self, reqs: list[_Request]) -> list[StepOutput]:
        """Admit requests: their prompts, right-padded to the longest, are prefilled together (``self.prefill``:
        one forward, or CUDA-graph windows for short admissions); the n samples of a request share its prefill
        (the first slot's cache is copied); each sample's first token is drawn.

        Host work is kept to a few launches (docs/inference.md gives the cost of an admission): the per-sample
        metadata crosses to the device in two copies, the first token is drawn by one CUDA graph, and the results
        come back in one."""
        t0 = time.perf_counter()
        dev = self.device
        free = [s for s in range(self.slots) if s not in self.running]
        lens = [len(r.prompt_ids) for r in reqs]
        R, L = len(reqs), max(lens)
        groups, i = [], 0
        for r in reqs:
            groups.append(free[i: i + r.params.n])
            i += r.params.n
        # one entry per sample: (slot, prompt row, sample index)
        samples = [(slot, row, j) for row, g in enumerate(groups) for j, slot in enumerate(g)]
        N = len(samples)
        # the first-token graph's inputs: the samples padded to a power of four by repeating the first one; a
        # count whose graph is not built yet is sampled eagerly, unpadded
        first_fn = self._first_fn
        P = padded_count(N) if self._first_pad else N
        if not self.variants.use(("first", P)):
            first_fn, P = first_tokens, N
        padded = samples + samples[:1] * (P - N)
        rows = [x[1] for x in padded]
        meta = torch.tensor([g[0] for g in groups] + [n - 1 for n in lens] + [x[0] for x in padded]
                            + [lens[row] for row in rows]
                            + [sample_seed(reqs[row].seed, j) for _, row, j in padded]
                            + [int(reqs[row].params.top_k) for row in rows] + rows).to(dev)
        s0, last, idx, n_p, seeds, top_k, rows_t = meta.split([R, R] + [P] * 5)
        fmeta = torch.tensor([float(reqs[row].params.temperature) for row in rows]
                             + [float(reqs[row].params.top_p) for row in rows]).to(dev)
        ids = torch.zeros(R, L, dtype=torch.long)
        for row, r in enumerate(reqs):
            ids[row, : lens[row]] = torch.tensor(r.prompt_ids)
        host_ids, ids = ids, ids.to(dev)
        self.tokens[s0, :L] = ids  # before the forward: the MTP layers read the prompt's next tokens
        logits = self.prefill(host_ids, ids, s0, last, [g[0] for g in groups], lens)
        for row, g in enumerate(groups):
            if len(g) > 1:
                n_row, others = lens[row], torch.tensor(g[1:], device=dev)
                self.cache.copy_slot(g[0], g[1:], n_row)
                self.tokens[others, :n_row] = ids[row, :n_row]
                if self.k:
                    self.h0[others, :n_row] = self.h0[g[0], :n_row]
        temp, top_p = fmeta.split([P, P])
        if self.compiled and dev.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        args = (logits[rows_t], temp, top_p, top_k, seeds, n_p)
        if isinstance(first_fn, GraphedFunction) and not first_fn.captured(*args):  # compile_on_request
            first_fn.capture(*args)
        first = first_fn(*args)[:N]  # read before the next replay
        idx, n_p = idx[:N], n_p[:N]
        self.seeds[idx], self.length[idx] = seeds[:N], n_p
        self.temp[idx], self.top_p[idx], self.top_k[idx] = temp[:N], top_p[:N], top_k[:N]
        self.tokens[idx, n_p] = first[:, 0].long()
        self.active[idx] = True
        outs = []
        for (slot, row, j), (t, r, q) in zip(samples, first.tolist()):
            req = reqs[row]
            seq = self.running[slot] = _Seq(req, j, slot, min(req.params.max_new_tokens, self.max_len - lens[row]))
            outs.append(self._emit(seq, [int(t)], [r], [q]))
        self.counters["prompt_tokens"] += sum(lens)
        self.counters["prefill_seconds"] += time.perf_counter() - t0
        return outs

    def _kv_bucket(self, inflight: bool = False) -> int:
        """Attention length of this decode step: a power of two covering every active sequence.

        A sequence with L emitted tokens has cached n_p + L - 1 positions; the step writes and attends
        up to k more, so it needs n_p + L + k (one spare).  A step still in flight adds up to k + 1
        positions first, so then n_p + L + 2k + 1 (no spare).  Without ``kv_buckets``: the capacity."""
        if not self.kv_buckets:
            return self.capacity
        need = max(len(s.req.prompt_ids) + len(s.tokens) for s in self.running.values()) + self.k + 1
        if inflight:
            need += self.k
        need = max(need, 2 * self.k, 16)
        return min(1 << (need - 1).bit_length(), self.capacity)

    def _mode(self) -> str:
        """Sampling mode of a decode step (one compiled graph each): "greedy" when every sequence is
        greedy (no noise, no sort), "filter" when any uses top-k/top-p, else "sample"."""
        params = [s.req.params for s in self.running.values()]
        if all(p.temperature <= 0 for p in params):
            return "greedy"
        return "filter" if any(p.top_p < 1 or p.top_k > 0 for p in params) else "sample"

    def _may_continue(self, inflight: "_Inflight") -> bool:
        """Can any running sequence need a step after the one in flight?  (False when every one of them
        is in it and sure to reach its length limit there: no wasted step at the end of a batch.)"""
        return any(inflight.seqs.get(slot) is not s or len(s.tokens) + 1 < s.max_new
                   for slot, s in self.running.items())

    def _launch(self, inflight: bool) -> "_Inflight":
        """Queue one decode step over all slots and the copy of its results to pinned host memory."""
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        kv_len, mode = self._kv_bucket(inflight), self._mode()
        if self.variants.use(("decode", mode, kv_len)):
            packed = self._decode_fn(kv_len, mode)
        else:
            packed = self._decode_impl(kv_len, mode, eager=True)
        host = self._host[self._flip]
        self._flip ^= 1
        host.copy_(packed, non_blocking=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        return _Inflight(dict(self.running), host, event)

    def _finish(self, inf: "_Inflight") -> list[StepOutput]:
        """Wait for a launched step and emit its tokens to the sequences it ran for (still running)."""
        if inf.event is not None:
            inf.event.synchronize()
        rows = inf.host.tolist()
        k1 = self.k + 1
        outs, accepted = [], []
        for slot, seq in inf.seqs.items():
            if self.running.get(slot) is not seq:  # finished or aborted meanwhile: a discarded step
                continue
            r = rows[slot]
            n = int(r[0])
            a = n + 1
            accepted.append(n)
            toks = [int(t) for t in r[1: 1 + a]]
            outs.append(self._emit(seq, toks, r[1 + k1: 1 + k1 + a], r[1 + 2 * k1: 1 + 2 * k1 + a]))
        if self.k:
            self.spec_stats.record(accepted)
        self.counters["decode_steps"] += 1
        return outs

    def _drain(self) -> None:
        """Finish a step in flight now; its outputs go out with the next ``step()``."""
        if self._inflight is not None:
            prev, self._inflight = self._inflight, None
            self._pending += self._finish(prev)

    def _process(self, logits, mode: str, reps: int = 1):
        """Processed log-probs of (S * reps, V) logits with each slot's parameters."""
        t, p, k = self.temp, self.top_p, self.top_k
        if reps > 1:
            t, p, k = t.repeat_interleave(reps), p.repeat_interleave(reps), k.repeat_interleave(reps)
        if mode != "filter":
            greedy = t <= 0
            scaled = logits / torch.where(greedy, torch.ones_like(t), t)[:, None]
            lp = torch.log_softmax(scaled, -1)
            top = lp.argmax(-1, keepdim=True)
            onehot = torch.full_like(lp, float("-inf")).scatter(-1, top, 0.0)
            return torch.where(greedy[:, None], onehot, lp)
        # compiled, the filter is one opaque op: its eager kernels run inside the graph (Inductor's sort and
        # scan lowerings are not asked to handle a whole vocabulary)
        return (filter_logprobs if self.compiled else process_logits)(logits, t, p, k)

    def _decode_impl(self, kv_len: int, mode: str, eager: bool = False):
        """One decode step over all slots at fixed shapes (the function compiled on GPU).

        Returns one float64 (S, 1 + 3 (k+1)) tensor (one copy to the host): accepted drafts, tokens,
        raw and processed log-probs.  Mode "greedy" takes the arg-max of the log-probs directly — the
        token the sampling path picks for a greedy row (its one-hot distribution plus any noise) —
        without the noise and one-hot tensors over the vocabulary.

        The step is the forwards (main model, MTP depths) and three pieces of glue between them: the inputs
        (:meth:`_step_inputs`), each draft's pick (:meth:`_pick`) and the verification (:meth:`_verify`).  In block
        scope the forwards run as compiled regions and so does each piece of glue; ``eager`` runs all of it
        uncompiled (the request path's stand-in for a variant not built).
        """
        fwd = self.model_forward if eager else self.step_forward
        inputs, pick, verify = (self._step_inputs, self._pick, self._verify) if eager or not self._glue else self._glue
        length, vpos, nxt, window = inputs()
        drafts, lps = [], []
        if self.k:  # depth j re-runs a window of 2k positions ending at the last processed token
            pw, r, h, cos, sin = window
            view = CacheView(self.cache, pw, kv_len)
            for j in range(1, self.k + 1):
                h = fwd.mtp_layer(j, h, nxt, pw, cos, sin, view)
                d, q, nxt = pick(h, r, length, pw, vpos, j, mode)
                drafts.append(d)
                lps.append(q)
        out = fwd(nxt, vpos, CacheView(self.cache, vpos, kv_len))
        return verify(out.logits, out.hidden_states, tuple(drafts), tuple(lps), length, vpos, mode)

    def _step_inputs(self):
        """A decode step's inputs: each slot's length (1 for a free slot), the verify positions (S, k+1), and
        either the main model's input ids (no drafts) or the draft window — its positions (S, 2k), the row of
        the last processed token in it, the hidden states there, the rotary tables, and depth 1's next-token
        embeddings."""
        S, k = self.slots, self.k
        dev = self.tokens.device
        length = torch.where(self.active, self.length, torch.ones_like(self.length))
        vpos = length[:, None] + torch.arange(k + 1, device=dev)
        rows = torch.arange(S, device=dev)[:, None]
        if not k:
            return length, vpos, self.tokens[rows, vpos], None
        start = (length - 2 * k).clamp(min=0)
        pw = start[:, None] + torch.arange(2 * k, device=dev)
        cos, sin = self.model_forward.rope(pw, self.dtype)
        nxt = self.model.model.embed_tokens(self.tokens[rows, pw + 1])
        return length, vpos, nxt, (pw, length - 1 - start, self.h0[rows, pw], cos, sin)

    def _pick(self, h, r, length, pw, vpos, j: int, mode: str):
        """Draft j from depth j's hidden states ``h`` (S, 2k, hidden) at row ``r`` of the window: the token
        (written after the slot's sequence), the processed log-probs it was drawn from (None when greedy), and the
        next forward's input — depth j+1's next-token embeddings, or the main model's verify ids after depth k."""
        rows = torch.arange(self.slots, device=h.device)
        logits = self.model.lm_head(h[rows, r]).float()
        if mode == "greedy":
            d, q = logits.log_softmax(-1).argmax(-1), None
        else:
            q = self._process(logits, mode)
            d = gumbel_sample(q, self.seeds, length + j, STREAM_DRAFT)
        self.tokens[rows, length + j] = d
        if j < self.k:
            return d, q, self.model.model.embed_tokens(self.tokens[rows[:, None], pw + j + 1])
        return d, q, self.tokens[rows[:, None], vpos]

    def _verify(self, logits, hidden, drafts: tuple, lps: tuple, length, vpos, mode: str):
        """Accept drafts against the main model's logits (S, k+1, V) at ``vpos``, write the tokens and lengths,
        and pack the step's results (see :meth:`_decode_impl`)."""
        S, k, V = self.slots, self.k, self.cfg.vocab_size
        rows = torch.arange(S, device=logits.device)[:, None]
        drafts = torch.stack(drafts, 1) if k else None
        if k:
            self.h0[rows, vpos] = hidden
        logits = logits.float()
        if mode == "greedy":
            lp = torch.log_softmax(logits, -1)
            target = lp.argmax(-1)  # (S, k+1)
            if k:  # accept drafts while they equal the arg-max; the next token is the arg-max there
                n_acc = (drafts == target[:, :k]).long().cumprod(-1).sum(-1)
            else:
                n_acc = torch.zeros(S, dtype=torch.long, device=logits.device)
            toks = target
            raw = lp.gather(-1, toks[..., None])[..., 0]
            plp = torch.zeros_like(raw)
        else:
            proc = self._process(logits.reshape(S * (k + 1), V), mode, k + 1).view(S, k + 1, V)
            n_acc, toks = accept_drafts(proc, torch.stack(lps, 1) if k else None, drafts, self.seeds, length + 1)
            raw = torch.log_softmax(logits, -1).gather(-1, toks[..., None])[..., 0]
            plp = proc.gather(-1, toks[..., None])[..., 0]
        self.tokens[rows, vpos + 1] = toks
        self.length.copy_(torch.where(self.active, length + n_acc + 1, self.length))
        return torch.cat([n_acc[:, None].double(), toks.double(), raw.double(), plp.double()], 1)


@dataclass
class _Inflight:
    """A launched decode step: the sequences it ran for (slot -> sequence), its pinned results, its event."""

    seqs: dict
    host: torch.Tensor
    event: object
