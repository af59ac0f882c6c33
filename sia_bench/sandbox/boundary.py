"""The OS-level boundary: the bubblewrap command line, the rlimit fence and the cgroup join.

Inside: a fresh root holding only read-only system libraries (``/usr``), the Python interpreter and the virtual
environment's ``site-packages`` (nothing else of the project: no sources, data, caches, runs), a private tmpfs
``/work`` with the program's inputs, a private ``/tmp``, a new ``/proc`` (own PID namespace: the harness and its
environment are invisible), a minimal ``/dev``, no network (own network namespace, loopback only), no new user
namespaces, an empty environment plus a few named variables, and death with the parent. Every capability is dropped
(``--cap-drop ALL``: without it a root caller's sandbox keeps a full set inside its user namespace). Files a task
names as hidden (e.g. a dataset shipped inside a mounted package) are masked (unreadable file, empty folder).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

KIT = Path(__file__).with_name("kit")
INSIDE_KIT = "/sandbox/kit"
INSIDE_WORK = "/sandbox/work"
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/sbin")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
MODES = ("bwrap", "process")
PASSWD = "sandbox:x:0:0:sandbox:/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n"
GROUP = "sandbox:x:0:\nnogroup:x:65534:\n"


class SandboxUnavailable(RuntimeError):
    """The requested boundary cannot start here; the message names the fix or the explicit weaker mode."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed program may use. Memory and processes bind the whole tree where a cgroup is available."""

    wall_s: float = 60.0
    memory_mb: int | None = 4096  # None: no memory limit (GPU drivers map huge virtual ranges)
    max_procs: int = 64
    threads: int = 1
    open_files: int = 256
    file_size_mb: int = 1024  # largest file it may write (its tmpfs is capped by memory too)
    tmpfs_mb: int = 2048
    result_mb: float = 64.0  # largest single result message
    results_total_mb: float | None = None  # all result bytes kept at once (None: 2 x result_mb + 1 for run(),
    # 64 x result_mb of not yet received messages for a Session)
    cpus: tuple[int, ...] | None = None  # pin to these cores (cpuset where available, else affinity)


def python_paths() -> dict[str, list[str]]:
    """The interpreter binary, the base installation and the library folders a sandboxed Python needs."""
    return {k: list(v) for k, v in _python_paths().items()}


