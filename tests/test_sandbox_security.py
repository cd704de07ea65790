"""Hostile programs against the code judge: each gets the right verdict, nothing outside the sandbox
changes, no process survives, and the judge keeps serving.

All programs of the table run concurrently through one judge (2 sandboxes), so the whole file
costs a few seconds.  The only network target is a listener this test opens on 127.0.0.1.
"""

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from openmimo.rewards.isolation import IsolationUnavailable
from openmimo.rewards.sandbox import Judge, Limits

ROOT = Path(__file__).resolve().parents[1]
OK = {"input": "", "output": "blocked\n"}  # a program prints "blocked" when its attack failed


def _guard(body: str) -> str:
    """Wrap an attack: print 'blocked' if it raises, 'escaped' if it completes."""
    lines = "\n".join("    " + ln for ln in body.strip().splitlines())
    return f"try:\n{lines}\n    print('escaped')\nexcept BaseException as e:\n    print('blocked')\n"


def hostile_programs(canary: Path, port: int, marker: str, udp_port: int) -> list[tuple[str, str, set, dict]]:
    """(name, code, accepted verdicts, test)"""
    M = marker
    cases = [
        ("fork_bomb", "import os\nwhile True:\n    os.fork()\n", {"runtime_error", "time_limit"}, OK),
        ("fork_bomb_caught", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
         {"time_limit", "runtime_error"}, OK),
        ("memory_bomb_bytearray", "x = bytearray(10**10)\n", {"memory_limit"}, OK),
        ("memory_bomb_list", "l = []\nwhile True:\n    l.append(' ' * 10**7)\n", {"memory_limit"}, OK),
        ("mmap_bomb", "import mmap\nm = mmap.mmap(-1, 10**11)\n", {"memory_limit", "runtime_error"}, OK),
        ("infinite_loop", "while True:\n    pass\n", {"time_limit"}, OK),
        ("spinning_threads", "import threading\ndef f():\n    while True: pass\nfor _ in range(4):\n"
         "    threading.Thread(target=f).start()\n", {"time_limit"}, OK),
        ("sleep_forever", "import time\ntime.sleep(10**6)\n", {"time_limit"}, OK),
        ("block_on_stdin_pipe", "import os\nr, w = os.pipe()\nos.read(r, 1)\n", {"time_limit"}, OK),
        ("ignore_sigxcpu", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n",
         {"time_limit"}, OK),
        ("write_outside", _guard(f"open('/usr/{M}', 'w').write('x')"), {"passed"}, OK),
        ("write_tmp_root", _guard(f"open('/tmp/{M}', 'w').write('x')"), {"passed"}, OK),
        ("write_host_canary", _guard(f"open({str(canary)!r}, 'w').write('pwned')"), {"passed"}, OK),
        ("delete_host_canary", _guard(f"import os\nos.remove({str(canary)!r})"), {"passed"}, OK),
        ("delete_system", _guard("import shutil\nshutil.rmtree('/usr/lib')"), {"passed"}, OK),
        ("read_project", _guard(f"print(open({str(ROOT / 'pyproject.toml')!r}).read())"), {"passed"}, OK),
        ("list_project", _guard("import os\nassert os.listdir('/work')"), {"passed"}, OK),
        ("read_root_home", _guard("import os\nassert os.listdir('/root')"), {"passed"}, OK),
        ("read_shadow", _guard("open('/etc/shadow').read()"), {"passed"}, OK),
        ("socket_to_listener", _guard(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                                      "s.sendall(b'pwned')"), {"passed"}, OK),
        # sendto succeeds inside the sandbox's own loopback; the check is that nothing reaches the host's
        ("udp_to_listener", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n"
         f"    s.sendto(b'pwned', ('127.0.0.1', {udp_port}))\nexcept OSError:\n    pass\nprint('blocked')\n",
         {"passed"}, OK),
        ("only_loopback", "import socket\nprint('blocked' if [n for _, n in socket.if_nameindex()] == ['lo'] else 'escaped')\n",
         {"passed"}, OK),
        ("daemon_outlives", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
         f"        time.sleep(30)\n        open({str(canary)!r}, 'w').write('late')\n    os._exit(0)\n"
         "print('blocked')\n", {"passed", "runtime_error"}, OK),
        ("gigabyte_output", "import sys\nwhile True:\n    sys.stdout.write('x' * 10**6)\n", {"output_limit"}, OK),
        ("gigabyte_file", "f = open('big', 'w')\nwhile True:\n    f.write('x' * 10**6)\n", {"output_limit", "runtime_error"}, OK),
        ("kill_parent", _guard("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"), {"passed"}, OK),
        ("kill_init", _guard("import os, signal\nos.kill(1, signal.SIGKILL)"), {"passed"}, OK),
        ("kill_everything", "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
         "print('blocked')\n", {"passed"}, OK),
        ("raise_cpu_rlimit", _guard("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))"),
         {"passed"}, OK),
        ("raise_as_rlimit", _guard("import resource\nr = resource.RLIMIT_AS\n"
                                   "resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))"), {"passed"}, OK),
        ("ptrace_parent", _guard("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                 "assert libc.ptrace(16, os.getppid(), 0, 0) == 0"), {"passed"}, OK),
        ("ctypes_mount", _guard("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                "assert libc.mount(b'tmpfs', b'/usr', b'tmpfs', 0, None) == 0"), {"passed"}, OK),
        ("ctypes_setuid0", _guard("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.setuid(0) == 0"),
         {"passed"}, OK),
        ("ctypes_reboot", _guard("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                 "assert libc.syscall(169, 0xfee1dead, 672274793, 0x4321fedc, 0) == 0"), {"passed"}, OK),
        ("chroot_escape", _guard("import os\nos.chroot('/tmp')"), {"passed"}, OK),
        ("proc_parent_mem", _guard("import os\nopen(f'/proc/{os.getppid()}/mem', 'rb').read(1)"), {"passed"}, OK),
        ("os_system", f"import os\nrc = os.system('touch /tmp/{M}; ls /work /root >/dev/null 2>&1')\n"
         "print('blocked' if rc != 0 else 'escaped')\n", {"passed"}, OK),
        ("subprocess_cat", "import subprocess\n"
         f"r = subprocess.run(['cat', {str(ROOT / 'pyproject.toml')!r}], capture_output=True)\n"
         "print('blocked' if r.returncode != 0 else 'escaped')\n", {"passed", "runtime_error"}, OK),
        ("segfault", "import ctypes\nctypes.string_at(0)\n", {"runtime_error"}, OK),
        ("deep_recursion", "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1)\nf(0)\n",
         {"runtime_error", "memory_limit", "time_limit"}, OK),
        ("thread_bomb", "import threading, time\nfor _ in range(10000):\n"
         "    threading.Thread(target=time.sleep, args=(100,)).start()\n", {"runtime_error", "memory_limit"}, OK),
        ("many_files", "fs = [open(f'f{i}', 'w') for i in range(100000)]\n", {"runtime_error"}, OK),
        ("env_secrets", "import os\nprint('blocked' if not os.environ else 'escaped')\n", {"passed"}, OK),
    ]
    return cases


def _judge_procs() -> list[int]:
    """Host pids of processes owned by the judge's per-worker uids (60000+)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                uid = os.stat(f"/proc/{p}").st_uid
            except FileNotFoundError:
                continue
            if 60000 <= uid < 60100:
                out.append(int(p))
    return out


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def judge(request):
    try:
        j = Judge(workers=2, backend=request.param, limits=Limits(time_s=1.0, memory_mb=256, output_bytes=1 << 20, wall_factor=2.0,
                                           wall_extra_s=0.5))
    except IsolationUnavailable as e:
        pytest.skip(f"no sandbox on this machine: {e}")
    yield j
    j.close()


def test_hostile_programs(judge, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    marker = f"openmimo-pwned-{os.getpid()}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                c, _ = listener.accept()
                connections.append(c.recv(100))
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    cases = hostile_programs(canary, port, marker, udp.getsockname()[1])
    assert len(cases) >= 30
    futs = [judge.submit(code, [test]) for _, code, _, test in cases]
    results = [f.result(timeout=120) for f in futs]
    stop.set()
    th.join()
    listener.close()
    wrong = [(name, r[0].status, r[0].detail) for (name, _, ok, _), r in zip(cases, results) if r[0].status not in ok]
    assert not wrong, wrong
    # nothing outside changed
    assert canary.read_text() == "intact"
    assert connections == []
    with pytest.raises(BlockingIOError):  # no datagram arrived either
        udp.recv(100)
    udp.close()
    for d in ("/usr", "/tmp", str(ROOT)):
        assert not (Path(d) / marker).exists()
    # no process survives (the daemon included), within a moment
    deadline = time.time() + 5
    while _judge_procs() and time.time() < deadline:
        time.sleep(0.1)
    assert _judge_procs() == []
    # the judge keeps serving
    v = judge.run("print(int(input()) * 2)", [{"input": "21\n", "output": "42\n"}])
    assert v[0].status == "passed"
    time.sleep(0.5)
    assert canary.read_text() == "intact"


def test_time_limit_is_cpu_time_not_wall(judge):
    # a program that uses little CPU but runs a while (under the backstop) is not a time-out
    code = "import time\ntime.sleep(0.6)\nprint('ok')\n"
    v = judge.run(code, [{"input": "", "output": "ok\n"}])
    assert v[0].status == "passed", v
    assert v[0].time < 0.5 and v[0].wall >= 0.6


# -- programs that try to pass without solving: read the expected values, fake a clean exit, hide work in children --
FIND = '''
import gc, re, sys
PAT = re.compile("".join(["SEC", "RET-", "[0-9a-f]{32}"]))
def hits_in(obj, seen, out, depth=0):
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        out.extend(PAT.findall(obj))
    elif isinstance(obj, bytes):
        out.extend(m.decode() for m in re.findall(PAT.pattern.encode(), obj))
    elif isinstance(obj, dict):
        for k, v in list(obj.items()):
            hits_in(k, seen, out, depth + 1)
            hits_in(v, seen, out, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in list(obj):
            hits_in(v, seen, out, depth + 1)
def frame_walk():
    out, seen, f = [], set(), sys._getframe()
    while f is not None:
        for name, v in list(f.f_locals.items()):
            if isinstance(v, dict) and isinstance(v.get("output" if name == "test" else "expected"), str):
                out.append(v.get("output") or v.get("expected"))
            hits_in(v, seen, out)
        hits_in(f.f_globals, seen, out)
        f = f.f_back
    return out
def gc_scan():
    out, seen = [], set()
    for o in gc.get_objects():
        if isinstance(o, dict) and ("expected" in o or "output" in o):
            hits_in(o, seen, out)
        elif isinstance(o, (dict, list, tuple)):
            hits_in(o, seen, out)
    return out
def mem_scan():
    out, pat = [], re.compile("".join(["SEC", "RET-", "[0-9a-f]{32}"]).encode())
    with open("/proc/self/maps") as m, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in m:
            addr, perms = line.split()[:2]
            if perms[0] != "r" or "[vvar" in line or "[vsyscall" in line:
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            pos = lo
            while pos < hi:
                try:
                    mem.seek(pos)
                    chunk = mem.read(min(1 << 20, hi - pos) + 40)
                except (OSError, ValueError, OverflowError):
                    break
                out.extend(h.decode() for h in pat.findall(chunk or b""))
                pos += 1 << 20
    return out
def ctypes_scan():
    import ctypes
    out, pat = [], re.compile("".join(["SEC", "RET-", "[0-9a-f]{32}"]).encode())
    with open("/proc/self/maps") as m:
        lines = m.read().splitlines()
    for line in lines:
        parts = line.split()
        if not parts[1].startswith("rw") or (len(parts) > 5 and parts[5] not in ("[heap]", "[stack]")):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.extend(h.decode() for h in pat.findall(ctypes.string_at(lo, hi - lo)))
    return out
'''


def cheating_programs(secrets: list[str]) -> list[tuple[str, str, list[dict], set]]:
    """(name, code, tests, accepted verdicts): each program would pass every test if its trick worked."""
    stdin = [{"input": f"{i}\n", "output": s + "\n"} for i, s in enumerate(secrets)]
    call = [{"fn": "solve", "args": [i], "expected": s} for i, s in enumerate(secrets)]
    check = [{"check": f"assert solve({i}) == {s!r}"} for i, s in enumerate(secrets)]
    wrong = {"wrong_answer", "runtime_error"}
    exit_kinds = {"sys_exit_0": "import sys\nsys.exit(0)", "raise_systemexit": "raise SystemExit",
                  "systemexit_0": "raise SystemExit(0)", "os_exit_0": "import os\nos._exit(0)",
                  "exit_builtin": "exit()", "kill_self_clean": "import os, sys\nsys.stdout.flush()\nos._exit(0)"}
    cases = []
    for how in ("frame_walk", "gc_scan", "mem_scan", "ctypes_scan"):
        cases += [
            (f"{how}_stdin", FIND + f"hits = {how}()\nprint(hits[0] if hits else 'nothing found')\n", stdin, wrong),
            (f"{how}_stdin_all", FIND + f"print(' '.join(sorted(set({how}()))) or 'nothing found')\n", stdin, wrong),
            (f"{how}_call", FIND + f"def solve(i):\n    hits = {how}()\n    return hits[0] if hits else None\n", call, wrong),
            (f"{how}_call_all", FIND + f"def solve(i):\n    return sorted(set({how}()))\n", call, wrong),
        ]
    for name, body in exit_kinds.items():
        cases.append((f"{name}_top_level_check", body + "\n", check, {"runtime_error"}))
        inner = "\n".join("    " + ln for ln in body.splitlines())
        cases.append((f"{name}_in_function_check", f"def solve(i):\n{inner}\n", check, {"runtime_error"}))
        cases.append((f"{name}_in_function_call", f"def solve(i):\n{inner}\n", call, {"runtime_error"}))
    cases += [
        ("exit_in_thread_check", "import os, threading, time\ndef solve(i):\n    threading.Thread(target=os._exit, args=(0,)).start()\n"
         "    time.sleep(5)\n", check, {"runtime_error"}),
        ("exit_in_atexit_check", "import atexit, os\natexit.register(os._exit, 0)\ndef solve(i):\n    return None\n",
         check, {"runtime_error"}),
        # output tricks: an object equal to everything, forged result frames on the harness's fd 3
        ("always_equal_call", "class Any:\n    def __eq__(self, other):\n        return True\n"
         "def solve(i):\n    return Any()\n", call, wrong),
        ("always_equal_str_call", "class Any(str):\n    def __eq__(self, other):\n        return True\n"
         "    __hash__ = str.__hash__\ndef solve(i):\n    return Any('x')\n", call, wrong),
        ("forged_value_frame_call", "import os\ndef solve(i):\n    os.write(3, b'{\"value\": \"SECRET\"}')\n"
         "    os._exit(0)\n", call, wrong),
        ("forged_two_frames_call", "import os\ndef solve(i):\n    os.write(3, b'{\"value\": null}')\n    return None\n",
         call, wrong),
        ("forged_frame_stdin", "import os\nos.write(3, b'{\"checked\": true}')\nprint('nothing')\n", stdin, wrong),
        # work hidden in child processes: memory beyond the limit, CPU time not charged to the test
        ("forked_children_memory", "import os\npids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
         "        x = bytearray(200 << 20)\n        for k in range(0, len(x), 4096):\n            x[k] = 1\n"
         "        os._exit(0)\n    pids.append(pid)\nfor p in pids:\n    os.waitpid(p, 0)\nprint('done')\n",
         [{"input": "", "output": "done\n"}], {"runtime_error", "memory_limit"}),
        ("forked_children_cpu", "import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n        t = time.time()\n"
         "        while time.time() - t < 1.5:\n            pass\n        os._exit(0)\nos.wait()\nprint('done')\n",
         [{"input": "", "output": "done\n"}], {"runtime_error", "time_limit"}),
        ("multiprocessing_pool", "import multiprocessing as mp\ndef sq(x):\n    return x * x\n"
         "if __name__ == '__main__':\n    with mp.Pool(4) as p:\n        print(sum(p.map(sq, range(100))))\n",
         [{"input": "", "output": "328350\n"}], {"runtime_error"}),
        ("subprocess_memory", "import subprocess, sys\nr = subprocess.run([sys.executable, '-c', 'x = bytearray(300 << 20)'])\n"
         "print('done' if r.returncode == 0 else 'failed')\n", [{"input": "", "output": "done\n"}], {"runtime_error", "wrong_answer"}),
        ("posix_spawn_cpu", "import os, sys\npid = os.posix_spawn(sys.executable, [sys.executable, '-c', 'while 1: pass'], {})\n"
         "print('done')\n", [{"input": "", "output": "done\n"}], {"runtime_error"}),
    ]
    if os.uname().machine == "x86_64":
        for nr, label in ((57, "fork"), (58, "vfork"), (435, "clone3"), (0x40000000 | 57, "x32_fork")):
            cases.append((f"raw_syscall_{label}", _guard("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                                         f"assert libc.syscall({nr}, 0, 0, 0, 0, 0) > 0"), [OK], {"passed"}))
        cases.append(("raw_syscall_clone_sigchld", _guard("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                                          "assert libc.syscall(56, 17, 0, 0, 0, 0) > 0"), [OK], {"passed"}))
    return cases


def test_cheating_programs_score_zero(judge):
    secrets = [f"SECRET-{uuid.uuid4().hex}" for _ in range(3)]
    cases = cheating_programs(secrets)
    futs = [judge.submit(code, tests) for _, code, tests, _ in cases]
    results = [f.result(timeout=300) for f in futs]
    wrong, leaked = [], []
    for (name, _, _, ok), verdicts in zip(cases, results):
        wrong += [(name, i, v.status, v.detail) for i, v in enumerate(verdicts) if v.status not in ok]
        leaked += [(name, i, v.detail) for i, v in enumerate(verdicts) if any(s in v.detail for s in secrets)]
    assert not wrong, wrong
    assert not leaked, leaked  # the searches found no expected value of any test
    # the judge keeps serving, and honest programs of each kind still pass
    assert judge.run("print(input())", [{"input": s, "output": s} for s in secrets])[0].status == "passed"
    honest = "def solve(i):\n    return " + repr(secrets) + "[i]\n"
    assert all(v.passed for v in judge.run(honest, [{"fn": "solve", "args": [i], "expected": s} for i, s in enumerate(secrets)]))
    assert all(v.passed for v in judge.run(honest, [{"check": f"assert solve({i}) == {s!r}"} for i, s in enumerate(secrets)]))
    threads = "import threading\nr = []\nt = threading.Thread(target=lambda: r.append(int(input()) * 2))\nt.start()\nt.join()\nprint(r[0])\n"
    assert judge.run(threads, [{"input": "21\n", "output": "42\n"}])[0].status == "passed"
