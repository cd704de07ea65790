"""Compiled variants of the engine's functions: which are ready, which the request path had to serve eagerly,
and plain CUDA graphs for pure functions.

A *variant* is one compiled or captured build of a function at one static shape or mode, named by a key:
``("decode", mode, kv_len)`` (one decode step), ``("window", rows)`` (one prefill window), ``("first",
samples)`` (the first-token sampler).  :meth:`Engine.warmup` builds every variant an engine can reach before
it serves; :class:`Variants` records which are built, so that the request path of a server never compiles: a
key that is not ready is served by the uncompiled function and noted in ``missing``, for :meth:`Engine.prepare`
to build while the engine is idle.

:class:`GraphedFunction` captures a pure tensor function into one ``torch.cuda.CUDAGraph`` per input
shape, without torch.compile: the function's own eager kernels, replayed in one launch.  Capturing takes
milliseconds (nothing is generated or compiled), and it cannot hit a code-generation failure.
"""

from __future__ import annotations

import torch


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
