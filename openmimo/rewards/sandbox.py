"""The isolated code judge: ``judge(code, tests, limits) -> list[Verdict]``, a batched async form, and
``openmimo judge --code FILE --tests FILE.json [--json]``.

Tests are dicts: stdin/stdout ``{"input": "1 2\\n", "output": "3\\n"}`` or call-based
``{"fn": "add", "args": [1, 2], "expected": 3}`` (a module-level function, or a method of a
``Solution`` class, as on LeetCode), or assert-style ``{"check": "assert add(1, 2) == 3"}`` (MBPP,
HumanEval: the check code runs after the program in its namespace, so -- unlike the two other
kinds -- a hostile program can see and subvert it, e.g. with an object whose ``__eq__`` is always
true, or with the residual attacks described in :mod:`openmimo.rewards._zygote`; prefer stdin or
call tests for RL rewards).  Every test gets one :class:`Verdict`: ``passed``, ``wrong_answer``,
``runtime_error``, ``time_limit``, ``memory_limit``, ``output_limit`` (or ``skipped`` after the
first failure when ``stop_early`` is set), with CPU time and peak memory.

What enters the sandbox: the program and, per test, only what running it needs (stdin; function
name and arguments; the test's own check code).  Expected outputs stay in this process: the
sandbox returns what the test produced and the comparison (:mod:`openmimo.rewards.compare`) runs
here.  A call or assert-style test passes only on the result frame the harness writes after the
function returned or the check code ran to its end; exiting with status 0 is not enough.  Each
assert-style test, and every test of a ``stop_early`` job, is a request of its own, so a check's
code is never sent with another test (the zygote's freed memory may still hold the check code of
an earlier request, which tells a test nothing its own check does not: assert-style tests are
subvertible anyway, see above).  A test may not create processes (a
seccomp filter in the sandbox; threads are allowed), so the memory and CPU limits bound
everything it runs.

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
import math
import os
import queue
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from openmimo.config import UsageError
from openmimo.rewards.compare import stdout_matches, value_matches
from openmimo.rewards.isolation import IsolationUnavailable, SandboxDied, SandboxProcess, resolve_backend

STATUSES = ("passed", "wrong_answer", "runtime_error", "time_limit", "memory_limit", "output_limit", "skipped")
CHECK_DONE = '{"checked": true}'  # the result frame the harness writes once an assert-style check has run to its end


@dataclass
class Limits:
    time_s: float = 2.0  # CPU-time limit per test (seconds)
    memory_mb: int = 512  # address-space limit per test, interpreter included (MiB)
    output_bytes: int = 16 << 20  # stdout limit; also the file-size limit for anything the test writes
    nproc: int = 32  # threads the test may have at once (RLIMIT_NPROC; creating processes is forbidden outright)
    nofile: int = 64  # open files
    wall_factor: float = 3.0  # wall-clock backstop = time_s * wall_factor + wall_extra_s
    wall_extra_s: float = 1.0

    def check(self) -> None:
        for k in ("time_s", "memory_mb", "output_bytes", "nproc", "nofile", "wall_factor", "wall_extra_s"):
            v = getattr(self, k)
            integral = k in ("memory_mb", "output_bytes", "nproc", "nofile")
            if isinstance(v, bool) or not isinstance(v, int if integral else (int, float)):
                raise ValueError(f"key 'limits.{k}' must be {'an integer' if integral else 'a number'}, got {v!r}")
            if not math.isfinite(v) or v < 0 or (v == 0 and k != "wall_extra_s"):
                raise ValueError(f"key 'limits.{k}' must be {'finite and >= 0' if k == 'wall_extra_s' else 'positive and finite'}, got {v!r}")
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
            try:  # as the program's value will arrive: through JSON (tuples become lists)
                json.dumps(args)
                expected = json.loads(json.dumps(t.get("expected")))
            except (TypeError, ValueError) as e:
                raise ValueError(f"test {i}: 'args' and 'expected' must be JSON-serialisable: {e}") from None
            out.append({"fn": str(t["fn"]), "args": args, "expected": expected})
        elif t.get("check"):
            out.append({"input": str(t.get("input", "")), "check": str(t["check"])})
        elif "input" in t or "output" in t:
            out.append({"input": str(t.get("input", "")), "output": str(t.get("output", ""))})
        else:
            raise ValueError(f"test {i} needs 'input'/'output' (stdin), 'fn'/'args'/'expected' (call) or 'check' (assert code)")
    return out


def _wire(test: dict) -> dict:
    """What a test sends into the sandbox: what running it needs, never its expected output."""
    if test.get("fn") is not None:
        return {"fn": test["fn"], "args": test["args"]}
    if test.get("check"):
        return {"input": test["input"], "check": test["check"]}
    return {"input": test["input"]}


def _number(x, kind, default):
    return x if isinstance(x, kind) and not isinstance(x, bool) else default


def _parse_result(text) -> dict | None:
    """The result frame of a call test, or None when there is none or it is not one JSON object."""
    if not isinstance(text, str) or not text:
        return None
    try:
        res = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return res if isinstance(res, dict) else None


def _verdict(raw, test: dict, tol: float | None) -> Verdict:
    """Turn the sandbox's raw outcome of one test into a Verdict; the expected value is compared here."""
    if not isinstance(raw, dict):
        return Verdict("runtime_error", detail="judge sandbox sent a malformed result")
    v = Verdict("runtime_error", time=_number(raw.get("time"), (int, float), 0.0),
                memory_kb=_number(raw.get("memory_kb"), int, 0), wall=_number(raw.get("wall"), (int, float), 0.0),
                exit_code=_number(raw.get("exit_code"), int, 0), detail=str(raw.get("detail", ""))[:300])
    status = raw.get("status")
    if status in ("runtime_error", "time_limit", "memory_limit", "output_limit"):
        v.status = status
    elif status != "exited":
        v.detail = f"judge sandbox sent an unknown status {status!r}"[:300]
    elif test.get("fn") is not None:
        res = _parse_result(raw.get("result"))
        if res is None or not ("value" in res or "repr" in res):
            v.detail = "no return value (the program exited before the function returned)"
        else:
            try:
                ok = "value" in res and value_matches(res["value"], test["expected"], tol)
            except RecursionError:
                ok = False
            v.status = "passed" if ok else "wrong_answer"
            if not ok:
                v.detail = ("got " + json.dumps(res.get("value", res.get("repr"))))[:200]
    elif test.get("check"):
        if raw.get("result") == CHECK_DONE:
            v.status = "passed"
        else:
            v.detail = "the program exited before its check code finished"
    else:
        got = raw.get("stdout")
        got = got if isinstance(got, str) else ""
        if stdout_matches(got, test["output"], tol):
            v.status = "passed"
        else:
            v.status, v.detail = "wrong_answer", "got " + repr(got[:100])
    return v


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_tol(tol) -> None:
    """``tol`` is None or a finite number >= 0."""
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol)
                            or tol < 0):
        raise ValueError(f"tol must be a finite number >= 0 or None, got {tol!r}")


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
        self.workers = (os.cpu_count() or 1) if workers is None else _positive_int("workers", workers)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.tmp_mb = _positive_int("tmp_mb", tmp_mb)
        self.cache_size = _positive_int("cache_size", cache_size, minimum=0)
        self.python = python or sys.executable
        self.backend = resolve_backend(backend, self.python, allow_unsafe)
        self.cache: OrderedDict[str, list[Verdict]] = OrderedDict()
        self.restarts = 0
        self._cpu_done = 0.0  # CPU seconds of sandboxes already closed
        self._cpu_live = [0.0] * self.workers
        self._sandboxes: list[SandboxProcess | None] = [None] * self.workers
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
        if limits is not None:
            limits.check()
        check_tol(tol)
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
        while True:
            item = self._q.get()
            if item is None:
                break
            job, (lo, hi) = item
            if job.failed and job.stop_early:
                self._finish(job, lo, [Verdict("skipped", detail="stopped early")] * (hi - lo))
                continue
            # an assert-style test (its check code holds its expected values) and every test of a stop_early job
            # is a request of its own; runs of the other tests share one request
            groups, start = [], lo
            for i in range(lo, hi):
                if job.stop_early or job.tests[i].get("check"):
                    if start < i:
                        groups.append((start, i))
                    groups.append((i, i + 1))
                    start = i + 1
            if start < hi:
                groups.append((start, hi))
            verdicts: list[Verdict] = []
            for glo, ghi in groups:
                if job.stop_early and any(not v.passed for v in verdicts):
                    verdicts += [Verdict("skipped", detail="stopped early")] * (ghi - glo)
                else:
                    verdicts += self._request(idx, job, glo, ghi)
            self._finish(job, lo, verdicts)
        sb = self._sandboxes[idx]
        if sb is not None:
            sb.close()

    def _request(self, idx: int, job: _Job, lo: int, hi: int) -> list[Verdict]:
        """Run tests lo..hi of ``job`` in worker ``idx``'s sandbox (restarted once if it dies) and judge them."""
        tests = job.tests[lo:hi]
        uid = 60000 + idx  # a distinct unprivileged uid per worker, so rlimits on processes do not interfere
        req = {"code": job.code, "tests": [_wire(t) for t in tests], "limits": job.limits, "uid": uid}
        lim = job.limits
        budget = (hi - lo) * (lim["time_s"] * lim["wall_factor"] + lim["wall_extra_s"] + 2.0) + 10.0
        err = ""
        for _ in range(2):
            sb = self._sandboxes[idx]
            try:
                if sb is None or not sb.alive():
                    if sb is not None:
                        sb.close()
                        self.restarts += 1
                    sb = self._sandboxes[idx] = self._start()
                raw = sb.request(req, budget)
                self._cpu_live[idx] = sb.cpu
                return [_verdict(r, t, job.tol) for r, t in zip(raw, tests)]
            except (SandboxDied, OSError, ValueError) as e:
                if sb is not None:
                    sb.close()
                self._cpu_done += self._cpu_live[idx]
                self._cpu_live[idx] = 0.0
                self._sandboxes[idx] = None
                self.restarts += 1
                err = str(e)
        # the sandbox died twice on these tests: charge it to the program
        return [Verdict("runtime_error", detail=f"judge sandbox failed: {err}"[:300]) for _ in tests]

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
    parser.add_argument("--tests", required=True,
                        help="JSON file: a list of tests ({input, output}, {fn, args, expected} or {check})")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("--time", type=float, default=Limits.time_s, help="CPU-time limit per test (s)")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, help="memory limit per test (MiB)")
    parser.add_argument("--tol", type=float, default=None, help="numeric tolerance for outputs")
    parser.add_argument("--stop-early", action="store_true", help="stop after the first failing test")
    parser.add_argument("--workers", type=int, default=None, help="sandboxes in parallel (default: one per core)")
    parser.add_argument("--backend", default="auto", choices=("auto", "bwrap", "unshare", "none"))
    parser.add_argument("--allow-unsafe", action="store_true", help="run without isolation if no sandbox works")


def run(args) -> int:
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
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if not (math.isfinite(args.time) and args.time > 0):
        raise UsageError(f"--time must be a positive number of seconds, got {args.time}")
    if args.memory < 64:
        raise UsageError(f"--memory must be at least 64 (MiB), got {args.memory}")
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol >= 0):
        raise UsageError(f"--tol must be a finite number >= 0, got {args.tol}")
    try:
        _normalise_tests(tests)
    except ValueError as e:
        raise UsageError(f"{tests_path}: {e}") from None
    try:
        j = Judge(workers=args.workers, limits=Limits(time_s=args.time, memory_mb=args.memory), backend=args.backend,
                  allow_unsafe=args.allow_unsafe)
    except (IsolationUnavailable, ValueError) as e:
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
