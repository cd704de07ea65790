"""The code judge: verdicts, comparisons, call-based tests, cache, async batch, CLI, isolation refusal."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from openmimo.rewards import isolation
from openmimo.rewards.compare import stdout_matches, value_matches
from openmimo.rewards.isolation import IsolationUnavailable, resolve_backend
from openmimo.rewards.sandbox import Judge, Limits, _verdict

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
CLI = [sys.executable, "-c", "import sys; from openmimo.cli import main; sys.exit(main(sys.argv[1:]))"]
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"


@pytest.fixture(scope="module")
def judge():
    try:
        j = Judge(workers=2, limits=Limits(time_s=1.0, memory_mb=256, wall_factor=2.0, wall_extra_s=0.5))
    except IsolationUnavailable as e:
        pytest.skip(f"no sandbox on this machine: {e}")
    yield j
    j.close()


@pytest.mark.parametrize("got, expected, tol, ok", [
    ("3\n", "3", None, True),
    ("3   \n\n\n", "3\n", None, True),  # trailing whitespace and blank lines
    ("1 2\r\n3\n", "1 2\n3\n", None, True),
    ("3\n", "4\n", None, False),
    ("3\n4\n", "3\n", None, False),
    (" 3\n", "3\n", None, False),  # leading whitespace counts
    ("0.3333333\n", "0.3333334\n", 1e-6, True),
    ("0.33\n", "0.34\n", 1e-6, False),
    ("abc 1.0\n", "abc 1\n", 1e-9, True),
    ("abc 1.0\n", "abc 1\n", None, False),
])
def test_stdout_comparison_table(got, expected, tol, ok):
    assert stdout_matches(got, expected, tol) is ok


@pytest.mark.parametrize("got, expected, tol, ok", [
    ([1, 2], [1, 2], None, True),
    ([1, [2, 3]], [1, [2, 3]], None, True),
    (1.0, 1, None, True),
    (0.1 + 0.2, 0.3, None, False),
    (0.1 + 0.2, 0.3, 1e-9, True),
    (True, 1, None, False),  # a bool is not an int answer
    ({"a": 1}, {"a": 1}, None, True),
    ("x", "y", None, False),
])
def test_value_comparison_table(got, expected, tol, ok):
    assert value_matches(got, expected, tol) is ok


def test_stdin_verdicts(judge):
    tests = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "5\n"}, {"input": "x\n", "output": "1\n"}]
    v = judge.run(ADD, tests)
    assert [x.status for x in v] == ["passed", "wrong_answer", "runtime_error"]
    assert "ValueError" in v[2].detail
    assert all(x.time >= 0 and x.memory_kb > 0 for x in v)


def test_call_based_function_and_solution_method(judge):
    fn = "def add(a, b):\n    return a + b\n"
    sol = "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n" \
          "            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i\n"
    v = judge.run(fn, [{"fn": "add", "args": [1, 2], "expected": 3}, {"fn": "add", "args": [1, 2], "expected": 4},
                       {"fn": "missing", "args": [], "expected": 0}])
    assert [x.status for x in v] == ["passed", "wrong_answer", "runtime_error"]
    v = judge.run(sol, [{"fn": "twoSum", "args": [[2, 7, 11, 15], 9], "expected": [0, 1]}])
    assert v[0].status == "passed"


def test_assert_tests_and_syntax_error(judge):
    code = "def sq(x):\n    return x * x\n"
    v = judge.run(code, [{"check": "assert sq(3) == 9"}, {"check": "assert sq(3) == 10"}])
    assert [x.status for x in v] == ["passed", "runtime_error"]
    v = judge.run("def f(:\n", [{"input": "", "output": ""}] * 2)
    assert [x.status for x in v] == ["runtime_error"] * 2 and "SyntaxError" in v[0].detail


def test_limits_verdicts(judge):
    # precise CPU limit (ITIMER_PROF); the rusage reading can land a scheduler tick under the limit. The wall-clock backstop is set far out so that on a loaded machine (CI runs
    # the whole suite on 2 cores) the busy loop still reaches its CPU limit before the backstop fires.
    cpu_only = Limits(time_s=1.0, memory_mb=256, wall_factor=30.0, wall_extra_s=5.0)
    v = judge.run("while True: pass", [{"input": "", "output": ""}], limits=cpu_only)
    assert v[0].status == "time_limit" and v[0].detail == "cpu time" and 0.9 <= v[0].time < 1.5, v[0]
    # a program that burns no CPU is caught by the backstop instead, and says so
    v = judge.run("import time\ntime.sleep(100)", [{"input": "", "output": ""}])
    assert v[0].status == "time_limit" and v[0].detail == "wall-clock backstop" and v[0].time < 1.0, v[0]
    v = judge.run("x = ' ' * (400 << 20)", [{"input": "", "output": ""}])
    assert v[0].status == "memory_limit"
    small = Limits(time_s=1.0, memory_mb=256, output_bytes=1000)
    v = judge.run("print('x' * 5000)", [{"input": "", "output": ""}], limits=small)
    assert v[0].status == "output_limit"


def test_stop_early_and_numeric_tolerance(judge):
    tests = [{"input": "1 1\n", "output": "2\n"}, {"input": "1 1\n", "output": "3\n"}, {"input": "1 1\n", "output": "2\n"}]
    assert [x.status for x in judge.run(ADD, tests, stop_early=True)] == ["passed", "wrong_answer", "skipped"]
    assert [x.status for x in judge.run(ADD, tests)] == ["passed", "wrong_answer", "passed"]
    v = judge.run("print(1 / 3)", [{"input": "", "output": "0.333333\n"}], tol=1e-5)
    assert v[0].status == "passed"


def test_tests_are_isolated_from_each_other(judge):
    # state written by one test (a file in its directory, a module global) is not seen by the next
    code = "import os\nprint(os.path.exists('state'))\nopen('state', 'w').write('1')\n"
    v = judge.run(code, [{"input": "", "output": "False\n"}] * 6)
    assert all(x.status == "passed" for x in v)


def test_cache_hits_return_equal_verdicts(judge):
    tests = [{"input": f"{i} 1\n", "output": f"{i + 1}\n"} for i in range(5)]
    a = judge.run(ADD + "# cache\n", tests)
    n = len(judge.cache)
    b = judge.run(ADD + "# cache\n", tests)
    assert a == b and len(judge.cache) == n


def test_many_tests_parallel_and_async_batch(judge):
    tests = [{"input": f"{i} {i}\n", "output": f"{2 * i}\n"} for i in range(120)]
    assert all(x.passed for x in judge.run(ADD, tests))

    async def go():
        return await judge.arun_many([(ADD, tests[:3]), ("print(0)", tests[:2]), (ADD + "\n", tests[3:5])])

    res = asyncio.run(go())
    assert [[x.status for x in r] for r in res] == [["passed"] * 3, ["passed", "wrong_answer"], ["passed"] * 2]


def test_livecodebench_placeholders_score_zero(judge):
    path = BENCH / "code" / "lcb_v1_samples_decoded.jsonl"
    if not path.exists():
        pytest.skip(f"benchmarks not found at {path}")
    from openmimo.rewards.adapters import tests_from_record
    from openmimo.rewards.code import code_reward

    for line in path.read_text().splitlines():
        rec = json.loads(line)
        prompt = rec["prompt"]
        placeholder = prompt[prompt.rfind("```python") + len("```python"):prompt.rfind("```")]
        tests = tests_from_record(rec)
        v = judge.run(placeholder, tests)
        assert not any(x.passed for x in v), rec["task_id"]
        assert code_reward(v, scheme="soft") == 0.0


def test_refuses_without_isolation(monkeypatch):
    monkeypatch.setattr(isolation, "probe", lambda backend, python: f"{backend} is not installed")
    with pytest.raises(IsolationUnavailable, match="allow_unsafe"):
        resolve_backend("auto", sys.executable, allow_unsafe=False)
    with pytest.raises(IsolationUnavailable):
        resolve_backend("none", sys.executable, allow_unsafe=False)
    assert resolve_backend("auto", sys.executable, allow_unsafe=True) == "none"


def test_unsafe_mode_runs_when_asked():
    with Judge(workers=1, backend="none", allow_unsafe=True) as j:
        assert j.run(ADD, [{"input": "1 2", "output": "3"}])[0].status == "passed"


def test_cli_judge(tmp_path, judge):
    code = tmp_path / "add.py"
    code.write_text(ADD)
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "1 2\n", "output": "4\n"}]))
    r = subprocess.run(CLI + ["judge", "--code", str(code), "--tests", str(tests),
                        "--json", "--workers", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert [v["status"] for v in json.loads(r.stdout)] == ["passed", "wrong_answer"]
    r = subprocess.run(CLI + ["judge", "--code", str(tmp_path / "nope.py"),
                        "--tests", str(tests)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "file not found" in r.stderr


UNPRIVILEGED = """
from openmimo.rewards.sandbox import Judge
for backend in ("bwrap", "unshare"):
    with Judge(workers=1, backend=backend) as j:
        a = j.run("print(int(input()) * 2)", [{"input": "2", "output": "4"}])[0].status
        b = j.run("print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])",
                  [{"input": "", "output": "0000000000000000"}])[0].status  # no capability left
        c = j.run("while True: pass", [{"input": "", "output": ""}])[0].status
        print(backend, a, b, c)
