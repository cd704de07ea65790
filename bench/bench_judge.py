"""Isolated tests per second of the code judge vs a plain one-subprocess-per-test runner.

Workloads: (a) a small stdin/stdout program x N tests, (b) a call-based function x N tests.
The judge runs every test isolated (sandbox + fork per test, rlimits, uid drop, tree kill);
the baseline starts one fresh, *unisolated* ``python`` subprocess per test, ``--baseline-workers``
at a time (default: one per core) -- the naive runner the judge replaces.  Both run in the same
invocation, so machine load affects both alike.  The judge's CPU cost per test (this process +
the sandboxes' zygotes and tests, as reported by the zygotes) is reported too, with the rate it allows on idle cores -- a
load-independent estimate, labelled as such.  Cache is disabled for the judge (each program is
made unique) so that every test really runs.

    python bench/bench_judge.py [--tests 1000] [--workers 2] [--backend auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

STDIN_PROG = "a, b = map(int, input().split())\nprint(a + b)\n"
CALL_PROG = "def add(a, b):\n    return a + b\n"
CALL_DRIVER = "import json, sys\n{prog}\nargs = json.loads(sys.stdin.read())\nprint(json.dumps(add(*args)))\n"


def _cpu():
    import resource

    a = resource.getrusage(resource.RUSAGE_SELF)
    return a.ru_utime + a.ru_stime


def stdin_tests(n):
    return [{"input": f"{i} {i + 1}\n", "output": f"{2 * i + 1}\n"} for i in range(n)]


def call_tests(n):
    return [{"fn": "add", "args": [i, i + 1], "expected": 2 * i + 1} for i in range(n)]


def bench_judge(judge, code, tests, reps):
    best = None
    for r in range(reps):
        t0 = time.perf_counter()
        v = judge.run(code + f"\n# run {r} {time.time()}\n", tests)
        dt = time.perf_counter() - t0
        assert all(x.passed for x in v), [x for x in v if not x.passed][:3]
        best = dt if best is None else min(best, dt)
    return len(tests) / best


def bench_baseline(kind, tests, workers):
    """One fresh interpreter per test (no sandbox); the rate the judge is compared with."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "prog.py")
        with open(path, "w") as f:
            f.write(STDIN_PROG if kind == "stdin" else CALL_DRIVER.format(prog=CALL_PROG))

        def one(t):
            if kind == "stdin":
                r = subprocess.run([sys.executable, "-I", path], input=t["input"], capture_output=True, text=True, timeout=10)
                return r.stdout.strip() == t["output"].strip()
            r = subprocess.run([sys.executable, "-I", path], input=json.dumps(t["args"]), capture_output=True,
                               text=True, timeout=10)
            return json.loads(r.stdout) == t["expected"]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as ex:
            ok = list(ex.map(one, tests))
        dt = time.perf_counter() - t0
        assert all(ok)
        return len(tests) / dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=1000)
    ap.add_argument("--baseline-tests", type=int, default=200, help="tests for the (slow) baseline")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--baseline-workers", type=int, default=os.cpu_count())
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--reps", type=int, default=3, help="judge repetitions; the best is reported")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    from openmimo.rewards.sandbox import Judge

    res = {"cores": os.cpu_count(), "workers": args.workers, "tests": args.tests, "loadavg_before": os.getloadavg()}
    for kind, prog, make in (("stdin", STDIN_PROG, stdin_tests), ("call", CALL_PROG, call_tests)):
        with Judge(workers=args.workers, backend=args.backend, cache_size=0) as j:
            res["backend"] = j.backend
            j.run(prog, make(4 * args.workers))  # start the sandboxes
            # CPU seconds of this process + everything inside the sandboxes
            c0 = _cpu() + j.sandbox_cpu_seconds
            res[f"judge_{kind}_tests_per_s"] = bench_judge(j, prog, make(args.tests), args.reps)
            cpu = _cpu() + j.sandbox_cpu_seconds - c0
        res[f"judge_{kind}_cpu_ms_per_test"] = cpu / (args.tests * args.reps) * 1e3
        # load-independent estimate: what the measured CPU cost allows on idle cores
        res[f"judge_{kind}_capacity_idle_tests_per_s"] = args.workers * 1e3 / res[f"judge_{kind}_cpu_ms_per_test"]
    res["baseline_stdin_tests_per_s"] = bench_baseline("stdin", stdin_tests(args.baseline_tests), args.baseline_workers)
    res["baseline_call_tests_per_s"] = bench_baseline("call", call_tests(args.baseline_tests), args.baseline_workers)
    res["loadavg_after"] = os.getloadavg()
    for k in ("stdin", "call"):
        res[f"speedup_{k}"] = res[f"judge_{k}_tests_per_s"] / res[f"baseline_{k}_tests_per_s"]
    for k, v in res.items():
        print(f"{k:28s} {v:.1f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
