"""Compiled variants of the engine's functions: their keys, the warm-up that builds them, which are ready, which
the request path had to serve eagerly, and plain CUDA graphs for pure functions.

A *variant* is one compiled or captured build of a function at one static shape or mode, named by a key:
``("decode", mode, kv_len)`` (one decode step), ``("window", rows)`` (one prefill window), ``("first",
samples)`` (the first-token sampler).  :func:`variant_keys` lists every variant an engine can reach;
:meth:`Variants.warmup` builds them before it serves (:func:`build_variant` runs one), with a log line and a
progress call per variant.  :class:`Variants` records which are built, so that the request path of a server
never compiles: a key that is not ready is served by the uncompiled function and noted in ``missing``, for
:meth:`Variants.build_pending` to build while the engine is idle.

:class:`GraphedFunction` captures a pure tensor function into one ``torch.cuda.CUDAGraph`` per input
shape, without torch.compile: the function's own eager kernels, replayed in one launch.  Capturing takes
milliseconds (nothing is generated or compiled), and it cannot hit a code-generation failure.
"""

from __future__ import annotations

import time

import torch

from openmimo.infer.sampling import padded_count


def variant_keys(modes, kv_lengths, window_rows, max_samples: int) -> list[tuple]:
    """Every variant key of a compiled engine: a decode step per (sampling mode, attention length), a prefill
    window per row count, a first-token graph per padded sample count up to ``padded_count(max_samples)``."""
    keys = [("decode", mode, kv) for mode in modes for kv in kv_lengths]
    keys += [("window", rows) for rows in window_rows]
    p, top = 1, padded_count(max_samples)
    while p <= top:
        keys.append(("first", p))
        p *= 4
    return keys


def sampler_inputs(samples: int, vocab_size: int, device) -> tuple:
    """Placeholder inputs of the first-token sampler for ``samples`` rows (logits, temperature, top-p, top-k,
    seeds, positions): the shapes and dtypes its graph is built for."""
    P, V = samples, vocab_size
    return (torch.zeros(P, V, device=device), torch.ones(P, device=device), torch.ones(P, device=device),
            torch.zeros(P, dtype=torch.long, device=device), torch.zeros(P, dtype=torch.long, device=device),
            torch.ones(P, dtype=torch.long, device=device))


def _record(fn, args, graphs: bool) -> None:
    """Three calls of a ``reduce-overhead`` compiled function: cudagraph trees warm up, record, then replay."""
    for _ in range(3):
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        fn(*args)


def build_variant(key: tuple, *, decode_fn, prefill, first_fn, vocab_size: int, device) -> None:
    """Compile and capture one variant by running it: ``decode_fn(kv_len, mode)`` (the compiled decode step),
    ``prefill.prepare_window(rows)``, or ``first_fn`` (a :class:`GraphedFunction` is captured, a compiled
    function recorded) on placeholder inputs.  The caller's engine must be idle: the writes land in free slots."""
    graphs = device.type == "cuda"
    kind = key[0]
    if kind == "decode":
        _record(decode_fn, (key[2], key[1]), graphs)
    elif kind == "window":
        prefill.prepare_window(key[1])
    elif kind == "first":
        args = sampler_inputs(key[1], vocab_size, device)
        if isinstance(first_fn, GraphedFunction):
            first_fn.capture(*args)
        else:
            _record(first_fn, args, graphs)
    else:
        raise ValueError(f"unknown compiled variant {key!r}")
    if graphs:
        torch.cuda.synchronize(device)


def describe(key: tuple) -> str:
    """A variant's key in words (for the warm-up log)."""
    kind = key[0]
    if kind == "decode":
        return f"decode step, {key[1]} sampling, attention over {key[2]} positions"
    if kind == "window":
        return f"prefill window of {key[1]} prompt row{'s' if key[1] != 1 else ''}"
    if kind == "first":
        return f"first-token sampler for {key[1]} sample{'s' if key[1] != 1 else ''}"
    return repr(key)


