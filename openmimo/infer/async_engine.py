"""A background thread that drives an :class:`~openmimo.infer.engine.Engine`, for servers and rollouts.

The engine itself is single-threaded; here one thread owns it and calls ``step()`` while any work
is pending, and every other thread or asyncio task talks to it through :meth:`submit`,
:meth:`abort` and :meth:`stream` (all safe to call concurrently).  Outputs are delivered to a
per-request callback (``sink``) from the engine thread, in step order.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from typing import AsyncIterator, Callable

from openmimo.infer.engine import Engine, SamplingParams, StepOutput


class EngineError(RuntimeError):
    """The engine failed while this request was running (the message carries the cause)."""


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._sinks: dict[str, tuple[Callable, int]] = {}  # request id -> (sink, samples still running)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="openmimo-engine", daemon=True)
        self._thread.start()

    # -- thread-safe API -------------------------------------------------------------------------
    def submit(self, prompt_ids, params: SamplingParams, sink: Callable[[StepOutput | Exception], None],
               request_id: str | None = None) -> str:
        """Queue a request; ``sink`` receives each StepOutput (or an EngineError) on the engine thread."""
        with self._work:
            rid = self.engine.add_request(prompt_ids, params, request_id)  # ValueError goes to the caller
            self._sinks[rid] = (sink, params.n)
            self._work.notify()
        return rid

    def abort(self, request_id: str) -> bool:
        with self._work:
            found = self.engine.abort(request_id)
            self._work.notify()
            return found

    def metrics(self) -> dict:
        with self._lock:
            return self.engine.metrics()

    def update_weights(self, weights) -> None:
        """Swap weights between two steps (running requests continue with the new weights)."""
        with self._lock:
            self.engine.update_weights(weights)

    async def stream(self, prompt_ids, params: SamplingParams, request_id: str | None = None
                     ) -> AsyncIterator[StepOutput]:
        """Yield the request's StepOutputs as they come; aborts the request if the consumer stops early."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        rid = self.submit(prompt_ids, params, lambda o: loop.call_soon_threadsafe(queue.put_nowait, o), request_id)
        remaining = params.n
        try:
            while remaining:
                o = await queue.get()
                if isinstance(o, Exception):
                    raise o
                if o.finish_reason:
                    remaining -= 1
                yield o
        finally:
            if remaining:
                self.abort(rid)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._work:
            self._stop = True
            self._work.notify()
        self._thread.join(timeout)

    # -- the engine thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._work:
                while not self._stop and not self.engine.has_unfinished():
                    self._work.wait()
                if self._stop:
                    return
                try:
                    outs = self.engine.step()
                except Exception as e:  # report to every waiting request, then keep serving
                    err = EngineError(f"engine step failed: {e!r}\n{traceback.format_exc()}")
                    for rid, (sink, _) in list(self._sinks.items()):
                        self.engine.abort(rid)
                        sink(err)
                    try:
                        self.engine.step()  # flush the abort outputs
                    except Exception:
                        traceback.print_exc()
                    self._sinks.clear()
                    continue
                delivered = []
                for o in outs:
                    entry = self._sinks.get(o.request_id)
                    if entry is None:
                        continue
                    sink, left = entry
                    if o.finish_reason:
                        left -= 1
                        self._sinks[o.request_id] = (sink, left)
                        if left == 0:
                            del self._sinks[o.request_id]
                    delivered.append((sink, o))
            for sink, o in delivered:  # outside the lock: a slow sink never blocks submitters
                try:
                    sink(o)
                except Exception:  # a broken consumer must not kill the engine thread
                    traceback.print_exc()
