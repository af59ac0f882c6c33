"""Where a candidate's CPU time goes, seen from outside: the kernel samples the worker's instruction pointers.

The driver opens ``perf_event_open`` task-clock sampling events on every thread of the candidate's cgroup (inherited
by threads it starts later), on every core it may run on, for a few timed rounds chosen at random; the candidate
cannot see which. Each sampled address is mapped to the file it was executed from (``/proc/<pid>/maps``), and the
time is split into the candidate's own compiled kernels (artifacts of the trusted builder), torch / numpy / BLAS
compute libraries (a fallback on the cpu backend), native code the builder did not make (anonymous executable memory,
libraries written by the program), and the rest (the interpreter, libc, the OpenMP runtime). No code in the
candidate's process takes part, so nothing there can forge it. Needs perf events (root, or perf_event_paranoid <= 1).
"""

from __future__ import annotations

import bisect
import ctypes
import hashlib
import mmap
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK = 1, 1
SAMPLE_IP, SAMPLE_TID = 1, 2
FLAG_INHERIT, FLAG_EXCLUDE_KERNEL, FLAG_EXCLUDE_HV = 1 << 1, 1 << 5, 1 << 6
IOC_ENABLE, IOC_DISABLE = 0x2400, 0x2401
RECORD_SAMPLE = 9
RING_PAGES = 64  # data pages per ring buffer (a power of two), plus one metadata page
_SYSCALL = {"x86_64": 298, "aarch64": 241}.get(os.uname().machine)

# What an honest kernel's process runs besides its kernel: the interpreter and its standard library, the C, C++,
# math and OpenMP runtimes, and torch's binding/allocation glue (c10, libtorch_python). Any other library (torch's
# kernels in libtorch_cpu, numpy, BLAS, scipy, ...) is library compute.
RUNTIME_LIBS = re.compile(r"(?:libc|libm|libmvec|ld-linux[\w.-]*|libstdc\+\+|libgcc_s|libgomp[\w-]*|libpthread|libdl|"
                          r"librt|libffi[\w-]*|libutil|libz|libtorch_python|libc10|libshm|libpython[\d.]+|"
                          r"python[\d.]*)(?:\.so[\d.]*|-[\w.]+\.so[\d.]*)?$")
CATEGORIES = ("kernel", "compute_library", "unbuilt_native", "runtime")


@dataclass
class Profile:
    """Sample counts per category and per thread over the audited rounds."""

    period_us: float
    categories: Counter = field(default_factory=Counter)
    threads: Counter = field(default_factory=Counter)
    libraries: Counter = field(default_factory=Counter)
    lost: int = 0

    @property
    def total(self) -> int:
        return sum(self.categories.values())

    def share(self, category: str) -> float:
        return self.categories[category] / self.total if self.total else 0.0

    def outside_busiest(self, allowed: int) -> int:
        """Samples taken in threads other than the ``allowed`` busiest ones (a thread spawned per call has a small
        share of its own, but together they show up here; an honest single-threaded worker has none)."""
        return sum(sorted(self.threads.values(), reverse=True)[allowed:])

    def merge(self, other: "Profile") -> None:
        self.categories.update(other.categories)
        self.threads.update(other.threads)
        self.libraries.update(other.libraries)
        self.lost += other.lost

    def to_dict(self) -> dict:
        return {"samples": self.total, "period_us": self.period_us, "lost": self.lost,
                "share": {c: round(self.share(c), 4) for c in CATEGORIES},
                "threads": len(self.threads), "busiest_thread_share": round(max(self.threads.values(), default=0) /
                                                                            max(self.total, 1), 4), "top_libraries": dict(self.libraries.most_common(6))}


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _attr(period_ns: int) -> ctypes.Array:
    raw = bytearray(128)
    struct.pack_into("IIQQQQQ", raw, 0, PERF_TYPE_SOFTWARE, 128, PERF_COUNT_SW_TASK_CLOCK, period_ns,
                     SAMPLE_IP | SAMPLE_TID, 0, 0)
    struct.pack_into("Q", raw, 40, FLAG_INHERIT | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV)  # disabled=0: counts now
    return ctypes.create_string_buffer(bytes(raw), 128)


def unavailable() -> str | None:
    """Why sampling cannot run here, or None."""
    if _SYSCALL is None:
        return f"perf sampling is not wired for {os.uname().machine}"
    sampler = Sampler([os.getpid()], [0], 1_000_000)
    try:
        sampler.open()
    except OSError as err:
        return f"perf_event_open refused ({err}); run as root or set kernel.perf_event_paranoid <= 1"
    finally:
        sampler.close()
    return None


