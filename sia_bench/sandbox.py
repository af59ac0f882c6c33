"""Run model-written code in a subprocess with wall-time, CPU-time and memory limits.

Code written by a model never runs in the harness's process. The child gets a fresh session (its whole process group
is killed on timeout), ``RLIMIT_AS``/``RLIMIT_CPU``/no core dumps, one thread per BLAS, a scrubbed environment, and an
audit hook that refuses to open files outside the directories it is given (plus the Python installation, for
imports). The audit hook is a tripwire against accidents and reward hacks, not a security boundary against a
determined attacker; run untrusted models inside a container as well.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BOOT = Path(__file__).with_name("_sandbox_boot.py")
MAX_LOG = 4000


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    output: Any = None  # the JSON the child wrote to result.json, if any
    error: str | None = None  # one line: why it failed, for feedback
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def _limits(memory_mb: int, cpu_s: int):
    def apply() -> None:
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _describe_exit(code: int, stderr: str) -> str:
    if code < 0:
        sig = signal.Signals(-code).name
        hint = {"SIGSEGV": "segmentation fault", "SIGKILL": "killed (memory or CPU limit)",
                "SIGXCPU": "CPU-time limit exceeded", "SIGABRT": "aborted", "SIGBUS": "bus error"}.get(sig, sig)
        return f"crashed: {hint} ({sig})"
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    if last and "MemoryError" in last[-1]:
        return "memory limit exceeded (MemoryError)"
    return f"exited with status {code}: {last[-1][:300] if last else 'no error output'}"


def run_python(script: Path, args: list[str] | None = None, *, workdir: Path, timeout_s: float = 60.0,
               memory_mb: int = 4096, readable: list[Path] | None = None, env: dict[str, str] | None = None,
               threads: int = 1) -> SandboxResult:
    """Run ``script`` with ``args`` in ``workdir``; the child may write ``result.json`` there.

    ``readable`` lists extra directories the child may open (``workdir`` always is). Never raises for anything
    the child does: every failure comes back as a :class:`SandboxResult` with ``error`` set.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result_file = workdir / "result.json"
    result_file.unlink(missing_ok=True)
    allowed = [str(workdir)] + [str(Path(p).resolve()) for p in readable or []]
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "TMPDIR": str(workdir),
        "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads), "NUMBA_CACHE_DIR": str(workdir / ".numba"),
        "SIA_SANDBOX_ALLOWED": json.dumps(allowed),
        **{k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_CORETYPE", "OPENBLAS_L2", "CUDA_", "TRITON_"))},
        **(env or {}),
    }
    cmd = [sys.executable, str(_BOOT), str(Path(script).resolve()), *(args or [])]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=workdir, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_limits(memory_mb, int(timeout_s) + 5), text=True, errors="replace")
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    res = SandboxResult(proc.returncode, stdout[-MAX_LOG:], stderr[-MAX_LOG:], seconds, timed_out)
    if timed_out:
        res.error = f"timed out after {timeout_s:g} s (killed)"
    elif proc.returncode != 0:
        res.error = _describe_exit(proc.returncode, stderr)
    if result_file.exists():
        try:
            res.output = json.loads(result_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            res.error = res.error or f"result.json is not valid JSON: {err}"
    elif res.error is None:
        res.error = "the program wrote no result"
    return res
