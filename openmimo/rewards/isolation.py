"""Start the judge's pre-forking interpreter inside a sandbox, and talk to it.

Backends, tried in this order by ``backend="auto"``:

* ``bwrap`` (bubblewrap): new PID, network, IPC, UTS and mount namespaces; the root file system is
  built from scratch: read-only binds of ``/usr`` (and the merged-usr symlinks), ``/etc/ld.so.cache``
  and the Python prefix (mounted at ``/opt/python``), a fresh ``/proc``, a minimal ``/dev`` and a
  private tmpfs ``/tmp``.  Nothing of ``/work``, ``/root`` or ``/home`` is mounted.  The
  environment is emptied (``--clearenv``).
* ``unshare`` (util-linux): the same namespaces; :mod:`openmimo.rewards._unshare_root` builds the
  same read-only root with mount(2) and chroots into it before starting the interpreter.
* ``none``: no isolation at all (rlimits only).  Used only when the caller passes
  ``allow_unsafe=True``; otherwise a missing sandbox raises :class:`IsolationUnavailable`.

When the judge runs as root, the zygote keeps CAP_SETUID/SETGID/KILL/SYS_ADMIN inside the
sandbox (to mount its size-limited tmpfs, to drop each test to an unprivileged uid and to sweep
leftover processes); the test processes themselves run with no capability at all.  As a normal
user, bwrap/unshare use a user namespace that maps a single uid; the tests keep that uid and drop
every capability (so a hostile test *can* signal the zygote; the judge then restarts the sandbox
and reports a runtime error).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

ZYGOTE = Path(__file__).with_name("_zygote.py")
UNSHARE_ROOT = Path(__file__).with_name("_unshare_root.py")
BACKENDS = ("auto", "bwrap", "unshare", "none")


class IsolationUnavailable(RuntimeError):
    """No working sandbox on this machine and the caller did not opt out of isolation."""


class SandboxDied(RuntimeError):
    """The sandboxed interpreter exited or stopped answering."""


def _python_prefix(python: str) -> tuple[str, str]:
    """(host prefix to bind, interpreter path inside the sandbox) for ``python``."""
    exe = Path(python).resolve()
    prefix = exe.parent.parent
    if str(prefix).startswith("/usr"):
        return "", str(exe)
    return str(prefix), "/opt/python/" + str(exe.relative_to(prefix))


def bwrap_command(python: str, zygote: str, tmp_mb: int) -> list[str]:
    prefix, inner = _python_prefix(python)
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--clearenv",
           "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--hostname", "judge", "--ro-bind", "/usr", "/usr"]
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), f"/{d}"]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), f"/{d}"]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if Path(f).exists():
            cmd += ["--ro-bind", f, f]
    cmd += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/judge"]
    if prefix:
        cmd += ["--ro-bind", prefix, "/opt/python", "--setenv", "LD_LIBRARY_PATH", "/opt/python/lib"]
    cmd += ["--ro-bind", zygote, "/opt/judge/zygote.py", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--chdir", "/tmp"]
    if os.geteuid() == 0:
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_FOWNER"):
            cmd += ["--cap-add", cap]
    else:
        cmd += ["--unshare-user", "--cap-add", "ALL"]
    return cmd + [inner, "-I", "/opt/judge/zygote.py", str(tmp_mb), "/tmp", "1"]


def unshare_command(python: str, zygote: str, tmp_mb: int) -> list[str]:
    cmd = ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        cmd += ["--user", "--map-root-user"]
    return cmd + [sys.executable, "-I", str(UNSHARE_ROOT), python, zygote, str(tmp_mb)]


COMMANDS = {"bwrap": bwrap_command, "unshare": unshare_command}


@lru_cache(maxsize=None)
def probe(backend: str, python: str) -> str | None:
    """Start one sandbox of ``backend`` and check that it answers; None if it works, else why not."""
    if backend != "none" and shutil.which(backend) is None:
        return f"{backend} is not installed"
    try:
        sb = SandboxProcess(backend, python, tmp_mb=16)
    except (OSError, SandboxDied) as e:
        return f"{backend} failed to start: {e}"
    sb.close()
    return None


def resolve_backend(backend: str, python: str, allow_unsafe: bool) -> str:
    """Pick a working backend, or raise IsolationUnavailable with what was tried."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "none":
        if not allow_unsafe:
            raise IsolationUnavailable("backend 'none' runs untrusted code without isolation; pass allow_unsafe=True to do so")
        return "none"
    tried = ["bwrap", "unshare"] if backend == "auto" else [backend]
    why = []
    for b in tried:
        err = probe(b, python)
        if err is None:
            return b
        why.append(err)
    if allow_unsafe:
        return "none"
    raise IsolationUnavailable(
        "no working sandbox for the code judge (" + "; ".join(why) + "). Install bubblewrap (scripts/setup.sh "
        "does) or enable user namespaces; or pass allow_unsafe=True (--allow-unsafe) to run without isolation.")


class SandboxProcess:
    """One sandboxed zygote: send a request, get the verdicts back (one request at a time)."""

    def __init__(self, backend: str, python: str | None = None, tmp_mb: int = 256, start_timeout: float = 30.0):
        self.backend = backend
        python = python or sys.executable
        self._tmpdir = None
        if backend == "none":  # unisolated (opt-in): a private host directory instead of the sandbox's /tmp
            import tempfile

            self._tmpdir = tempfile.mkdtemp(prefix="openmimo-judge-")
            cmd = [python, "-I", str(ZYGOTE), str(tmp_mb), self._tmpdir, "0"]
        else:
            cmd = COMMANDS[backend](python, str(ZYGOTE), tmp_mb)
        env = {"PATH": "/usr/bin:/bin"} if backend != "none" else {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True, close_fds=True)
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain, daemon=True).start()
        hello = self._read(start_timeout)
        if not hello or not hello.get("ready"):
            self.close()
            raise SandboxDied("sandbox did not start: " + b"".join(self._stderr).decode("utf-8", "replace")[-500:])
        self.uid = hello.get("uid")
        self.cpu = 0.0  # CPU seconds used inside this sandbox so far (zygote + reaped tests)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            if len(self._stderr) < 200:
                self._stderr.append(line)

    def _read(self, timeout: float):
        out = self.proc.stdout
        import select

        if not select.select([out], [], [], timeout)[0]:
            raise SandboxDied(f"sandbox gave no answer within {timeout:.1f}s")
        head = out.read(4)
        if len(head) < 4:
            raise SandboxDied("sandbox exited: " + b"".join(self._stderr).decode("utf-8", "replace")[-500:])
        (n,) = struct.unpack("<I", head)
        data = out.read(n)
        if len(data) < n:
            raise SandboxDied("sandbox exited mid-answer")
        return json.loads(data)

    def request(self, req: dict, timeout: float) -> list[dict]:
        data = json.dumps(req).encode()
        try:
            self.proc.stdin.write(struct.pack("<I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise SandboxDied(f"sandbox is gone: {e}") from None
        ans = self._read(timeout)
        verdicts = ans.get("verdicts") if isinstance(ans, dict) else None
        if isinstance(ans, dict) and isinstance(ans.get("cpu"), (int, float)):
            self.cpu = float(ans["cpu"])
        if not isinstance(verdicts, list) or len(verdicts) != len(req["tests"]):
            raise SandboxDied("sandbox sent a malformed answer")
        return verdicts

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Kill the sandbox and everything in it (its process group; the PID namespace dies with it)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
