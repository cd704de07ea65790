"""The judge's in-sandbox server: a pre-started interpreter that forks once per test.

This file runs *inside* the sandbox (bubblewrap or the unshare fallback), started once per
judge worker.  It must import nothing from openmimo and only the standard library, because the
sandbox sees only the interpreter's read-only prefix and a private /tmp.

Protocol (stdin/stdout of this process, replaced by fds 3/4 at start): length-prefixed JSON
frames.  A request carries one program, a chunk of tests and the limits; the answer carries one
verdict per test.  The expected outputs stay in this process: the forked test process (the
"child") only ever sees its input, so nothing it writes can forge a pass.

Per test: fork; in the child set rlimits, drop to an unprivileged uid (when we run as root in
the sandbox) or drop every capability, clear the environment, close every inherited fd, then
``exec`` the pre-compiled program.  The parent waits with a wall-clock backstop (pidfd + poll),
classifies the exit, compares the output, and kills every process the test left behind
(``kill(-1, SIGKILL)`` inside the sandbox's own PID namespace) before the next test.

Simplified: memory is measured as the child's peak RSS, which includes the ~10 MB of interpreter
pages it shares with this process; the address-space limit counts the interpreter too.
"""

import atexit  # noqa: F401 -- pre-imported for the children
import ctypes
import io
import json
import math
import os
import resource
import select
import signal
import shutil
import struct
import sys
import time
import traceback

MEM_EXIT = 86  # the child's exit code after an uncaught MemoryError
BASE = sys.argv[2] if len(sys.argv) > 2 else "/tmp"
SANDBOXED = (sys.argv[3] == "1") if len(sys.argv) > 3 else True  # False only for the opt-in unisolated mode
WORK = BASE + "/w"  # size-limited tmpfs with one directory per test
_libc = ctypes.CDLL(None, use_errno=True)
_STDIO = None  # (stdin, stdout, stderr) text streams for the test processes, made in _setup


def _real_root():
    """True when we are root of the initial user namespace (so other uids exist to drop to); False in
    a user namespace that maps only one uid (unprivileged bwrap/unshare), where tests keep our uid."""
    try:
        with open("/proc/self/uid_map") as f:
            first = f.read().split()
        return os.getuid() == 0 and first[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


CAN_SETUID = _real_root()


def _fork():
    """fork(2) straight from libc.  This process is single-threaded, so CPython's after-fork work
    (re-initialising thread, import and signal state) is not needed; skipping it makes a test
    ~3x cheaper (0.8 ms instead of 2.4 ms per fork+exit on the reference machine)."""
    pid = _libc.fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork failed")
    if pid == 0 and "random" in sys.modules:
        sys.modules["random"].seed()
    return pid


def _frame_read(f):
    head = f.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    return json.loads(f.read(n))


def _frame_write(f, obj):
    data = json.dumps(obj).encode()
    f.write(struct.pack("<I", len(data)) + data)
    f.flush()


_CAP_HDR = (ctypes.c_uint32 * 2)(0x20080522, 0)
_CAP_DATA = (ctypes.c_uint32 * 6)()


def _drop_caps():
    """Empty the effective/permitted/inheritable capability sets (capset v3).  The bounding set is
    left alone: with no permitted capability and no_new_privs set, no exec can regain one."""
    nr = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine, 126)  # SYS_capset
    if _libc.syscall(nr, _CAP_HDR, _CAP_DATA) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _exit_like_python():
    """What the interpreter does at a normal exit: join non-daemon threads, run atexit handlers."""
    th = sys.modules.get("threading")
    if th is not None and len(th._active) > 1:  # only when the program started threads (costly otherwise)
        th._shutdown()
    ae = sys.modules["atexit"]
    if ae._ncallbacks():
        ae._run_exitfuncs()


