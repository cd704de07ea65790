"""The isolated code judge: ``judge(code, tests, limits) -> list[Verdict]``, a batched async form, and
``openmimo judge --code FILE --tests FILE.json [--json]``.

Tests are dicts: stdin/stdout ``{"input": "1 2\\n", "output": "3\\n"}`` or call-based
``{"fn": "add", "args": [1, 2], "expected": 3}`` (a module-level function, or a method of a
``Solution`` class, as on LeetCode), or assert-style ``{"check": "assert add(1, 2) == 3"}`` (MBPP,
HumanEval: the check code runs after the program in its namespace, so -- unlike the two other
kinds -- a hostile program can see and subvert it, e.g. with an object whose ``__eq__`` is always
true; prefer stdin or call tests for RL rewards).  Every test gets one :class:`Verdict`: ``passed``,
``wrong_answer``, ``runtime_error``, ``time_limit``, ``memory_limit``, ``output_limit`` (or
``skipped`` after the first failure when ``stop_early`` is set), with CPU time and peak memory.

Throughput: a :class:`Judge` keeps one sandboxed, pre-started interpreter per worker (default: one
per core, see :mod:`openmimo.rewards.isolation`); a program's tests are cut into chunks spread over
the workers, and each test is a ``fork`` of that interpreter -- no interpreter start-up per test.
Results are cached by the SHA-256 of (code, tests, limits, options).

The time limit is CPU time (RLIMIT_CPU and the measured rusage), so a loaded machine does not
produce false time-outs; a wall-clock backstop (``time_s * wall_factor + wall_extra_s``) catches
programs that sleep or block.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import queue
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from openmimo.rewards.isolation import IsolationUnavailable, SandboxDied, SandboxProcess, resolve_backend

STATUSES = ("passed", "wrong_answer", "runtime_error", "time_limit", "memory_limit", "output_limit", "skipped")


@dataclass
class Limits:
    time_s: float = 2.0  # CPU-time limit per test (seconds)
    memory_mb: int = 512  # address-space limit per test, interpreter included (MiB)
    output_bytes: int = 16 << 20  # stdout limit; also the file-size limit for anything the test writes
    nproc: int = 32  # processes + threads the test may have at once
    nofile: int = 64  # open files
    wall_factor: float = 3.0  # wall-clock backstop = time_s * wall_factor + wall_extra_s
    wall_extra_s: float = 1.0

    def check(self) -> None:
        for k in ("time_s", "memory_mb", "output_bytes", "nproc", "nofile", "wall_factor"):
            if getattr(self, k) <= 0:
                raise ValueError(f"key 'limits.{k}' must be positive, got {getattr(self, k)!r}")
        if self.memory_mb < 64:
            raise ValueError("key 'limits.memory_mb' must be at least 64 (the interpreter itself needs ~30 MiB)")


@dataclass
class Verdict:
    status: str  # one of STATUSES
    time: float = 0.0  # CPU seconds used by the test process
    memory_kb: int = 0  # peak resident memory of the test process (KiB)
    wall: float = 0.0  # wall-clock seconds
    exit_code: int = 0  # exit status, or -signal
    detail: str = ""  # a short reason (exception line, diff excerpt)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _normalise_tests(tests) -> list[dict]:
    out = []
    for i, t in enumerate(tests):
        if not isinstance(t, dict):
            raise ValueError(f"test {i} must be a dict, got {type(t).__name__}")
        if "fn" in t and t["fn"] is not None:
            args = t.get("args", [])
            if not isinstance(args, list):
                raise ValueError(f"test {i}: 'args' must be a JSON list")
            out.append({"fn": str(t["fn"]), "args": args, "expected": t.get("expected")})
        elif t.get("check"):
            out.append({"input": str(t.get("input", "")), "check": str(t["check"])})
        elif "input" in t or "output" in t:
            out.append({"input": str(t.get("input", "")), "output": str(t.get("output", ""))})
        else:
            raise ValueError(f"test {i} needs 'input'/'output' (stdin), 'fn'/'args'/'expected' (call) or 'check' (assert code)")
    return out


class _Job:
    def __init__(self, code, tests, limits, stop_early, tol, key):
        self.code, self.tests, self.limits, self.stop_early, self.tol, self.key = code, tests, limits, stop_early, tol, key
        self.future: Future = Future()
        self.results: list = [None] * len(tests)
        self.pending = 0
        self.failed = False
        self.lock = threading.Lock()


class Judge:
    """A pool of sandboxed interpreters, one thread each, fed from one queue of (job, chunk) items."""

    def __init__(self, workers: int | None = None, limits: Limits | None = None, backend: str = "auto",
                 allow_unsafe: bool = False, python: str | None = None, cache_size: int = 4096,
                 chunk_size: int = 64, tmp_mb: int = 256):
        self.limits = limits or Limits()
        self.limits.check()
        self.python = python or sys.executable
        self.backend = resolve_backend(backend, self.python, allow_unsafe)
        self.workers = workers or os.cpu_count() or 1
        self.chunk_size, self.tmp_mb = chunk_size, tmp_mb
        self.cache: OrderedDict[str, list[Verdict]] = OrderedDict()
        self.cache_size = cache_size
        self.restarts = 0
        self._cpu_done = 0.0  # CPU seconds of sandboxes already closed
        self._cpu_live = [0.0] * (workers or os.cpu_count() or 1)
        self._q: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.workers)]
        for t in self._threads:
            t.start()

    # -- public API -------------------------------------------------------------------------------
    def submit(self, code: str, tests, limits: Limits | None = None, stop_early: bool = False,
               tol: float | None = None) -> Future:
        """Queue a program; the future resolves to ``list[Verdict]`` (one per test, in order)."""
        if self._closed:
            raise RuntimeError("judge is closed")
        lim = dataclasses.asdict(limits or self.limits)
        norm = _normalise_tests(tests)
        key = hashlib.sha256(json.dumps([code, norm, lim, stop_early, tol], sort_keys=True).encode()).hexdigest()
        with self._lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
        job = _Job(code, norm, lim, stop_early, tol, key)
        if hit is not None or not norm:
            job.future.set_result([dataclasses.replace(v) for v in hit] if hit else [])
            return job.future
        # stop_early needs the tests in order, so it runs as a single chunk
        size = len(norm) if stop_early else max(1, min(self.chunk_size, -(-len(norm) // self.workers)))
        chunks = [(s, min(s + size, len(norm))) for s in range(0, len(norm), size)]
        job.pending = len(chunks)
        for c in chunks:
            self._q.put((job, c))
        return job.future

    def run(self, code: str, tests, limits: Limits | None = None, stop_early: bool = False,
            tol: float | None = None) -> list[Verdict]:
        return self.submit(code, tests, limits, stop_early, tol).result()

    async def arun(self, code: str, tests, limits: Limits | None = None, stop_early: bool = False,
                   tol: float | None = None) -> list[Verdict]:
        return await asyncio.wrap_future(self.submit(code, tests, limits, stop_early, tol))

    async def arun_many(self, items, limits: Limits | None = None, stop_early: bool = False) -> list[list[Verdict]]:
        """Batched async form: ``items`` is an iterable of (code, tests); all run concurrently."""
        futs = [self.submit(code, tests, limits, stop_early) for code, tests in items]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futs)))

    @property
    def sandbox_cpu_seconds(self) -> float:
        """CPU time used inside the sandboxes so far (zygotes and the tests they reaped)."""
        return self._cpu_done + sum(self._cpu_live)

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- workers ----------------------------------------------------------------------------------
    def _start(self) -> SandboxProcess:
        return SandboxProcess(self.backend, self.python, tmp_mb=self.tmp_mb)

    def _worker(self, idx: int) -> None:
        sb = None
        uid = 60000 + idx  # a distinct unprivileged uid per worker, so rlimits on processes do not interfere
        while True:
            item = self._q.get()
            if item is None:
                break
            job, (lo, hi) = item
            if job.failed and job.stop_early:
                self._finish(job, lo, [Verdict("skipped", detail="stopped early")] * (hi - lo))
                continue
            req = {"code": job.code, "tests": job.tests[lo:hi], "limits": job.limits, "uid": uid,
                   "stop_early": job.stop_early, "tol": job.tol}
            lim = job.limits
            budget = (hi - lo) * (lim["time_s"] * lim["wall_factor"] + lim["wall_extra_s"] + 2.0) + 10.0
            verdicts = None
            for attempt in range(2):
                try:
                    if sb is None or not sb.alive():
                        if sb is not None:
                            sb.close()
                            self.restarts += 1
                        sb = self._start()
                    raw = sb.request(req, budget)
                    self._cpu_live[idx] = sb.cpu
                    verdicts = [Verdict(**{k: r.get(k, d) for k, d in (("status", "runtime_error"), ("time", 0.0),
                                ("memory_kb", 0), ("wall", 0.0), ("exit_code", 0), ("detail", ""))}) for r in raw]
                    break
                except (SandboxDied, OSError, ValueError) as e:
                    if sb is not None:
                        sb.close()
                    self._cpu_done += self._cpu_live[idx]
                    self._cpu_live[idx] = 0.0
                    sb = None
                    self.restarts += 1
                    err = str(e)
            if verdicts is None:  # the sandbox died twice on this chunk: charge it to the program
                verdicts = [Verdict("runtime_error", detail=f"judge sandbox failed: {err}"[:300])] * (hi - lo)
            self._finish(job, lo, verdicts)
        if sb is not None:
            sb.close()

    def _finish(self, job: _Job, lo: int, verdicts: list[Verdict]) -> None:
        with job.lock:
            job.results[lo:lo + len(verdicts)] = verdicts
            if any(v.status != "passed" for v in verdicts):
                job.failed = True
            job.pending -= 1
            done = job.pending == 0
        if done:
            with self._lock:
                self.cache[job.key] = job.results
                while len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            job.future.set_result([dataclasses.replace(v) for v in job.results])


_default: Judge | None = None
_default_lock = threading.Lock()


def default_judge() -> Judge:
    """The process-wide judge (one sandbox per core), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Judge()
        return _default