"""


def test_unprivileged_user_namespace_mode(tmp_path):
    """As a normal user the sandboxes run in a user namespace; tests keep the namespace's uid, with no capability."""
    import os
    import shutil

    root = Path(__file__).resolve().parents[1]
    if os.geteuid() != 0 or not shutil.which("setpriv") or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root (to become nobody), setpriv and a system /usr/bin/python3")
    cmd = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "env", f"HOME={tmp_path}",
           f"PYTHONPATH={root}", "/usr/bin/python3", "-c", UNPRIVILEGED]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if "Permission denied" in r.stderr and "openmimo" in r.stderr:
        pytest.skip("the checkout is not readable by nobody")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["bwrap", "passed", "passed", "time_limit", "unshare", "passed", "passed", "time_limit"]


@pytest.mark.parametrize("kwargs, name", [
    ({"workers": -1}, "workers"), ({"workers": 0}, "workers"), ({"workers": True}, "workers"), ({"workers": 1.5}, "workers"),
    ({"chunk_size": 0}, "chunk_size"), ({"tmp_mb": -5}, "tmp_mb"), ({"cache_size": -1}, "cache_size"),
    ({"limits": Limits(time_s=float("nan"))}, "time_s"), ({"limits": Limits(time_s=float("inf"))}, "time_s"),
    ({"limits": Limits(wall_extra_s=-1.0)}, "wall_extra_s"), ({"limits": Limits(nproc=0)}, "nproc"),
    ({"limits": Limits(memory_mb=512.5)}, "memory_mb"),
])
def test_bad_numbers_are_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Judge(backend="none", allow_unsafe=True, **kwargs)