def _child(code_obj, test, lim, uid, workdir, res_fd):
    """Runs in the forked test process; never returns."""
    try:
        os.chdir(workdir)
        mem = int(lim["memory_mb"]) << 20
        cpu = int(math.ceil(lim["time_s"])) + 1
        for r, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_STACK, mem), (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_FSIZE, int(lim["output_bytes"])), (resource.RLIMIT_NOFILE, int(lim["nofile"])),
                     (resource.RLIMIT_NPROC, int(lim["nproc"])), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(r, (v, v))
        # precise CPU limit (RLIMIT_CPU above has 1 s granularity and stays as the backstop)
        signal.setitimer(signal.ITIMER_PROF, float(lim["time_s"]) + 0.01)
        if CAN_SETUID and uid:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)  # clears the permitted and effective capabilities
        _drop_caps()
        _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        os.environ.clear()  # already empty (cleared in _setup); kept as a guard
        sys.argv = ["main.py"]
        sys.stdin, sys.stdout, sys.stderr = _STDIO  # built once in the zygote, never used there
        call = test.get("fn") is not None
        g = {"__name__": "solution" if call else "__main__", "__builtins__": __builtins__}
        exec(code_obj, g)
        if test.get("check"):  # assert-style test (MBPP, HumanEval): runs after the program, same namespace
            exec(compile(test["check"], "check.py", "exec"), g)
        if call:
            fn = test["fn"]
            sol = g.get("Solution")
            if sol is not None and hasattr(sol, fn):
                target = getattr(sol(), fn)
            elif callable(g.get(fn)):
                target = g[fn]
            else:
                raise NameError(f"no function or Solution method named {fn!r}")
            value = target(*test.get("args", []))
            try:
                out = json.dumps({"value": value})
            except (TypeError, ValueError):
                out = json.dumps({"repr": repr(value)})
            os.write(res_fd, out.encode())
        _exit_like_python()
        sys.stdout.flush()
        os._exit(0)
    except SystemExit as e:
        c = e.code
        try:
            sys.stdout.flush()
        except BaseException:
            os._exit(1)
        if c is None or isinstance(c, int):
            os._exit((c or 0) & 0xFF)
        print(c, file=sys.stderr)
        os._exit(1)
    except MemoryError:
        os._exit(MEM_EXIT)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc()[-2000:])
        except BaseException:
            pass
        os._exit(1)


def _lines(text):
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tok_equal(a, b, tol):
    if a == b:
        return True
    if tol is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=tol, abs_tol=tol)


def stdout_matches(got, expected, tol=None):
    """Line-by-line comparison after stripping trailing whitespace; optional numeric tolerance."""
    g, e = _lines(got), _lines(expected)
    if len(g) != len(e):
        return False
    if tol is None:
        return g == e
    for gl, el in zip(g, e):
        gt, et = gl.split(), el.split()
        if len(gt) != len(et) or not all(_tok_equal(x, y, tol) for x, y in zip(gt, et)):
            return False
    return True