def judge(code: str, tests, limits: Limits | None = None, stop_early: bool = False, tol: float | None = None,
          judge: Judge | None = None) -> list[Verdict]:
    """Run ``code`` against ``tests`` in the sandbox; one Verdict per test."""
    return (judge or default_judge()).run(code, tests, limits, stop_early, tol)


async def judge_async(code: str, tests, limits: Limits | None = None, stop_early: bool = False,
                      tol: float | None = None, judge: Judge | None = None) -> list[Verdict]:
    return await (judge or default_judge()).arun(code, tests, limits, stop_early, tol)


async def judge_many(items, limits: Limits | None = None, judge: Judge | None = None) -> list[list[Verdict]]:
    """Batched async form: ``[(code, tests), ...] -> [[Verdict, ...], ...]``."""
    return await (judge or default_judge()).arun_many(items, limits)


# -- CLI: openmimo judge ------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--code", required=True, help="the Python program to judge")
    parser.add_argument("--tests", required=True, help="JSON file: a list of tests ({input, output} or {fn, args, expected})")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("--time", type=float, default=Limits.time_s, help="CPU-time limit per test (s)")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, help="memory limit per test (MiB)")
    parser.add_argument("--tol", type=float, default=None, help="numeric tolerance for outputs")
    parser.add_argument("--stop-early", action="store_true", help="stop after the first failing test")
    parser.add_argument("--workers", type=int, default=None, help="sandboxes in parallel (default: one per core)")
    parser.add_argument("--backend", default="auto", choices=("auto", "bwrap", "unshare", "none"))
    parser.add_argument("--allow-unsafe", action="store_true", help="run without isolation if no sandbox works")


