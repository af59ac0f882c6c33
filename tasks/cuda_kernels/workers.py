"""Host side of the kernel workers: a sandboxed :class:`Worker` per role, driven by numbered commands, and a warm
pool so a candidate worker (torch already imported) is waiting before the candidate exists.

The driver owns both pipes and a Unix socket per worker (for handing over memfds). A reply must carry the number of
the command it answers; anything else from a candidate (a stray message, a compile request outside ``load``, a
crash, a timeout) is a :class:`WorkerError` naming what happened.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sia_bench.sandbox import Limits, Message, SandboxError, Session

from .shm import Arena

SANDBOXED = Path(__file__).with_name("sandboxed")
COMMON_FILES = ("kit.py", "kernel_args.py")
ROLE_FILES = {"candidate": ("candidate_worker.py", "sia_kernels.py"), "reference": ("reference_worker.py",)}
LONG_LIVED_S = 7 * 24 * 3600.0  # sessions outlive any one candidate; the driver enforces per-call deadlines
# Identical, fault-free allocation in every worker: glibc's adaptive mmap/trim thresholds otherwise depend on each
# process's history, and eager was measured paying ~350 us a call of page faults a candidate did not (softmax, K=8).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"


class WorkerError(RuntimeError):
    """A worker failed: ``kind`` is crash, timeout, protocol, memory or error (an exception it reported)."""

    def __init__(self, kind: str, message: str, stage: str = "", log: str = ""):
        super().__init__(message)
        self.kind, self.stage, self.log = kind, stage, log


@dataclass(frozen=True)
class WorkerConfig:
    """Everything that makes two workers interchangeable (a warm one can serve any candidate with this config)."""

    role: str  # candidate | reference
    backend: str = "cpu"
    threads: int = 1
    cpus: tuple[int, ...] | None = None
    mode: str = "bwrap"
    gpu: bool = False
    memory_mb: int | None = 4096

    def limits(self) -> Limits:
        return Limits(wall_s=LONG_LIVED_S, memory_mb=self.memory_mb, max_procs=64, threads=self.threads,
                      result_mb=1024 if self.role == "reference" else 64, cpus=self.cpus, tmpfs_mb=2048)


def worker_files(role: str) -> dict[str, bytes]:
    return {name: (SANDBOXED / name).read_bytes() for name in (*COMMON_FILES, *ROLE_FILES[role])}


class Worker:
    """One sandboxed worker process tree. Every command waits for its own numbered reply."""

    def __init__(self, config: WorkerConfig, extra_files: dict[str, bytes] | None = None):
        self.config = config
        self.info: dict[str, Any] | None = None
        self._seq = 0
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {"SIA_FD_SOCKET": str(child.fileno()), "SIA_BACKEND": config.backend, "SIA_GPU": "1" if config.gpu
               else "0", "OMP_WAIT_POLICY": "PASSIVE", "OMP_DYNAMIC": "false", "GLIBC_TUNABLES": MALLOC_TUNABLES}
        try:
            self.session = Session(["python", f"{config.role}_worker.py"],
                                   files={**worker_files(config.role), **(extra_files or {})}, limits=config.limits(),
                                   mode=config.mode, env=env, shared_fds=[child.fileno()], gpu=config.gpu)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.sock = parent
        self.started = time.monotonic()
        self._pid: int | None = None
        self._mem: int | None = None

    # -- life cycle ------------------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        if self.info is None:
            message = self._recv(timeout, "start-up")
            if message.kind != "ready":
                raise WorkerError("protocol", f"the worker said {message.kind!r} before it was ready", "start-up")
            self.info = dict(message.header)
        return self.info

    def main_pid(self) -> int | None:
        """The host pid of the worker's Python process: the one in its cgroup whose innermost pid is the pid the
        worker reported when it was ready (before any candidate code ran)."""
        if self._pid is None and self.info and isinstance(self.info.get("pid"), int):
            wanted = self.info["pid"]
            candidates = self.session.cgroup.pids() if self.session.cgroup else {self.session.proc.pid}
            for pid in candidates:
                try:
                    line = next(ln for ln in open(f"/proc/{pid}/status") if ln.startswith("NSpid:"))
                except (OSError, StopIteration):
                    continue
                if int(line.split()[-1]) == wanted:
                    self._pid = pid
                    break
        return self._pid

    def page_faults(self) -> int | None:
        """Minor page faults of the worker's process so far (kernel counter)."""
        pid = self.main_pid()
        try:
            return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7]) if pid else None
        except (OSError, IndexError, ValueError):
            return None

    def read_memory(self, address: int, into: memoryview) -> None:
        """Copy bytes out of the worker's address space (a kernel read: no code of the worker runs)."""
        if self._mem is None:
            pid = self.main_pid()
            if pid is None:
                raise WorkerError("protocol", "the worker's process could not be found")
            self._mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            n = os.preadv(self._mem, [into], address)
        except OSError as err:
            raise WorkerError("output", f"an output at 0x{address:x} could not be read ({err.strerror})") from None
        if n != len(into):
            raise WorkerError("output", f"an output at 0x{address:x} is shorter than its shape says")

    def alive(self) -> bool:
        return self.session.proc.poll() is None

    def close(self) -> dict[str, Any]:
        try:
            self.sock.close()
            if self._mem is not None:
                os.close(self._mem)
        except OSError:
            pass
        return self.session.close()

    # -- messages --------------------------------------------------------------------------------------------------
    def _recv(self, timeout: float, stage: str) -> Message:
        try:
            return self.session.recv(timeout=max(0.001, timeout))
        except SandboxError as err:
            kind = {"timeout": "timeout", "memory": "memory"}.get(err.kind, "crash" if err.kind == "exited"
                                                                  else "protocol")
            if kind == "crash" and "memory limit" in str(err):
                kind = "memory"
            raise WorkerError(kind, str(err), stage, self.session.stderr.text()[-1500:]) from None

    def request(self, header: dict[str, Any], arrays: list | tuple = (), timeout: float = 60.0,
                on_compile: Callable[[dict[str, Any]], tuple[dict[str, Any], list]] | None = None
                ) -> tuple[Message, float]:
        """Send one command and wait for its reply; returns (reply, seconds from send to reply on this clock)."""
        self._seq += 1
        seq, stage = self._seq, str(header.get("cmd"))
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        try:
            self.session.send({**header, "seq": seq}, arrays, timeout=timeout)
        except SandboxError as err:
            raise WorkerError("crash" if err.kind == "exited" else err.kind, str(err), stage) from None
        while True:
            message = self._recv(deadline - time.monotonic(), stage)
            elapsed = time.perf_counter() - start
            if message.kind == "compile" and on_compile is not None:
                reply, blobs = on_compile(message.header)
                self.session.send(reply, blobs, timeout=max(1.0, deadline - time.monotonic()))
                continue
            if message.header.get("seq") != seq:
                self.session.kill()
                raise WorkerError("protocol", f"unexpected message {message.kind[:40]!r} while waiting for the reply "
                                              f"to {stage!r}", stage)
            if message.kind == "error":
                h = message.header
                raise WorkerError("error", str(h.get("message", "error"))[:800], str(h.get("stage", stage)),
                                  str(h.get("log", ""))[-2000:])
            return message, elapsed

    def send_arenas(self, arenas: list[tuple[Arena, bool]], timeout: float = 30.0) -> None:
        """Hand memfds over (writable or not, as each worker may map them) and have the worker map them."""
        socket.send_fds(self.sock, [b"a"], [a.fd for a, _ in arenas])
        self.request({"cmd": "arenas", "arenas": [a.spec(w) for a, w in arenas]}, timeout=timeout)

    # -- what the driver measures from outside ---------------------------------------------------------------------
    def cpu_seconds(self) -> float | None:
        cgroup = self.session.cgroup
        return cgroup.cpu_seconds() if cgroup else None

    def pin(self, cpus: tuple[int, ...]) -> str:
        """Move the whole tree onto ``cpus``. Through the cgroup's cpuset (the program cannot undo it) where there is
        one, else by setting each thread's affinity (which a program can undo). Returns how it was pinned."""
        cgroup = self.session.cgroup
        wanted = ",".join(map(str, cpus))
        for d in (set(cgroup.dirs.values()) if cgroup else ()):
            path = d / "cpuset.cpus"
            if path.exists():
                try:
                    path.write_text(wanted)
                    if _cpu_list(path.read_text()) == set(cpus):
                        return "cgroup cpuset"
                except OSError:
                    pass
        for tid in self.thread_ids() or [self.session.proc.pid]:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass
        return "affinity (best-effort)"

    def thread_ids(self) -> list[int]:
        """Every thread of the worker's process tree (host ids), from its cgroup; [] without one."""
        cgroup = self.session.cgroup
        if not cgroup:
            return []
        found: set[int] = set()
        for d in set(cgroup.dirs.values()):
            for name in ("tasks", "cgroup.threads"):
                try:
                    found |= {int(t) for t in (d / name).read_text().split() if t.isdigit()}
                except OSError:
                    continue
        return sorted(found)