def value_matches(got, expected, tol=None):
    """Return-value comparison: tuples and lists alike, floats within ``tol`` when given."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return got is expected or got == expected and type(got) is type(expected)
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        if tol is not None:
            return math.isclose(got, expected, rel_tol=tol, abs_tol=tol)
        return got == expected
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(value_matches(a, b, tol) for a, b in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(value_matches(got[k], expected[k], tol) for k in got)
    return got == expected


def _sweep(pid):
    """Kill every process of this sandbox except init (pid 1) and ourselves; wait until none is left.

    Unsandboxed (opt-in unsafe mode) we may not touch the host's processes: only the test's
    process group is killed, which a daemon that calls setsid() escapes.
    """
    if not SANDBOXED:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        return
    me = os.getpid()
    for _ in range(1000):
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not others:
            return
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        try:  # reap any that are still our children
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.001)


_FILES = {}  # name -> memfd, created once, truncated before every test


def _io_fd(name):
    fd = _FILES.get(name)
    if fd is None:
        fd = _FILES[name] = os.memfd_create(name, 0)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_fd(fd, limit):
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, limit)


def run_test(code_obj, test, lim, uid, tol):
    """Fork, run one test, classify it.  Returns a verdict dict.

    The test's stdin/stdout/stderr/result are memfds owned by this process (reused from test to
    test: every process that could hold them is dead before the next test starts)."""
    fin, fout, ferr, fres = (_io_fd(n) for n in ("in", "out", "err", "res"))
    data = test.get("input", "").encode()
    while data:
        data = data[os.write(fin, data):]
    os.lseek(fin, 0, os.SEEK_SET)
    workdir = f"{WORK}/t"
    os.mkdir(workdir, 0o700)
    if CAN_SETUID and uid:
        os.chown(workdir, uid, uid)
    t0 = time.monotonic()
    pid = _fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.dup2(fin, 0)
            os.dup2(fout, 1)
            os.dup2(ferr, 2)
            os.dup2(fres, 3)
            os.closerange(4, 1 << 16)
        except BaseException:
            os._exit(1)
        _child(code_obj, test, lim, uid, workdir, 3)
    wall_limit = lim["time_s"] * lim["wall_factor"] + lim["wall_extra_s"]
    killed_wall = False
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], wall_limit)[0]:
            killed_wall = True
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    _sweep(pid)
    try:
        os.rmdir(workdir)
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)
    cpu = ru.ru_utime + ru.ru_stime
    mem_kb = ru.ru_maxrss
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -sig
    out_size = os.fstat(fout).st_size
    err = _read_fd(ferr, 4096).decode("utf-8", "replace")[-1000:]
    v = {"time": round(cpu, 4), "wall": round(wall, 4), "memory_kb": mem_kb, "exit_code": code, "detail": ""}
    mem_limit_kb = lim["memory_mb"] * 1024
    if killed_wall or cpu > lim["time_s"] or sig in (signal.SIGXCPU, signal.SIGPROF):
        v["status"] = "time_limit"
        v["detail"] = "wall-clock backstop" if killed_wall and cpu <= lim["time_s"] else "cpu time"
    elif sig == signal.SIGXFSZ or out_size >= lim["output_bytes"]:
        v["status"] = "output_limit"
    elif code == MEM_EXIT or (code != 0 and mem_kb >= 0.9 * mem_limit_kb):
        v["status"] = "memory_limit"
    elif code != 0:
        v["status"] = "runtime_error"
        v["detail"] = err.strip().splitlines()[-1] if err.strip() else (f"killed by signal {sig}" if sig else f"exit code {code}")
    elif test.get("fn") is not None:
        raw = _read_fd(fres, lim["output_bytes"])
        try:
            res = json.loads(raw)
        except ValueError:
            res = None
        if not isinstance(res, dict):
            v["status"], v["detail"] = "runtime_error", "no return value"
        elif "value" in res and value_matches(res["value"], test.get("expected"), tol):
            v["status"] = "passed"
        else:
            v["status"] = "wrong_answer"
            v["detail"] = ("got " + json.dumps(res.get("value", res.get("repr"))))[:200]
    elif test.get("check"):
        v["status"] = "passed"
    else:
        got = _read_fd(fout, lim["output_bytes"]).decode("utf-8", "replace")
        if stdout_matches(got, test.get("output", ""), tol):
            v["status"] = "passed"
        else:
            v["status"] = "wrong_answer"
            v["detail"] = ("got " + repr(got[:100]))
    return v


def handle(req):
    lim, uid, tol = req["limits"], req.get("uid", 0), req.get("tol")
    tests = req["tests"]
    try:
        code_obj = compile(req["code"], "main.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        msg = f"{type(e).__name__}: {e}"[:300]
        return [{"status": "runtime_error", "time": 0.0, "wall": 0.0, "memory_kb": 0, "exit_code": 1, "detail": msg}
                for _ in tests]
    out, stop = [], False
    for t in tests:
        if stop:
            out.append({"status": "skipped", "time": 0.0, "wall": 0.0, "memory_kb": 0, "exit_code": 0, "detail": "stopped early"})
            continue
        v = run_test(code_obj, t, lim, uid, tol)
        out.append(v)
        stop = req.get("stop_early", False) and v["status"] != "passed"
    return out


def _setup():
    """Move the protocol to fds 3/4, mount a size-limited tmpfs for the tests, lock ourselves down."""
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    rin, wout = os.dup(0), os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.makedirs(WORK, exist_ok=True)
    opts = f"size={size_mb}m,mode=0755".encode()
    if SANDBOXED and _libc.mount(b"tmpfs", WORK.encode(), b"tmpfs", 2 | 4 | 8, opts) != 0:  # NOSUID|NODEV|NOEXEC
        os.write(2, b"zygote: could not mount the size-limited tmpfs; using the sandbox's /tmp\n")
    _libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace of this process even by the same uid
    os.environ.clear()  # the children inherit an empty environment
    global _STDIO
    # the tests' text streams on fds 0/1/2, built here once: constructing them costs ~1 ms per test
    _STDIO = (io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"),
              io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16), encoding="utf-8"),
              io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                               write_through=True))
    return os.fdopen(rin, "rb"), os.fdopen(wout, "wb")


def main():
    rin, wout = _setup()
    _frame_write(wout, {"ready": True, "uid": os.getuid(), "pid": os.getpid()})
    import gc

    gc.freeze()  # fewer copy-on-write faults in the forked children
    while True:
        req = _frame_read(rin)
        if req is None:
            return
        verdicts = handle(req)
        t = os.times()  # CPU of this process and of every test it reaped (for throughput accounting)
        _frame_write(wout, {"verdicts": verdicts, "cpu": t.user + t.system + t.children_user + t.children_system})


if __name__ == "__main__":
    main()
