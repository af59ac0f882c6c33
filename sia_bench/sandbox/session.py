"""A sandboxed program as a supervised session: start it, exchange framed messages, end it and everything it forked.

The harness never blocks on anything the program controls: every read and write has a deadline and a size cap,
stdout and stderr are drained into bounded tails, results arrive only over a pipe the harness owns (never from a
file the program could swap for a FIFO, a symlink or ``/dev/zero``), and ending a session kills the whole process
tree (the PID namespace dies with its first process; the cgroup is emptied as a second fence).
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sia_bench.sandbox import cgroups
from sia_bench.sandbox.boundary import (INSIDE_KIT, INSIDE_WORK, GROUP, PASSWD, Limits, Mounts, SandboxUnavailable,
                                        bwrap_args, check_mode, child_env, join_args, python_paths, rlimit_args)
from sia_bench.sandbox.channel import ChannelError, Framer, Message, encode
from sia_bench.sandbox.untrusted import quote

TAIL_BYTES = 8192
MAX_MESSAGES = 4096  # per one-shot run
_MODE_CHECKED: dict[str, str | None] = {}


class SandboxError(RuntimeError):
    """The session failed; ``kind`` is one of timeout, exited, protocol, result_too_large, memory, start."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def require_mode(mode: str) -> None:
    """Raise :class:`SandboxUnavailable` unless ``mode`` can run here (checked once per process)."""
    if mode not in _MODE_CHECKED:
        _MODE_CHECKED[mode] = check_mode(mode)
    if _MODE_CHECKED[mode]:
        raise SandboxUnavailable(_MODE_CHECKED[mode])


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@dataclass
class Tail:
    """The last bytes of a stream and how many there were in all."""

    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > TAIL_BYTES:
            del self.data[:-TAIL_BYTES]

    def text(self) -> str:
        prefix = f"[... {self.total - len(self.data)} earlier bytes dropped]\n" if self.total > len(self.data) else ""
        return prefix + self.data.decode("utf-8", "replace")


