"""The reward pool on Ray: the same interface as :class:`~openmimo.rewards.pool.RewardPool`, with the
work done by Ray tasks -- on a local Ray instance, or on a cluster of dedicated reward servers.

``RayRewardPool(workers, timeout, address=None).submit(fn, *args, timeout=5.0) -> concurrent.futures.Future``.
``address=None`` starts a private local Ray instance with ``workers`` CPUs (no dashboard, quiet
logs) and shuts it down on :meth:`close`; an address (``"auto"``, ``"ray://host:10001"``) connects
to a running cluster instead, whose nodes must have openmimo importable (the reward functions are
sent by reference).  An already initialised Ray (``ray.init`` called by the program) is reused
as it is and left running.

As in the process pool, at most ``workers`` tasks are in flight (the rest wait in a local queue,
first come first served), futures never raise, and every failure resolves to ``fallback(reason)``
-- by default ``RewardResult(0.0, reason)``: a task past its timeout is cancelled with
``ray.cancel(force=True)`` (its worker process is killed; Ray starts another) and gives
``"timeout after Ns"``; an exception in ``fn`` gives ``"error: Type: message"``; a worker that dies
(segfault, ``os._exit``, OOM kill) gives ``"worker crashed (...)"``.  Tasks are never retried.

The timeout counts from the hand-off to Ray, so it includes Ray's scheduling and, after a
kill, the start of a replacement worker: keep it well above that (docs/rewards.md).  A single
dispatcher thread watches the tasks with ``ray.wait``.

Importing this module does not import Ray; constructing the pool without it raises ImportError
(``pip install openmimo[ray]``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from openmimo.rewards.pool import QueuedPool, zero_result

_POLL_S = 0.02  # how often the dispatcher looks at the local queue while it has free slots


def import_ray(what: str = "the Ray reward backend"):
    """The ``ray`` module, or ImportError naming ``what`` needs it (the optional ``ray`` extra)."""
    try:
        import ray  # the optional `ray` extra: importing this module works without it
    except ImportError as e:
        raise ImportError(f"{what} needs Ray: pip install openmimo[ray] (or pip install 'ray>=2.9'); {e}") from None
    return ray


def ensure_ray(address: str | None, num_cpus: int, object_store_memory: int = 128 * 1024 * 1024, **init_kwargs):
    """Connect to a running Ray, or start one: ``address`` (``"auto"``, ``"ray://host:10001"``) joins a cluster,
    ``None`` starts a private local instance with ``num_cpus`` CPUs (no dashboard, quiet logs).  An already
    initialised Ray is reused as it is.  Returns (ray, whether this call started it -- its caller shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kw: dict = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        kw["address"] = address
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kw.update(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory)
    kw.update(init_kwargs)
    ray.init(**kw)
    return ray, True


def _call(fn: Callable, args: tuple, kwargs: dict):
    """Runs in a Ray worker."""
    return fn(*args, **kwargs)


def _first_line(text: str, limit: int = 300) -> str:
    lines = str(text).strip().splitlines()
    return (lines[0] if lines else "")[:limit]


class RayRewardPool(QueuedPool):
    """Reward tasks on Ray with per-task timeouts; see the module docstring."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0,
                 fallback: Callable[[str], Any] = zero_result, address: str | None = None, **init_kwargs):
        import_ray()
        super().__init__(timeout, fallback)  # restarts: workers killed after a timeout, or dead (Ray replaces them)
        # rewards pass small strings: the default object store is enough
        ray, self._owns_ray = ensure_ray(address, workers or os.cpu_count() or 1, **init_kwargs)
        self._ray = ray
        if workers is None:
            workers = int(ray.cluster_resources().get("CPU", 0)) or os.cpu_count() or 1
        self.workers = workers
        self._task = ray.remote(_call).options(num_cpus=1, max_retries=0, retry_exceptions=False)
        self._thread = threading.Thread(target=self._dispatch, daemon=True, name="ray-reward-pool")
        self._thread.start()

    # -- the dispatcher thread ------------------------------------------------------------------
    def _resolve(self, ref, fut: Future) -> None:
        ray = self._ray
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # fn raised
            cause = getattr(e, "cause", None)
            what = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(e)
            self._settle(fut, "error", _first_line(what))
        except Exception as e:  # noqa: BLE001 -- WorkerCrashedError, OutOfMemoryError, NodeDiedError ...
            self._settle(fut, "crash", f"{type(e).__name__}: {_first_line(e)}")
        else:
            self._settle(fut, "ok", value)

    def _dispatch(self) -> None:
        ray = self._ray
        inflight: dict = {}  # ObjectRef -> (future, deadline, timeout)
        closing = False
        while True:
            while not closing and len(inflight) < self.workers:  # fill the free slots
                try:
                    item = self._take(block=not inflight)
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                fn, args, kwargs, timeout, fut = item
                try:
                    ref = self._task.remote(fn, args, kwargs)
                except Exception as e:  # noqa: BLE001 -- unpicklable task, lost cluster ...
                    self._settle(fut, "unsent", e)
                    continue
                inflight[ref] = (fut, time.monotonic() + timeout, timeout)
            if not inflight:
                if closing:
                    return
                continue
            wait = max(0.0, min(d for _, d, _ in inflight.values()) - time.monotonic())
            if not closing and len(inflight) < self.workers:
                wait = min(wait, _POLL_S)
            try:
                refs = list(inflight)
                ready, _ = ray.wait(refs, num_returns=1, timeout=wait)
                if ready:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            except Exception as e:  # noqa: BLE001 -- the cluster is gone: fail what is in flight
                for fut, _, _ in inflight.values():
                    self._settle(fut, "lost", f"ray error: {type(e).__name__}: {_first_line(e)}")
                inflight.clear()
                continue
            for ref in ready:
                self._resolve(ref, inflight.pop(ref)[0])
            now = time.monotonic()
            for ref in [r for r, (_, d, _) in inflight.items() if d <= now]:
                fut, _, timeout = inflight.pop(ref)
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 -- finished meanwhile, or already gone
                    pass
                self._settle(fut, "timeout", timeout)

    def _stop(self) -> None:
        """Finish the queued tasks, then stop; shuts down the Ray instance only if this pool started it."""
        self._q.put(None)
        self._thread.join(timeout=60)
        if self._owns_ray:
            try:
                self._ray.shutdown()
            except Exception:  # noqa: BLE001
                pass