def _cpu_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.strip().split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out |= set(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return out


class WarmPool:
    """Keeps started workers per config, so their interpreter start and torch import happen while the previous
    candidate is scored (or the model writes), never on a clock. Two per config: a scoring takes one for the
    candidate and one for its eager twin."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._spares: dict[WorkerConfig, list[Worker]] = {}

    def take(self, config: WorkerConfig, ready_timeout: float = 120.0) -> Worker:
        spares = self._spares.get(config) or []
        worker = spares.pop(0) if spares else None
        if worker is None or not worker.alive():
            if worker is not None:
                worker.close()
            worker = Worker(config)
        try:
            worker.wait_ready(ready_timeout)
        except WorkerError:
            worker.close()
            worker = Worker(config)
            worker.wait_ready(ready_timeout)
        return worker

    def refill(self, config: WorkerConfig) -> None:
        spares = self._spares.setdefault(config, [])
        while len(spares) < self.depth:
            spares.append(Worker(config))

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until every spare has finished starting, so none competes for the CPU while something is timed."""
        for spares in self._spares.values():
            for worker in list(spares):
                try:
                    worker.wait_ready(timeout)
                except WorkerError:
                    worker.close()
                    spares.remove(worker)

    def close(self) -> None:
        for spares in self._spares.values():
            for worker in spares:
                worker.close()
        self._spares.clear()