@functools.lru_cache(maxsize=1)
def _python_paths() -> dict[str, tuple[str, ...]]:  # resolving them costs ~5 ms; they never change in a process
    paths = sysconfig.get_paths()
    site = sorted({str(Path(paths[k]).resolve()) for k in ("purelib", "platlib") if Path(paths[k]).is_dir()})
    base = str(Path(sys.base_prefix).resolve())
    exe = Path(sys.executable).resolve()
    return {"exe": (str(exe),), "base": (base,), "site": tuple(site)}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def check_mode(mode: str) -> str | None:
    """Why ``mode`` cannot run here, or None. The weak ``process`` mode always runs."""
    if mode not in MODES:
        return f"unknown sandbox mode {mode!r}; choose {' or '.join(MODES)}"
    if mode == "process":
        return None
    if bwrap_path() is None:
        return ("bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap), or opt into the "
                "weak mode without an OS boundary with sandbox=process (recorded in the run)")
    import subprocess

    probe = subprocess.run([bwrap_path(), *_namespaces(), "--ro-bind", "/usr", "/usr", *_system_links(),
                            "--proc", "/proc", "--dev", "/dev", "/usr/bin/true"],
                           capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return (f"bubblewrap cannot create a sandbox here ({probe.stderr.strip()[:200]}); allow user namespaces, or "
                "opt into the weak mode without an OS boundary with sandbox=process (recorded in the run)")
    return None


def _namespaces() -> list[str]:
    return ["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]


def _system_links() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS[1:]:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


@dataclass
class Mounts:
    """What a program sees besides the system libraries: files copied into /work, read-only host folders."""

    files: dict[str, int] = field(default_factory=dict)  # name in /work -> readable fd holding its content
    readonly: list[tuple[str, str]] = field(default_factory=list)  # (host path, inside path)
    data_fds: dict[str, int] = field(default_factory=dict)  # inside path -> fd with read-only content (/etc files)
    hidden: list[str] = field(default_factory=list)  # host paths masked wherever a mounted folder would show them


def visible_roots(mounts: Mounts) -> list[str]:
    """Host folders a sandboxed program can see (read-only) at the same path."""
    py = python_paths()
    roots = ["/usr", *(d for d in SYSTEM_DIRS[1:] if os.path.isdir(d) and not os.path.islink(d)), *ETC_FILES,
             *py["base"], *py["site"], *(host for host, inside in mounts.readonly if host == inside)]
    return [os.path.realpath(r) for r in roots]


def _hide_args(mounts: Mounts) -> list[str]:
    """Mask each hidden path that falls inside a visible folder: ``/dev/null`` over a file (on a ``nodev`` bind,
    so opening it fails with EACCES), a read-only empty tmpfs over a folder. Paths outside every mount are invisible
    already."""
    args: list[str] = []
    roots = visible_roots(mounts)
    for path in dict.fromkeys(os.path.realpath(p) for p in mounts.hidden):
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots) or not os.path.exists(path):
            continue
        args += ["--tmpfs", path, "--remount-ro", path] if os.path.isdir(path) else ["--ro-bind", "/dev/null", path]
    return args


def bwrap_args(mounts: Mounts, limits: Limits, env: dict[str, str], gpu: bool = False) -> list[str]:
    py = python_paths()
    args = [bwrap_path() or "bwrap", *_namespaces(), "--ro-bind", "/usr", "/usr", *_system_links()]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    for inside, fd in mounts.data_fds.items():
        args += ["--ro-bind-data", str(fd), inside]
    for path in dict.fromkeys(py["base"] + py["site"]):
        if not path.startswith("/usr/"):
            args += ["--ro-bind", path, path]
    args += ["--ro-bind", str(KIT), INSIDE_KIT]
    for host, inside in mounts.readonly:
        args += ["--ro-bind", host, inside]
    args += _hide_args(mounts)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(256 << 20), "--tmpfs", "/tmp",
             "--size", str(limits.tmpfs_mb << 20), "--tmpfs", INSIDE_WORK]
    for name, fd in mounts.files.items():
        args += ["--file", str(fd), f"{INSIDE_WORK}/{name}"]
    if gpu:  # the device nodes and driver files CUDA needs; nothing else of /dev or /sys
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
        for path in ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices", "/sys/module/nvidia"):
            args += ["--ro-bind-try", path, path]
    args += ["--remount-ro", "/", "--chdir", INSIDE_WORK, "--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    return args


def child_env(limits: Limits, result_fd: int, command_fd: int, extra: dict[str, str] | None = None,
              home: str = "/tmp") -> dict[str, str]:
    threads = str(limits.threads)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "NUMBA_NUM_THREADS": threads, "NUMEXPR_NUM_THREADS": threads, "VECLIB_MAXIMUM_THREADS": threads,
           "TORCH_NUM_THREADS": threads, "NUMBA_CACHE_DIR": f"{home}/.numba", "TRITON_CACHE_DIR": f"{home}/.triton",
           "SIA_RESULT_FD": str(result_fd), "SIA_COMMAND_FD": str(command_fd),
           "SIA_SITE": json.dumps(python_paths()["site"]), "SIA_SITE_PATHS": os.pathsep.join(python_paths()["site"])}
    env.update(extra or {})
    return env


def rlimit_args(limits: Limits, memory_fenced: bool, procs_fenced: bool) -> list[str]:
    """``prlimit`` options: per-process fences that hold whatever else is available."""
    cpu = int(limits.wall_s * max(1, limits.threads)) + 5
    args = ["prlimit", "--core=0", f"--nofile={limits.open_files}", f"--fsize={limits.file_size_mb << 20}",
            f"--cpu={cpu}"]
    if limits.memory_mb and not memory_fenced:
        args.append(f"--as={limits.memory_mb << 20}")
    if not procs_fenced and os.geteuid() != 0:  # RLIMIT_NPROC never binds root; counts the whole user otherwise
        args.append(f"--nproc={limits.max_procs + _user_processes()}")
    return args + ["--"]


def _user_processes() -> int:
    uid, n = os.geteuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                n += entry.stat().st_uid == uid
            except OSError:
                pass
    return n


JOIN_SCRIPT = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'


def join_args(procs_files: list[str]) -> list[str]:
    """``sh`` joins the cgroup before exec, so the first sandboxed instruction already runs inside the limits."""
    return ["/bin/sh", "-c", JOIN_SCRIPT, "sia-join", *procs_files, "--"] if procs_files else []


def sandbox_option():
    """The ``-T sandbox=`` option every program task declares (one definition, so they validate alike)."""
    from sia_bench.harness import ParamSpec

    return ParamSpec(str, "bwrap", choices=MODES,
                     help="bwrap: OS boundary (namespaces, read-only libraries, no network, whole-tree limits); "
                          "process: weak mode without an OS boundary, only for trusted programs (recorded)")
