"""A background thread that drives an :class:`~openmimo.infer.engine.Engine`, for servers and rollouts.

The engine itself is single-threaded; here one thread owns it and calls ``step()`` while any work
is pending, and every other thread or asyncio task talks to it through :meth:`submit`,
:meth:`abort` and :meth:`stream` (all safe to call concurrently).  Outputs are delivered to a
per-request callback (``sink``) from the engine thread, in step order.  :meth:`stream_many` queues several
requests at once, so one step admits (and prefills) them together.  :meth:`score` runs a batch of sequences
through :func:`openmimo.infer.scoring.score` (prompt log-probs) on the engine thread between steps; the
score jobs waiting at that moment share one call.

Warm-up: with ``warmup=True`` the thread first builds every compiled variant of the engine
(:meth:`Engine.warmup`, progress lines to ``log``) and only then sets ``ready``; requests submitted
meanwhile wait in the queue.  When the engine is idle, the thread builds any variant that the request
path had to serve eagerly (``Engine.prepare_pending``); a request submitted during such a build waits
for it.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from typing import AsyncIterator, Callable

from openmimo.infer.engine import Engine, SamplingParams, StepOutput
from openmimo.infer.scoring import score


class EngineError(RuntimeError):
    """The engine failed while this request was running (the message carries the cause)."""


class LoopQueue:
    """A sink that puts each output on an asyncio queue of ``loop``.  The engine thread hands all outputs of one
    step bound for one loop over in a single ``call_soon_threadsafe`` (one wake-up of the event loop per step,
    not one per token per request); called directly it hands over one output."""

    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue = loop, queue

    def __call__(self, o) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, o)


def _put_all(items: list) -> None:
    for queue, o in items:
        queue.put_nowait(o)


class AsyncEngine:
    def __init__(self, engine: Engine, warmup: bool = False, log: Callable[[str], None] | None = None):
        self.engine = engine
        self.log = log
        self.ready = threading.Event()  # set once the warm-up is done (at once without one)
        self.warmup_progress = (0, len(engine.compiled_variants()) if warmup else 0)  # (built, to build)
        self.warmup_error: str | None = None
        self._warmup = warmup
        if not warmup:
            self.ready.set()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._sinks: dict[str, tuple[Callable, int]] = {}  # request id -> (sink, samples still running)
        self._jobs: list[tuple[list, int, Callable]] = []  # score jobs: (sequences, top_n, done callback)
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

    def submit_many(self, items: list[tuple[list, SamplingParams, Callable]]) -> list[str]:
        """Queue several ``(prompt_ids, params, sink)`` requests at once (all or none: a bad one raises
        ValueError and queues nothing); returns their request ids."""
        with self._work:
            rids = []
            try:
                for prompt_ids, params, sink in items:
                    rid = self.engine.add_request(prompt_ids, params)
                    self._sinks[rid] = (sink, params.n)
                    rids.append(rid)
            except Exception:
                for rid in rids:
                    self.engine.abort(rid)
                    self._sinks.pop(rid, None)
                raise
            self._work.notify()
        return rids

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
        rid = self.submit(prompt_ids, params, LoopQueue(loop, queue), request_id)
        outs = self._outputs(queue, rid, params.n)
        try:
            async for o in outs:
                yield o
        finally:
            await outs.aclose()  # at once, so that an early stop aborts the request now

    def stream_many(self, prompts: list, params: SamplingParams) -> tuple[list[str], list[AsyncIterator[StepOutput]]]:
        """Queue one request per prompt at once (see :meth:`submit_many`); returns their ids and one output
        iterator each.  An iterator that is never started cannot abort its request: abort the ids when done."""
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in prompts]

        rids = self.submit_many([(p, params, LoopQueue(loop, q)) for p, q in zip(prompts, queues)])
        return rids, [self._outputs(q, rid, params.n) for q, rid in zip(queues, rids)]

    async def score(self, sequences: list[list[int]], top_n: int = 0) -> list:
        """:func:`openmimo.infer.scoring.score` of ``sequences`` on the engine thread (list of ``Scored``)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(result):
            if not fut.done():
                (fut.set_exception if isinstance(result, BaseException) else fut.set_result)(result)

        with self._work:
            self._jobs.append((sequences, top_n, lambda r: loop.call_soon_threadsafe(settle, r)))
            self._work.notify()
        return await fut

    async def _outputs(self, queue: asyncio.Queue, rid: str, n: int) -> AsyncIterator[StepOutput]:
        remaining = n
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

    def _prepare_pending(self) -> None:
        """Build one variant the request path served eagerly.  Runs without the lock, so that submitters never
        wait on a compile: they only queue requests, which this thread admits after the build."""
        key = self.engine.variants.pending()[0]
        try:
            self.engine.prepare_pending(self.log)
        except Exception:  # the eager path keeps serving that variant; it is not tried again
            self.engine.variants.failed.add(key)
            traceback.print_exc()

    def _run_jobs(self, jobs) -> None:
        """All waiting score jobs in one :func:`score` call (the largest ``top_n``, cut per job)."""
        seqs = [s for job in jobs for s in job[0]]
        top = max(job[1] for job in jobs)
        try:
            results = score(self.engine.model, seqs, top)
        except Exception as e:  # bad input or a failed forward: every job of the call hears of it
            for _, _, done in jobs:
                done(EngineError(f"scoring failed: {e!r}"))
            return
        at = 0
        for seq_list, top_n, done in jobs:
            part = results[at: at + len(seq_list)]
            at += len(seq_list)
            for r in part:
                r.top = [t if t is None else t[:top_n] for t in r.top] if top_n else []
            done(part)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._work:
            self._stop = True
            self._work.notify()
        self._thread.join(timeout)

    # -- the engine thread -----------------------------------------------------------------------
    def _run_warmup(self) -> None:
        def progress(done, total):
            self.warmup_progress = (done, total)
        try:
            self.engine.warmup(self.log, progress=progress)
        except Exception as e:  # reported by /health; requests are then served by the eager paths
            self.warmup_error = f"{type(e).__name__}: {e}"
            traceback.print_exc()

    def _loop(self) -> None:
        if self._warmup:
            self._run_warmup()
            self.ready.set()
        while True:
            with self._work:
                while not self._stop and not self.engine.has_unfinished() and not self._jobs:
                    if self.engine.variants.pending():
                        break
                    self._work.wait()
                if self._stop:
                    return
                if self._jobs:  # score jobs first (between two steps), lock released
                    jobs, self._jobs = self._jobs, []
                    self._work.release()
                    try:
                        self._run_jobs(jobs)
                    finally:
                        self._work.acquire()
                    continue
                if not self.engine.has_unfinished():  # idle with variants to build: build one, lock released
                    self._work.release()
                    try:
                        self._prepare_pending()
                    finally:
                        self._work.acquire()
                    continue
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
            self._deliver(delivered)  # outside the lock: a slow sink never blocks submitters

    @staticmethod
    def _deliver(delivered: list) -> None:
        """Hand one step's outputs to their sinks, in step order: LoopQueue sinks in one call per event loop."""
        by_loop: dict = {}
        for sink, o in delivered:
            if type(sink) is LoopQueue:
                by_loop.setdefault(sink.loop, []).append((sink.queue, o))
                continue
            try:
                sink(o)
            except Exception:  # a broken consumer must not kill the engine thread
                traceback.print_exc()
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the consumer's loop is closed: nobody is waiting for these outputs
                pass