class Session:
    """One sandboxed program. ``argv[0]`` 'python' runs the sandbox's interpreter on a script in /work or /kit."""

    def __init__(self, argv: list[str], *, files: dict[str, bytes] | None = None, limits: Limits = Limits(),
                 mode: str = "bwrap", readonly: list[tuple[str, str]] | None = None, env: dict[str, str] | None = None,
                 shared_fds: list[int] | None = None, gpu: bool = False, hidden: list[str] | None = None,
                 keep_all: bool = False):
        """``hidden``: host paths the program must not see even inside a mounted folder (e.g. a dataset shipped
        in site-packages). ``keep_all``: the caller keeps every message (a one-shot run), so the cap on held
        result bytes counts everything ever sent instead of what is not yet received."""
        require_mode(mode)
        self.limits, self.mode = limits, mode
        self.started = time.monotonic()
        self.deadline = self.started + limits.wall_s
        self.stdout, self.stderr = Tail(), Tail()
        self.returncode: int | None = None
        self.stats: dict[str, Any] = {"mode": mode}
        self._keep_all = keep_all
        per_message = int(limits.result_mb * 2**20)
        total = limits.results_total_mb
        held = int(total * 2**20) if total is not None else (2 * per_message + 2**20 if keep_all else 64 * per_message)
        self._framer = Framer(per_message, held)
        self._inbox: list[Message] = []
        self._closed = False
        self.cgroup = cgroups.create(limits.memory_mb, limits.max_procs, list(limits.cpus) if limits.cpus else None)
        self.stats["limits"] = "cgroup-v%d" % self.cgroup.version if self.cgroup else "rlimit-per-process"
        res_r, res_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        owned = [res_w, cmd_r]
        inputs: dict[str, int] = {}
        self._tmpdir = None
        try:
            env_vars = child_env(limits, res_w, cmd_r, env, home="/tmp" if mode == "bwrap" else "")
            py = python_paths()
            if argv and argv[0] == "python":
                argv = [py["exe"][0], "-I", "-S", f"{INSIDE_KIT if mode == 'bwrap' else self._kit()}/boot.py",
                        *argv[1:]]
            if mode == "bwrap":
                for name, data in (files or {}).items():
                    inputs[name] = _memfd(name, data)
                etc = {"/etc/passwd": _memfd("passwd", PASSWD.encode()), "/etc/group": _memfd("group", GROUP.encode())}
                owned += list(etc.values())
                mounts = Mounts(files=inputs, readonly=list(readonly or []), data_fds=etc, hidden=list(hidden or []))
                cmd = bwrap_args(mounts, limits, env_vars, gpu=gpu) + ["--", *argv]
                cwd = "/"
            else:
                cwd, cmd = self._weak_layout(files or {}, readonly or [], env_vars, hidden or []), argv
            procs = self.cgroup.procs_files if self.cgroup else []
            mem_fenced = bool(self.cgroup and limits.memory_mb)
            full = join_args(procs) + rlimit_args(limits, mem_fenced or gpu, bool(self.cgroup)) + cmd
            if limits.cpus and not self.cgroup_has_cpuset:
                full = ["taskset", "-c", ",".join(map(str, limits.cpus)), *full]
            self.proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=cwd, env=env_vars if mode != "bwrap" else
                                         {"PATH": "/usr/bin:/bin"}, start_new_session=True,
                                         pass_fds=[res_w, cmd_r, *inputs.values(), *owned[2:], *(shared_fds or [])])
        except BaseException:
            for fd in [res_r, cmd_w, *owned, *inputs.values()]:
                os.close(fd)
            if self.cgroup:
                self.cgroup.remove()
            raise
        for fd in [*owned, *inputs.values()]:
            os.close(fd)
        self._res, self._cmd = res_r, cmd_w
        for fd in (res_r, cmd_w, self.proc.stdout.fileno(), self.proc.stderr.fileno()):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._sel = selectors.DefaultSelector()
        self._sel.register(res_r, selectors.EVENT_READ, "result")
        self._sel.register(self.proc.stdout, selectors.EVENT_READ, "stdout")
        self._sel.register(self.proc.stderr, selectors.EVENT_READ, "stderr")

    # -- layout of the weak mode -------------------------------------------------------------------------------------
    @property
    def cgroup_has_cpuset(self) -> bool:
        return bool(self.cgroup and ("cpuset" in self.cgroup.dirs or self.cgroup.version == 2))

    def _kit(self) -> str:
        from sia_bench.sandbox.boundary import KIT

        return str(KIT)

    def _weak_layout(self, files: dict[str, bytes], readonly: list[tuple[str, str]], env: dict[str, str],
                     hidden: list[str]) -> str:
        import json
        import tempfile

        self._tmpdir = tempfile.mkdtemp(prefix="sia-sandbox-weak-")
        for name, data in files.items():
            path = os.path.join(self._tmpdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
        env["HOME"] = env["TMPDIR"] = self._tmpdir
        env["SIA_TRIPWIRE"] = json.dumps([self._tmpdir, *(host for host, _ in readonly)])
        env["SIA_TRIPWIRE_DENY"] = json.dumps([os.path.realpath(p) for p in hidden])
        env["SIA_WORK"] = self._tmpdir
        return self._tmpdir

    # -- I/O ---------------------------------------------------------------------------------------------------------
    def _remaining(self, deadline: float | None) -> float:
        end = min(self.deadline, deadline) if deadline is not None else self.deadline
        return end - time.monotonic()

    def _pump(self, timeout: float) -> bool:
        """Read whatever is ready within ``timeout``; False once every stream is closed."""
        if not self._sel.get_map():
            return False
        for key, _ in self._sel.select(max(0.0, timeout)):
            try:
                chunk = os.read(key.fd, 1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._sel.unregister(key.fileobj)
                continue
            if key.data == "result":
                try:
                    self._inbox += self._framer.feed(chunk)
                except ChannelError as err:
                    self.kill()
                    kind = "result_too_large" if "exceeds" in str(err) or "more than" in str(err) else "protocol"
                    raise SandboxError(kind, str(err)) from None
            else:
                (self.stdout if key.data == "stdout" else self.stderr).add(chunk)
        return True

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; raises SandboxError on timeout (the session is then killed) or when the program ends."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        while not self._inbox:
            left = self._remaining(deadline)
            if left <= 0:
                self.kill()
                which = "the session's wall-time limit" if deadline is None or self.deadline <= deadline else \
                    f"{timeout:g} s"
                raise SandboxError("timeout", f"timed out: no result within {which} (killed)")
            if not self._pump(min(left, 0.5)) and not self._inbox:
                self._reap(1.0)
                raise SandboxError("exited", self.describe_exit())
            if self.proc.poll() is not None and not self._inbox:
                self._drain(0.2)
                if not self._inbox:
                    raise SandboxError("exited", self.describe_exit())
        message = self._inbox.pop(0)
        if not self._keep_all:
            self._framer.release(message)
        return message

    def send(self, header: dict[str, Any], arrays: list[np.ndarray] | tuple = (), timeout: float = 10.0) -> None:
        data = memoryview(encode(header, arrays))
        end = min(self.deadline, time.monotonic() + timeout)
        while data:
            if time.monotonic() > end:
                self.kill()
                raise SandboxError("timeout", "the program stopped reading its commands (killed)")
            try:
                data = data[os.write(self._cmd, data):]
            except BlockingIOError:
                self._pump(0.01)
            except BrokenPipeError:
                raise SandboxError("exited", self.describe_exit()) from None

    def _drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self._pump(0.05):
            pass

    def _reap(self, seconds: float) -> None:
        try:
            self.returncode = self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait(self) -> int | None:
        """Wait for the program to end by itself within its wall time, draining its output; kill it after."""
        while self.proc.poll() is None and self._remaining(None) > 0:
            self._pump(min(0.2, max(0.0, self._remaining(None))))
        if self.proc.poll() is None:
            self.kill()
            return None
        self._drain(0.2)
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        """End the program and every process it made; never blocks for long."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup:
            self.cgroup.kill_all()
        try:
            self.returncode = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    # -- ending --------------------------------------------------------------------------------------------------------
    def describe_exit(self) -> str:
        code = self.proc.poll()
        stats = self.cgroup.stats() if self.cgroup else {}
        if stats.get("oom_kills"):
            return f"memory limit exceeded ({self.limits.memory_mb} MB for the whole process tree; killed)"
        last = [ln for ln in self.stderr.text().strip().splitlines() if ln.strip()]
        if code is None:
            return "the program closed its result channel and kept running"
        if code < 0 or code > 128:
            sig = -code if code < 0 else code - 128
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            hint = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed (memory or CPU limit)",
                    "SIGXCPU": "CPU-time limit exceeded", "SIGABRT": "aborted", "SIGBUS": "bus error",
                    "SIGXFSZ": "file-size limit exceeded"}.get(name, name)
            return f"crashed: {hint} ({name})"
        if last and "MemoryError" in last[-1]:
            return "memory limit exceeded (MemoryError)"
        if code == 97:
            return "the sandbox could not join its cgroup"
        return f"exited with status {code}" + (f"; last stderr line: {quote(last[-1], 300)}" if last else "")

    def close(self) -> dict[str, Any]:
        """Kill what is left, free the cgroup and the pipes; returns the resource statistics."""
        if self._closed:
            return self.stats
        self._closed = True
        if self.proc.poll() is None:
            self.kill()
        if self.cgroup:
            self.stats.update(self.cgroup.stats())
            self.cgroup.remove()
        self.stats["seconds"] = time.monotonic() - self.started
        self._sel.close()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
        for fd in (self._res, self._cmd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._tmpdir:
            import shutil

            shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.stats

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class SandboxResult:
    """What a one-shot program run gave back: its messages (validated), or why it failed."""

    messages: list[Message]
    seconds: float
    returncode: int | None
    stdout: str
    stderr: str
    error: str | None = None
    error_kind: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return self.error_kind == "timeout"

    def last(self, kind: str) -> Message | None:
        found = [m for m in self.messages if m.kind == kind]
        return found[-1] if found else None


def run(argv: list[str], *, files: dict[str, bytes] | None = None, limits: Limits = Limits(), mode: str = "bwrap",
        readonly: list[tuple[str, str]] | None = None, env: dict[str, str] | None = None, expect: str = "result",
        gpu: bool = False, hidden: list[str] | None = None) -> SandboxResult:
    """Run a program to its end (or its wall-time limit); collect the messages it sent (at most
    ``MAX_MESSAGES``, and at most ``limits.results_total_mb`` in all). Never raises for anything the program does;
    raises :class:`SandboxUnavailable` when the boundary cannot start. ``stdout``/``stderr`` of the result are
    raw program text: quote them (:mod:`~sia_bench.sandbox.untrusted`) before showing them to a model."""
    start = time.monotonic()
    messages: list[Message] = []
    error = kind = None
    try:
        session = Session(argv, files=files, limits=limits, mode=mode, readonly=readonly, env=env, gpu=gpu,
                          hidden=hidden, keep_all=True)
    except SandboxUnavailable:
        raise
    except OSError as err:
        return SandboxResult([], time.monotonic() - start, None, "", "", f"the sandbox did not start: {err}", "start")
    with session:
        try:
            while True:
                messages.append(session.recv())
                if len(messages) > MAX_MESSAGES:
                    session.kill()
                    raise SandboxError("result_too_large", f"the program sent more than {MAX_MESSAGES} messages")
        except SandboxError as err:
            if err.kind != "exited":
                error, kind = str(err), err.kind
        if error is None:
            session.wait()
            code = session.returncode
            if code is None:
                error, kind = f"timed out after {limits.wall_s:g} s (killed)", "timeout"
            elif code != 0:
                error, kind = session.describe_exit(), "exited"
            elif not any(m.kind == expect for m in messages):
                error, kind = "the program sent no result", "no_result"
                if (session.cgroup.stats() if session.cgroup else {}).get("oom_kills"):
                    error, kind = session.describe_exit(), "memory"
        elif kind == "timeout":
            error = f"timed out after {limits.wall_s:g} s (killed)"
        stats = session.close()
        return SandboxResult(messages, time.monotonic() - start, session.returncode, session.stdout.text(),
                             session.stderr.text(), error, kind, stats)


__all__ = ["INSIDE_WORK", "Session", "SandboxError", "SandboxResult", "run", "require_mode"]