def test_bad_tol_and_per_call_limits_are_value_errors(judge):
    with pytest.raises(ValueError, match="tol"):
        judge.submit(ADD, [{"input": "1 2", "output": "3"}], tol=-1.0)
    with pytest.raises(ValueError, match="time_s"):
        judge.submit(ADD, [{"input": "1 2", "output": "3"}], limits=Limits(time_s=-1.0))


@pytest.mark.parametrize("flags, name", [(["--workers", "-1"], "--workers"), (["--workers", "0"], "--workers"),
                                         (["--time", "-1"], "--time"), (["--time", "nan"], "--time"),
                                         (["--memory", "0"], "--memory"), (["--tol", "-1"], "--tol")])
def test_cli_bad_numbers_are_usage_errors(tmp_path, flags, name):
    code = tmp_path / "add.py"
    code.write_text(ADD)
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps([{"input": "1 2\n", "output": "3\n"}]))
    r = subprocess.run(CLI + ["judge", "--code", str(code), "--tests", str(tests)] + flags,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr, r.stderr


RAW = {"time": 0.01, "wall": 0.02, "memory_kb": 9000, "exit_code": 0, "detail": ""}


@pytest.mark.parametrize("raw, test, status", [
    (dict(RAW, status="exited", stdout="3\n"), {"input": "1 2", "output": "3"}, "passed"),
    (dict(RAW, status="exited", stdout="4\n"), {"input": "1 2", "output": "3"}, "wrong_answer"),
    (dict(RAW, status="exited", result='{"value": 3}'), {"fn": "f", "args": [], "expected": 3}, "passed"),
    (dict(RAW, status="exited", result='{"value": 4}'), {"fn": "f", "args": [], "expected": 3}, "wrong_answer"),
    (dict(RAW, status="exited", result='{"repr": "<object>"}'), {"fn": "f", "args": [], "expected": 3}, "wrong_answer"),
    (dict(RAW, status="exited", result=""), {"fn": "f", "args": [], "expected": 3}, "runtime_error"),  # exit 0, no value
    (dict(RAW, status="exited", result="[" * 100000), {"fn": "f", "args": [], "expected": 3}, "runtime_error"),
    (dict(RAW, status="exited", result='{"value": 3}{"value": 3}'), {"fn": "f", "args": [], "expected": 3}, "runtime_error"),
    (dict(RAW, status="exited", result='{"checked": true}'), {"input": "", "check": "assert 1"}, "passed"),
    (dict(RAW, status="exited", result=""), {"input": "", "check": "assert 1"}, "runtime_error"),  # exit 0 before the check ended
    (dict(RAW, status="exited", result='{"checked": true}{"checked": true}'), {"input": "", "check": "assert 1"}, "runtime_error"),
    (dict(RAW, status="time_limit", detail="cpu time"), {"input": "", "output": ""}, "time_limit"),
    (dict(RAW, status="passed"), {"input": "", "output": ""}, "runtime_error"),  # the sandbox never says "passed"
    ("garbage", {"input": "", "output": ""}, "runtime_error"),
])
def test_verdict_from_raw_outcome(raw, test, status):
    v = _verdict(raw, test, None)
    assert v.status == status, v


def test_requests_carry_no_expected_values(judge, monkeypatch):
    """The sandbox receives inputs, function names and arguments, and each check code alone -- never an expected value."""
    seen = []
    real = isolation.SandboxProcess.request

    def spy(self, req, timeout):
        seen.append(json.loads(json.dumps(req)))
        return real(self, req, timeout)

    monkeypatch.setattr(isolation.SandboxProcess, "request", spy)
    code = "def sq(x):\n    return x * x\nif __name__ == '__main__':\n    print(sq(int(input())))\n"
    tests = [{"input": f"{i}\n", "output": f"{i * i}-SECRET-OUT\n"} for i in range(5)] + \
            [{"fn": "sq", "args": [i], "expected": f"{i}-SECRET-VAL"} for i in range(5)] + \
            [{"input": "0\n", "check": f"assert sq({i}) == {i * i}  # CHECK-{i}"} for i in range(5)]
    v = judge.run(code + "# spy\n", tests)
    assert [x.status for x in v] == ["wrong_answer"] * 10 + ["passed"] * 5
    assert seen and not any("SECRET" in json.dumps(r) for r in seen)
    for r in seen:
        checks = [t for t in r["tests"] if "check" in t]
        assert not checks or len(r["tests"]) == 1  # a check travels alone
        assert all(set(t) <= {"input", "fn", "args", "check"} for t in r["tests"])
    assert sorted(t["check"][-7:] for r in seen for t in r["tests"] if "check" in t) == [f"CHECK-{i}" for i in range(5)]
