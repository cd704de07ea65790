"""Fallback sandbox root for the judge when bubblewrap is missing: run under ``unshare``.

Invoked as ``unshare --mount --net --pid --ipc --uts --fork [--user --map-root-user] python -I
_unshare_root.py PYTHON ZYGOTE TMP_MB``.  In the fresh mount namespace it builds the same view as
the bwrap backend -- a tmpfs root holding read-only binds of /usr (plus the merged-usr symlinks),
/etc/ld.so.cache, the Python prefix at /opt/python and the zygote, a new /proc, the device nodes
null/zero/full/random/urandom, and a private /tmp -- then chroots into it, empties the environment
and execs the zygote.  Standard library only; nothing from openmimo is imported.

Simplified: chroot rather than pivot_root (the test processes hold no capability, so they cannot
leave it); read-only is applied per bind mount, so a submount below /usr would stay writable.
"""

import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


def mount(src, dst, fstype, flags, data=None):
    if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {dst}: {os.strerror(e)}")


def ro_bind(src, dst):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def main():
    python, zygote, tmp_mb = sys.argv[1], sys.argv[2], sys.argv[3]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = "/tmp/.openmimo-judge-root"
    os.makedirs(root, exist_ok=True)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0755")
    ro_bind("/usr", root + "/usr")
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = "/" + d
        if os.path.islink(p):
            os.symlink(os.readlink(p), root + p)
        elif os.path.isdir(p):
            ro_bind(p, root + p)
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            ro_bind(f, root + f)
    exe = os.path.realpath(python)
    prefix = os.path.dirname(os.path.dirname(exe))
    if prefix.startswith("/usr"):
        inner, env = exe, {}
    else:
        ro_bind(prefix, root + "/opt/python")
        inner, env = "/opt/python/" + os.path.relpath(exe, prefix), {"LD_LIBRARY_PATH": "/opt/python/lib"}
    ro_bind(zygote, root + "/opt/judge/zygote.py")
    os.makedirs(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/dev")
    for n in ("null", "zero", "full", "random", "urandom"):
        open(root + "/dev/" + n, "a").close()
        mount("/dev/" + n, root + "/dev/" + n, None, MS_BIND)
    os.makedirs(root + "/tmp")
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/tmp")
    libc.sethostname(b"judge", 5)
    os.execve(inner, [inner, "-I", "/opt/judge/zygote.py", tmp_mb, "/tmp", "1"], env)


if __name__ == "__main__":
    main()