class Sampler:
    """Task-clock samples of some threads (and the threads they start) on some cores."""

    def __init__(self, tids: list[int], cpus: list[int], period_ns: int):
        self.tids, self.cpus, self.period_ns = tids, cpus, max(10_000, int(period_ns))
        self._fds: list[int] = []
        self._rings: list[mmap.mmap] = []

    def open(self) -> None:
        libc, attr = _libc(), _attr(self.period_ns)
        for tid in self.tids:
            for cpu in self.cpus:
                fd = libc.syscall(_SYSCALL, attr, tid, cpu, -1, 0)
                if fd < 0:
                    err = ctypes.get_errno()
                    if err == 3:  # ESRCH: the thread ended meanwhile
                        continue
                    self.close()
                    raise OSError(err, os.strerror(err))
                self._fds.append(fd)
                self._rings.append(mmap.mmap(fd, (1 + RING_PAGES) * mmap.PAGESIZE, mmap.MAP_SHARED,
                                             mmap.PROT_READ | mmap.PROT_WRITE))

    def stop(self) -> None:
        libc = _libc()
        for fd in self._fds:
            libc.ioctl(fd, IOC_DISABLE, 0)

    def samples(self) -> tuple[list[tuple[int, int, int]], int]:
        """(pid, tid, ip) of every sample, and how many records the rings dropped."""
        out, lost = [], 0
        size = RING_PAGES * mmap.PAGESIZE
        for ring in self._rings:
            head = struct.unpack_from("Q", ring, 1024)[0]
            tail = struct.unpack_from("Q", ring, 1032)[0]
            data = ring[mmap.PAGESIZE:]
            pos = max(tail, head - size)
            while pos + 8 <= head:
                kind, _, length = struct.unpack_from("IHH", data, pos % size)
                if length == 0:
                    break
                record = data[pos % size:pos % size + length] if pos % size + length <= size else \
                    bytes(data[(pos + i) % size] for i in range(length))
                if kind == RECORD_SAMPLE:
                    ip, pid, tid = struct.unpack_from("QII", record, 8)
                    out.append((pid, tid, ip))
                elif kind == 2:  # PERF_RECORD_LOST: id, count
                    lost += struct.unpack_from("Q", record, 16)[0]
                pos += length
        return out, lost

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        for fd in self._fds:
            os.close(fd)
        self._rings, self._fds = [], []


def read_maps(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of each executable mapping of ``pid``, sorted by address."""
    rows = []
    try:
        text = open(f"/proc/{pid}/maps").read()
    except OSError:
        return rows
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if "x" not in parts[1]:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        rows.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    return sorted(rows)


def _content_hash(pid: int, start: int, end: int, sizes: set[int]) -> str | None:
    """sha256 of the file behind a mapping, read through /proc/<pid>/map_files (what was mapped, not a name); None
    without reading it when its size is none of ``sizes`` (hashing libtorch's 500 MB took 0.7 s an audited round)."""
    try:
        with open(f"/proc/{pid}/map_files/{start:x}-{end:x}", "rb") as fh:
            if os.fstat(fh.fileno()).st_size not in sizes:
                return None
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def classify_path(path: str, trusted_roots: tuple[str, ...], stdlib_roots: tuple[str, ...]) -> str:
    """``trusted_roots``: read-only folders the program cannot write (the venv, /usr); ``stdlib_roots``: the
    interpreter's own installation, whose extension modules count as the interpreter."""
    name = os.path.basename(path.removesuffix(" (deleted)"))
    if path.startswith(("[vdso]", "[vsyscall]")):
        return "runtime"
    if not path or path.startswith("[") or path.startswith("/memfd:"):
        return "unbuilt_native"  # anonymous executable memory: JIT or hand-loaded machine code
    if not path.startswith(("/usr/", "/lib", "/bin/", "/sbin/") + trusted_roots + stdlib_roots):
        return "unbuilt_native"  # a library the program wrote or brought itself
    if RUNTIME_LIBS.fullmatch(name) or (path.startswith(stdlib_roots) and "site-packages" not in path):
        return "runtime"
    return "compute_library"


def profile(samples: list[tuple[int, int, int]], lost: int, period_ns: int, trusted_roots: tuple[str, ...],
            stdlib_roots: tuple[str, ...], kernel_hashes: dict[str, int]) -> Profile:
    """Attribute samples to categories. A mapping counts as the candidate's kernel only if its file content is an
    artifact the builder delivered (``kernel_hashes``: sha256 -> size of each), whatever it is named."""
    result = Profile(period_ns / 1e3, lost=lost)
    sizes = set(kernel_hashes.values())
    maps: dict[int, tuple[list[int], list[tuple[int, int, str, str]]]] = {}
    verdicts: dict[tuple[int, int], tuple[str, str]] = {}
    for pid, tid, ip in samples:
        if pid not in maps:
            rows = read_maps(pid)
            maps[pid] = ([r[0] for r in rows], rows)
        starts, rows = maps[pid]
        i = bisect.bisect_right(starts, ip) - 1
        row = rows[i] if i >= 0 and rows[i][0] <= ip < rows[i][1] else None
        if row is None:
            category, label = "unbuilt_native", "(unmapped)"
        else:
            if (pid, row[0]) not in verdicts:
                path = row[3]
                category = classify_path(path, trusted_roots, stdlib_roots)
                if category != "runtime" and path and _content_hash(pid, row[0], row[1], sizes) in kernel_hashes:
                    category = "kernel"
                verdicts[(pid, row[0])] = (category, os.path.basename(path) or "(anonymous)")
            category, label = verdicts[(pid, row[0])]
        result.categories[category] += 1
        result.threads[tid] += 1
        result.libraries[label] += 1
    return result
