"""A process pool for reward functions with a hard per-task timeout.

``RewardPool(workers).submit(fn, *args, timeout=5.0) -> concurrent.futures.Future``.  Each worker is
a separate fresh interpreter (started with ``subprocess``; safe next to CUDA and threads in the trainer) running
one task at a time, so a task runs in its worker's *main thread* (Math-Verify's own SIGALRM
timeout works there).  A dispatcher thread per worker sends the task over a pipe and waits; when
the task overruns its timeout, or the worker crashes (segfault, OOM kill), the worker is killed
and replaced, and the future resolves to ``fallback(reason)`` -- by default
``RewardResult(0.0, reason)`` -- instead of raising.  The caller is never blocked past
``timeout`` plus a worker restart.  Exceptions raised by ``fn`` also go to ``fallback``.

``fn`` and its arguments must be picklable (module-level functions).  The RL trainer can share
one pool for every reward.  Simplified: one queue, no priorities; a restart costs a fresh interpreter's
start-up, paid only after a timeout or crash.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable


@dataclass
class RewardResult:
    score: float  # the reward
    reason: str = ""  # why (matched / no answer / timeout / error ...)

    def __float__(self) -> float:
        return float(self.score)


def zero_result(reason: str) -> RewardResult:
    return RewardResult(0.0, reason)


def worker_main() -> None:
    """Entry point of a worker process (``python -m openmimo.rewards._pool_worker``): pickled tasks in on
    stdin, pickled results out on a private copy of stdout (fd 1 itself goes to stderr, so stray
    prints in a reward function cannot corrupt the protocol)."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    rx, tx = Connection(0, writable=False), Connection(out_fd, readable=False)
    while True:
        try:
            msg = rx.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args, kwargs = msg
        try:
            tx.send(("ok", fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 -- everything goes back to the caller
            tx.send(("error", f"{type(e).__name__}: {e}"[:500] + "\n" + traceback.format_exc()[-1000:]))


class _Worker:
    """One worker process started with ``subprocess`` (a fresh interpreter, like multiprocessing's
    ``spawn``, but without re-importing the caller's ``__main__``, so scripts need no main guard)."""

    def __init__(self):
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "openmimo.rewards._pool_worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, close_fds=True)
        self.tx = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.rx = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()

    def send(self, obj) -> None:
        self.tx.send(obj)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            pass
        self.tx.close()
        self.rx.close()

    def restart(self) -> None:
        self.kill()
        self.start()


class QueuedPool:
    """What the reward pools share: the task queue (``submit``, ``map``, ``close``), the counters, and the one
    mapping from how a task ended to its future's result (:meth:`_settle`: a value, or ``fallback(reason)``).

    A subclass starts its dispatcher after ``QueuedPool.__init__``; the dispatcher takes tasks with
    :meth:`_take`, runs them, and resolves each future with :meth:`_settle`; :meth:`_stop` ends it."""

    def __init__(self, timeout: float, fallback: Callable[[str], Any]):
        self.timeout = timeout
        self.fallback = fallback
        self.restarts = 0  # workers replaced (after a timeout, a crash, a failed hand-over)
        self.timeouts = 0
        self._q: queue.Queue = queue.Queue()
        self._closed = False

    def submit(self, fn: Callable, *args, timeout: float | None = None, **kwargs) -> Future:
        if self._closed:
            raise RuntimeError("pool is closed")
        fut: Future = Future()
        self._q.put((fn, args, kwargs, self.timeout if timeout is None else timeout, fut))
        return fut

    def map(self, fn: Callable, *iterables, timeout: float | None = None) -> list:
        futs = [self.submit(fn, *a, timeout=timeout) for a in zip(*iterables)]
        return [f.result() for f in futs]

    # -- for the dispatchers ----------------------------------------------------------------------
    def _take(self, block: bool = True):
        """The next queued ``(fn, args, kwargs, timeout, future)`` whose future was not cancelled (now marked
        running); None once :meth:`close` has been called.  Raises ``queue.Empty`` if not ``block`` and none waits."""
        while True:
            item = self._q.get(block=block)
            if item is None or item[-1].set_running_or_notify_cancel():
                return item

    def _settle(self, fut: Future, how: str, detail: Any = None, restarted: bool = False) -> None:
        """Resolve ``fut`` by how its task ended; every way but ``ok`` gives ``fallback(reason)``.

        ``ok``: ``detail`` is the value.  ``error``: ``fn`` raised (``detail``: "Type: message").  ``timeout``:
        past its timeout (``detail``: the timeout in s), its worker killed.  ``crash``: the worker died
        (``detail`` says how).  ``unsent``: the task could not be handed over (``detail``: the exception).
        ``lost``: the backend failed (``detail``: the reason).  A timeout and a crash count a restart;
        ``restarted`` counts one for the other ways.  Counters change before the future resolves."""
        if how == "ok":
            fut.set_result(detail)
            return
        if how in ("timeout", "crash") or restarted:
            self.restarts += 1
        if how == "timeout":
            self.timeouts += 1
            reason = f"timeout after {detail:g}s"
        elif how == "error":
            reason = f"error: {detail}"
        elif how == "crash":
            reason = f"worker crashed ({detail})"
        elif how == "unsent":
            reason = f"could not send the task: {type(detail).__name__}: {detail}"[:300]
        elif how == "lost":
            reason = str(detail)
        else:
            raise ValueError(f"unknown task outcome {how!r}")
        fut.set_result(self.fallback(reason))

    def _stop(self) -> None:
        """End the dispatcher after the queued tasks (the close sentinel is on the queue)."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish the queued tasks (each bounded by its timeout), then stop the workers."""
        if self._closed:
            return
        self._closed = True
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RewardPool(QueuedPool):
    """Worker processes with per-task timeouts; see the module docstring."""

    def __init__(self, workers: int | None = None, timeout: float = 5.0,
                 fallback: Callable[[str], Any] = zero_result):
        super().__init__(timeout, fallback)
        self.workers = workers or os.cpu_count() or 1
        self._workers = [_Worker() for _ in range(self.workers)]
        self._threads = [threading.Thread(target=self._dispatch, args=(w,), daemon=True) for w in self._workers]
        for t in self._threads:
            t.start()

    def _dispatch(self, w: _Worker) -> None:
        while (item := self._take()) is not None:
            fn, args, kwargs, timeout, fut = item
            try:
                w.send((fn, args, kwargs))
            except Exception as e:  # noqa: BLE001 -- unpicklable task, or a dead worker
                w.restart()
                self._settle(fut, "unsent", e, restarted=True)
                continue
            try:
                ready = w.rx.poll(timeout)
                if ready:
                    status, value = w.rx.recv()
                else:
                    status, value = "timeout", None
            except (EOFError, OSError):
                status, value = "crash", None
            if status == "ok":
                self._settle(fut, "ok", value)
            elif status == "error":
                self._settle(fut, "error", value.splitlines()[0] if value else "")
            elif status == "timeout":
                w.restart()
                self._settle(fut, "timeout", timeout)
            else:
                try:
                    code = w.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    code = None
                w.restart()
                self._settle(fut, "crash", f"exit code {code}")

    def _stop(self) -> None:
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join(timeout=30)
        for w in self._workers:
            try:
                w.send(None)
            except Exception:  # noqa: BLE001
                pass
            w.kill()