class Variants:
    """Which variants are built (``ready``) and which the request path served eagerly (``missing``: key ->
    calls).  With ``enabled`` False (an uncompiled engine) every key counts as ready: the eager function is
    the path.  With ``on_request`` (batch generation, rollouts) a key not built is compiled by the call that
    needs it, as torch.compile does by itself; without it (the server) that call runs eagerly."""

    def __init__(self, enabled: bool, on_request: bool = False):
        self.enabled, self.on_request = enabled, on_request
        self.ready: set = set()
        self.missing: dict = {}
        self.failed: set = set()  # keys whose build raised: served eagerly for good
        self.eager_calls = 0  # request-path calls served eagerly because their variant was not built

    def use(self, key: tuple) -> bool:
        """True when ``key`` may run compiled; otherwise note it (the caller runs the eager function)."""
        if not self.enabled or key in self.ready:
            return True
        if self.on_request:
            self.ready.add(key)
            return True
        self.missing[key] = self.missing.get(key, 0) + 1
        self.eager_calls += 1
        return False

    def pending(self) -> list:
        """Keys the request path needed that are still not built, in the order first needed."""
        return [k for k in self.missing if k not in self.ready and k not in self.failed]

    def warmup(self, build, keys, log=None, progress=None) -> dict:
        """Build ``keys`` in order with ``build(key)``; ``log(line)`` gets one line per variant and a summary,
        ``progress(done, total)`` is called after each.  Returns {key: seconds}."""
        keys = list(keys)
        times, t_all = {}, time.perf_counter()
        for i, key in enumerate(keys, 1):
            t0 = time.perf_counter()
            build(key)
            times[key] = dt = time.perf_counter() - t0
            if log:
                log(f"warm-up {i}/{len(keys)}: {describe(key)}: {dt:.1f} s")
            if progress:
                progress(i, len(keys))
        if log and len(keys) > 1:
            log(f"warm-up done: {len(keys)} compiled variants in {time.perf_counter() - t_all:.1f} s")
        return times

    def build_pending(self, build, log=None) -> tuple | None:
        """Build the first :meth:`pending` key with ``build(key)`` (logged as a warm-up); returns it, or None."""
        pending = self.pending()
        if not pending:
            return None
        self.warmup(build, pending[:1], log)
        return pending[0]


class GraphedFunction:
    """``fn(*tensors)`` replayed from a CUDA graph captured per input shape (``capture``) or, for a shape not
    captured, run eagerly.  The output tensor is the graph's own buffer: read it before the next call."""

    def __init__(self, fn):
        self.fn = fn
        self._graphs: dict = {}  # input shapes -> (graph, static inputs, static output)
        self._pool = None

    @staticmethod
    def _shape_key(args) -> tuple:
        return tuple((tuple(a.shape), a.dtype) for a in args)

    def captured(self, *args) -> bool:
        return self._shape_key(args) in self._graphs

    def reset(self) -> None:
        """Drop every captured graph and its memory pool (the buffers it read or wrote are going away)."""
        self._graphs, self._pool = {}, None

    def capture(self, *args) -> None:
        """Capture ``fn`` for the shapes and dtypes of ``args`` (example inputs; their values are not kept)."""
        key = self._shape_key(args)
        if key in self._graphs:
            return
        static = [a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up runs on a side stream, as torch.cuda.graphs asks
            for _ in range(2):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.fn(*static)
        self._graphs[key] = (graph, static, out)

    def __call__(self, *args):
        entry = self._graphs.get(self._shape_key(args))
        if entry is None:
            return self.fn(*args)
        graph, static, out = entry
        for s, a in zip(static, args):
            s.copy_(a)
        graph.replay()
        return out


class StepGraphs:
    """``fn(*key)`` — a function of Python constants over static buffers, such as the engine's decode step —
    replayed from one CUDA graph per ``key``.  The first call for a key runs ``fn`` (which compiles whatever it
    compiles at those shapes), the second captures it and replays the capture, later ones replay: every call does
    ``fn``'s work exactly once, so a variant may be built on the request path.  The output of a replay is the
    graph's own buffer: read it before the next call.  Without ``graphs`` (CPU) every call runs ``fn``."""

    def __init__(self, fn, graphs: bool):
        self.fn, self.graphs = fn, graphs
        self._graphs: dict = {}  # key -> (graph, static output)
        self._ran: set = set()
        self._pool = None

    def captured(self, *key) -> bool:
        return key in self._graphs

    def reset(self) -> None:
        """Drop every captured graph and its memory pool; a key already run is captured again at its next call."""
        self._graphs, self._pool = {}, None

    def __call__(self, *key):
        entry = self._graphs.get(key)
        if entry is not None:
            entry[0].replay()
            return entry[1]
        if not self.graphs or key not in self._ran:
            self._ran.add(key)
            return self.fn(*key)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.fn(*key)
        self._graphs[key] = (graph, out)
        graph.replay()
        return out
