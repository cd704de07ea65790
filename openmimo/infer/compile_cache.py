"""Where compiled artifacts live between runs, so that a restarted server builds its graphs from disk.

PyTorch keeps what torch.compile produces in on-disk caches: Inductor's FX-graph cache (generated code per
graph), the AOT-autograd cache (the traced forward per graph), autotuning results, and Triton's compiled
kernels.  :func:`use_compile_cache` points all of them at one folder (``--compile-cache``, default
``$OPENMIMO_COMPILE_CACHE`` or ``~/.cache/openmimo/compile``) and turns them on; it must run before the first
compile.  A restart still traces each function with dynamo (seconds per graph) and captures its CUDA graph,
but generates and compiles no code.  :func:`cache_counts` says how many graphs came from the cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_dir() -> Path:
    env = os.environ.get("OPENMIMO_COMPILE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "openmimo" / "compile"


def use_compile_cache(folder: str | os.PathLike | None = None) -> Path:
    """Send Inductor's and Triton's caches to ``folder``/inductor and ``folder``/triton (created; default
    :func:`default_dir`) by setting TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR (torch sets the first itself
    on import, so an inherited value cannot be told from its default); returns the folder."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    root = Path(folder) if folder else default_dir()
    for var, sub in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str((root / sub).resolve())
    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True
    return root


def cache_counts() -> dict:
    """Graphs served from / missing in the on-disk caches so far in this process."""
    from torch._dynamo.utils import counters

    return {"fx_graph_hits": counters["inductor"]["fxgraph_cache_hit"],
            "fx_graph_misses": counters["inductor"]["fxgraph_cache_miss"],
            "aot_autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
            "aot_autograd_misses": counters["aot_autograd"]["autograd_cache_miss"],
            "dynamo_graphs": counters["stats"]["unique_graphs"]}
