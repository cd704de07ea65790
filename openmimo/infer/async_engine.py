"""A background thread that drives an :class:`~openmimo.infer.engine.Engine`, for servers and rollouts.

The engine itself is single-threaded; here one thread owns it and calls ``step()`` while any work
is pending, and every other thread or asyncio task talks to it through :meth:`submit`,
:meth:`abort` and :meth:`stream` (all safe to call concurrently).  Those calls never wait for an engine step: they
check the request at once (a ValueError goes to the caller) and leave it, or the abort, in an inbox that the engine
thread drains before each step, so an event loop that submits or aborts is never held up by the engine.  Outputs are delivered to a
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
        self._engine_lock = threading.Lock()  # held by the engine thread while it touches the engine
        self._wake = threading.Condition(threading.Lock())  # guards the inbox, the score jobs and _stop
        self._inbox: list[tuple] = []  # ("add", request, sink) and ("abort", request id), in call order
        self._open: set[str] = set()  # request ids submitted and not yet finished (any thread reads it)
        self._sinks: dict[str, tuple[Callable, int]] = {}  # engine thread only: request id -> (sink, samples left)
        self._jobs: list[tuple[list, int, Callable]] = []  # score jobs: (sequences, top_n, done callback)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="openmimo-engine", daemon=True)
        self._thread.start()

    # -- thread-safe API -------------------------------------------------------------------------
    def submit(self, prompt_ids, params: SamplingParams, sink: Callable[[StepOutput | Exception], None],
               request_id: str | None = None) -> str:
        """Queue a request; ``sink`` receives each StepOutput (or an EngineError) on the engine thread."""
        return self.submit_many([(prompt_ids, params, sink)], [request_id])[0]

    def submit_many(self, items: list[tuple[list, SamplingParams, Callable]],
                    request_ids: list[str | None] | None = None) -> list[str]:
        """Queue several ``(prompt_ids, params, sink)`` requests at once (all or none: a bad one raises
        ValueError and queues nothing); returns their request ids."""
        ids = request_ids or [None] * len(items)
        reqs = [(self.engine.make_request(p, params, rid), sink) for (p, params, sink), rid in zip(items, ids)]
        with self._wake:
            for req, sink in reqs:
                self._open.add(req.request_id)
                self._inbox.append(("add", req, sink))
            self._wake.notify()
        return [req.request_id for req, _ in reqs]

    def abort(self, request_id: str) -> bool:
        """Drop the request (its samples end with finish_reason "abort"); False when it had already finished."""
        if request_id not in self._open:
            return False
        with self._wake:
            self._inbox.append(("abort", request_id))
            self._wake.notify()
        return True

    def metrics(self) -> dict:
        with self._engine_lock:
            return self.engine.metrics()

    def update_weights(self, weights) -> None:
        """Swap weights between two steps (running requests continue with the new weights)."""
        with self._engine_lock:
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

        with self._wake:
            self._jobs.append((sequences, top_n, lambda r: loop.call_soon_threadsafe(settle, r)))
            self._wake.notify()
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
        """Build one variant the request path served eagerly.  Submitters never wait on it: they only fill the
        inbox, which this thread drains after the build."""
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
        with self._wake:
            self._stop = True
            self._wake.notify()
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

    def _take_work(self) -> tuple[list, list] | None:
        """Wait until there is something to do; the inbox and score jobs taken (None: shut down)."""
        with self._wake:
            while not (self._stop or self._inbox or self._jobs or self.engine.has_unfinished()
                       or self.engine.variants.pending()):
                self._wake.wait()
            if self._stop:
                return None
            ops, self._inbox = self._inbox, []
            jobs, self._jobs = self._jobs, []
        return ops, jobs

    def _apply(self, ops: list) -> None:
        """The inbox's adds and aborts, in call order (an abort of an unknown or finished id does nothing)."""
        for op in ops:
            if op[0] == "add":
                _, req, sink = op
                self.engine.enqueue(req)
                self._sinks[req.request_id] = (sink, req.params.n)
            elif op[1] in self._sinks:
                self.engine.abort(op[1])

    def _loop(self) -> None:
        if self._warmup:
            self._run_warmup()
            self.ready.set()
        while True:
            work = self._take_work()
            if work is None:
                return
            ops, jobs = work
            with self._engine_lock:
                self._apply(ops)
            if jobs:  # score jobs first, between two steps
                self._run_jobs(jobs)
            if not self.engine.has_unfinished():
                if not jobs and self.engine.variants.pending():  # idle with variants to build: build one
                    self._prepare_pending()
                continue
            with self._engine_lock:
                delivered = self._step()
            self._deliver(delivered)  # outside the lock: a slow sink never holds up the engine's users

    def _step(self) -> list:
        """One engine step; (sink, output) pairs in step order.  A failed step is reported to every request."""
        try:
            outs = self.engine.step()
        except Exception as e:  # report to every waiting request, then keep serving
            err = EngineError(f"engine step failed: {e!r}\n{traceback.format_exc()}")
            failed = [(sink, err) for sink, _ in self._sinks.values()]
            for rid in list(self._sinks):
                self.engine.abort(rid)
                self._open.discard(rid)
            try:
                self.engine.step()  # flush the abort outputs
            except Exception:
                traceback.print_exc()
            self._sinks.clear()
            return failed
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
                    self._open.discard(o.request_id)
            delivered.append((sink, o))
        return delivered

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
