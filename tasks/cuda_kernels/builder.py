"""The trusted builder: compiles kernel sources for candidates, in a throw-away sandbox, into a cache only it writes.

A candidate's ``load_cpp`` / ``load_cuda`` sends its source and flags to the driver, which calls :meth:`Builder.build`.
The compiler runs in its own one-shot sandbox that sees nothing but the source (no cache, no problem files, no
network), and the artifact comes back over the sandbox's result channel. The cache is keyed by the content hash of
(backend, compiler identity, flags, source), so a key always names the product of exactly those inputs, and no
candidate process can write it: nothing a candidate touches outlives its own worker.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sia_bench.sandbox import Limits, run

COMPILE_TIMEOUT_S = 150
MAX_SOURCE_BYTES = 1 << 20
MAX_FLAGS = 32
_CPP_FLAG = re.compile(r"-O[0-3sz]|-Ofast|-g[0-3]?|-pthread|-std=(?:c|gnu)\+\+(?:11|14|17|20)|"
                       r"-m(?:arch|tune)=[\w.-]+|-m(?:no-)?[a-z0-9][\w.-]*|-f(?!plugin)(?!dump)[a-z0-9][\w.+=-]*|"
                       r"-D[A-Za-z_]\w*(?:=[\w.+-]*)?|-U[A-Za-z_]\w*|-W(?![alp],)[\w=-]*")
_NVCC_FLAG = re.compile(r"-O[0-3]|--use_fast_math|-use_fast_math|-lineinfo|-res-usage|--expt-relaxed-constexpr|"
                        r"--extra-device-vectorization|-maxrregcount=\d+|--maxrregcount=\d+|-std=c\+\+(?:14|17|20)|"
                        r"--?(?:ftz|prec-div|prec-sqrt|fmad)=(?:true|false)|-D[A-Za-z_]\w*(?:=[\w.+-]*)?|"
                        r"-Xptxas=-v|--ptxas-options=-v")
BUILD_SCRIPT = b'''import json, os, subprocess, sys
import sandbox_child as sc
cfg = json.load(open("build.json"))
try:
    p = subprocess.run(cfg["command"], capture_output=True, text=True, errors="replace", timeout=cfg["timeout"])
except FileNotFoundError:
    sc.send({"kind": "result", "ok": False, "message": "compiler %r not found" % cfg["command"][0]})
    sys.exit(0)
except subprocess.TimeoutExpired:
    sc.send({"kind": "result", "ok": False, "message": "compilation took longer than %d s" % cfg["timeout"]})
    sys.exit(0)
log = (p.stdout + p.stderr)[-3000:]
if p.returncode != 0 or not os.path.exists(cfg["out"]):
    sc.send({"kind": "result", "ok": False, "message": "%s failed (status %d)" % (os.path.basename(cfg["command"][0]),
            p.returncode), "log": log})
else:
    import numpy as np
    sc.send({"kind": "result", "ok": True, "log": log}, [np.fromfile(cfg["out"], dtype=np.uint8)])
'''


class BuildError(RuntimeError):
    """The source or flags were refused, or the compiler failed; ``log`` holds its output (trimmed)."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log[-3000:]


@dataclass(frozen=True)
class Artifact:
    data: bytes
    key: str
    cache_hit: bool
    file_name: str  # what the worker names it: the compute audit recognises builder artifacts by this prefix
    log: str = ""


ARTIFACT_PREFIX = "siak-"


def _compiler_identity(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return path
    return f"{os.path.realpath(path)} | {out.splitlines()[0] if out else ''} | {out.splitlines()[-1] if out else ''}"


def check_flags(tag: str, flags: str) -> list[str]:
    """The flags as a list, or BuildError naming the first one not allowed (plugins, wrappers, response files,
    output or include paths: nothing that reaches beyond the source)."""
    try:
        tokens = shlex.split(flags or "")
    except ValueError as err:
        raise BuildError(f"compiler flags do not parse: {err}") from None
    if len(tokens) > MAX_FLAGS:
        raise BuildError(f"at most {MAX_FLAGS} compiler flags, got {len(tokens)}")
    pattern = _CPP_FLAG if tag == "cpu" else _NVCC_FLAG
    for token in tokens:
        if not pattern.fullmatch(token):
            raise BuildError(f"compiler flag {token!r} is not allowed (optimisation, target, warning and -D flags "
                             f"only)")
    return tokens


@dataclass
class Builder:
    """Compiles and caches; one per task. ``gpu_arch`` is the target for nvcc (sm_90 when there is no GPU)."""

    cache_dir: Path
    mode: str = "bwrap"
    gpu_arch: str = "sm_90"
    stats: dict[str, float] = field(default_factory=lambda: {"compiles": 0, "cache_hits": 0, "seconds": 0.0})

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._ident: dict[str, str] = {}

    def _compiler(self, tag: str) -> str:
        if tag == "cpu":
            found = shutil.which("g++")
        else:
            found = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc")
                                             else None)
        if not found:
            raise BuildError("g++ not found" if tag == "cpu" else "nvcc not found: CUDA sources cannot be compiled here")
        return found

    def build(self, tag: str, source: str, flags: str) -> Artifact:
        if tag not in ("cpu", "cuda"):
            raise BuildError(f"unknown kernel kind {tag!r}")
        if not isinstance(source, str) or len(source.encode()) > MAX_SOURCE_BYTES:
            raise BuildError(f"kernel source must be text of at most {MAX_SOURCE_BYTES >> 10} KiB")
        tokens = check_flags(tag, flags)
        compiler = self._compiler(tag)
        ident = self._ident.setdefault(tag, _compiler_identity(compiler))
        extra = [self.gpu_arch] if tag == "cuda" else []
        key = hashlib.sha256("\0".join([tag, ident, *extra, *tokens, source]).encode()).hexdigest()[:32]
        suffix = ".so" if tag == "cpu" else ".cubin"
        path = self.cache_dir / f"{tag}-{key}{suffix}"
        name = f"{ARTIFACT_PREFIX}{key[:20]}{suffix}"
        if path.exists():
            self.stats["cache_hits"] += 1
            return Artifact(path.read_bytes(), key, True, name)
        src = "kernel.cpp" if tag == "cpu" else "kernel.cu"
        out = "/tmp/out" + suffix
        if tag == "cpu":
            command = [compiler, *tokens, "-shared", "-fPIC", "-std=c++17", src, "-o", out]
        else:
            command = [compiler, "-cubin", f"-arch={self.gpu_arch}", *tokens, src, "-o", out]
        import json

        start = time.monotonic()
        result = run(["python", "build.py"], files={"build.py": BUILD_SCRIPT, src: source.encode(),
                                                    "build.json": json.dumps({"command": command, "out": out,
                                                                              "timeout": COMPILE_TIMEOUT_S}).encode()},
                     limits=Limits(wall_s=COMPILE_TIMEOUT_S + 30, memory_mb=4096, max_procs=32, threads=1,
                                   result_mb=256), mode=self.mode)
        self.stats["seconds"] += time.monotonic() - start
        message = result.last("result")
        if message is None:
            raise BuildError(f"the compiler sandbox failed: {result.error}", result.stderr)
        if not message.header.get("ok") or not message.arrays:
            raise BuildError(str(message.header.get("message", "compilation failed")), str(message.header.get("log", "")))
        data = message.arrays[0].tobytes()
        self.stats["compiles"] += 1
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, delete=False, prefix=".tmp-") as fh:
            fh.write(data)
        os.replace(fh.name, path)
        return Artifact(data, key, False, name, str(message.header.get("log", "")))