def run(args) -> int:
    from openmimo.cli import UsageError

    code_path, tests_path = Path(args.code), Path(args.tests)
    if not code_path.is_file():
        raise UsageError(f"--code: file not found: {code_path}")
    if not tests_path.is_file():
        raise UsageError(f"--tests: file not found: {tests_path}")
    try:
        tests = json.loads(tests_path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{tests_path}: not valid JSON: {e}") from None
    if isinstance(tests, dict) and "tests" in tests:
        tests = tests["tests"]
    if not isinstance(tests, list):
        raise UsageError(f"{tests_path}: expected a JSON list of tests")
    try:
        _normalise_tests(tests)
        lim = Limits(time_s=args.time, memory_mb=args.memory)
        lim.check()
    except ValueError as e:
        raise UsageError(f"{tests_path}: {e}") from None
    try:
        j = Judge(workers=args.workers, limits=lim, backend=args.backend, allow_unsafe=args.allow_unsafe)
    except IsolationUnavailable as e:
        raise UsageError(str(e)) from None
    with j:
        verdicts = j.run(code_path.read_text(), tests, stop_early=args.stop_early, tol=args.tol)
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in verdicts], indent=1))
    else:
        for i, v in enumerate(verdicts):
            print(f"test {i:4d}  {v.status:14s} {v.time:7.3f}s {v.memory_kb / 1024:7.1f} MiB  {v.detail}")
        n = sum(v.passed for v in verdicts)
        print(f"{n}/{len(verdicts)} passed ({j.backend} sandbox)")
    return 0 if all(v.passed for v in verdicts) else 1
