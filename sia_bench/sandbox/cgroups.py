"""Whole-tree resource limits for a sandbox: one cgroup per sandboxed program (v2, or the v1 controllers).

Rlimits bind one process at a time (four forks each under a 2 GB address-space limit used 4.8 GB) and RLIMIT_NPROC
never binds root, so where a cgroup can be created the memory, process-count and CPU-set limits are put on the
cgroup, which every descendant joins at fork. A program joins before ``exec`` through a tiny ``sh`` wrapper (no
``preexec_fn``: the harness has threads). Where no cgroup is writable, :func:`create` returns None and the caller
falls back to rlimits and says so in its record.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpuacct", "cpuset")


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ('' key: the v2 unified hierarchy)."""
    out = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


@dataclass
class Cgroup:
    """The cgroup directories of one sandbox (one per v1 controller, or one v2 directory)."""

    version: int
    dirs: dict[str, Path] = field(default_factory=dict)  # controller ('' for v2) -> directory

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in set(self.dirs.values()):
            found |= {int(p) for p in _read(d / "cgroup.procs").split() if p.isdigit()}
        return found

    def kill_all(self, deadline_s: float = 3.0) -> None:
        """SIGKILL every process in the cgroup until it is empty (new forks are caught on the next pass)."""
        for d in set(self.dirs.values()):
            if (d / "cgroup.kill").exists():
                _write(d / "cgroup.kill", "1")
        end = time.monotonic() + deadline_s
        while (pids := self.pids()) and time.monotonic() < end:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def stats(self) -> dict[str, float]:
        """Peak memory, OOM kills and CPU seconds of the whole tree, as far as the controllers tell."""
        out: dict[str, float] = {}
        if self.version == 2:
            d = self.dirs[""]
            peak = _read(d / "memory.peak").strip()
            if peak.isdigit():
                out["memory_peak_mb"] = int(peak) / 2**20
            for line in _read(d / "memory.events").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    out["oom_kills"] = int(value)
            for line in _read(d / "cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    out["cpu_seconds"] = int(value) / 1e6
            return out
        if "memory" in self.dirs:
            peak = _read(self.dirs["memory"] / "memory.max_usage_in_bytes").strip()
            if peak.isdigit():
                out["memory_peak_mb"] = int(peak) / 2**20
            for line in _read(self.dirs["memory"] / "memory.oom_control").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    out["oom_kills"] = int(value)
            failcnt = _read(self.dirs["memory"] / "memory.failcnt").strip()
            if failcnt.isdigit():
                out["memory_limit_hits"] = int(failcnt)
        if "cpuacct" in self.dirs:
            usage = _read(self.dirs["cpuacct"] / "cpuacct.usage").strip()
            if usage.isdigit():
                out["cpu_seconds"] = int(usage) / 1e9
        return out

    def cpu_seconds(self) -> float | None:
        return self.stats().get("cpu_seconds")

    def remove(self) -> None:
        self.kill_all()
        for d in set(self.dirs.values()):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _v2_base() -> Path | None:
    if not (ROOT / "cgroup.controllers").exists():
        return None
    own = _own_cgroups().get("", "/").lstrip("/")
    base = ROOT / own
    needed = {"memory", "pids"}
    enabled = set(_read(base / "cgroup.subtree_control").split())
    if not needed <= enabled:
        for c in sorted(needed - enabled):
            _write(base / "cgroup.subtree_control", f"+{c}")
        enabled = set(_read(base / "cgroup.subtree_control").split())
    return base if needed <= enabled else None


PREFIX = "sia-sandbox-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(parent: Path) -> int:
    """Remove empty sandbox cgroups left under ``parent`` by a harness that died before closing them (their name
    carries the owner's pid); a live owner's cgroups and non-empty ones are left alone. Returns how many went."""
    removed = 0
    try:
        entries = [e for e in parent.iterdir() if e.name.startswith(PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        owner = entry.name[len(PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)) or _read(entry / "cgroup.procs").strip():
            continue
        try:
            entry.rmdir()
            removed += 1
        except OSError:
            pass
    return removed


def create(memory_mb: int | None, max_procs: int | None, cpus: list[int] | None = None) -> Cgroup | None:
    """A fresh cgroup with these limits, or None when no writable cgroup with memory and pids control exists.
    Empty cgroups of dead harnesses under the same parents are swept first."""
    name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    base = _v2_base()
    if base is not None:
        sweep_stale(base)
        d = base / name
        try:
            d.mkdir()
        except OSError:
            return None
        group = Cgroup(2, {"": d})
        ok = True
        if memory_mb:
            ok &= _write(d / "memory.max", str(memory_mb << 20))
            _write(d / "memory.swap.max", "0")  # absent without swap accounting
        if max_procs:
            ok &= _write(d / "pids.max", str(max_procs))
        if cpus and "cpuset" in _read(base / "cgroup.subtree_control").split():
            _write(d / "cpuset.cpus", ",".join(map(str, cpus)))
        if not ok:
            group.remove()
            return None
        return group
    own = _own_cgroups()
    group = Cgroup(1)
    for controller in V1_CONTROLLERS:
        mount = ROOT / controller
        if not mount.is_dir() or controller not in own:
            continue
        sweep_stale(mount / own[controller].lstrip("/"))
        d = mount / own[controller].lstrip("/") / name
        try:
            d.mkdir()
        except OSError:
            continue
        group.dirs[controller] = d
    if "memory" not in group.dirs or "pids" not in group.dirs:
        group.remove()
        return None
    ok = True
    if memory_mb:
        ok &= _write(group.dirs["memory"] / "memory.limit_in_bytes", str(memory_mb << 20))
        _write(group.dirs["memory"] / "memory.memsw.limit_in_bytes", str(memory_mb << 20))  # no swap, if accounted
    if max_procs:
        ok &= _write(group.dirs["pids"] / "pids.max", str(max_procs))
    if "cpuset" in group.dirs:
        d = group.dirs["cpuset"]
        parent = d.parent
        mems = _read(parent / "cpuset.mems").strip() or "0"
        allowed = _read(parent / "cpuset.cpus").strip()
        chosen = ",".join(map(str, cpus)) if cpus else allowed
        if not (_write(d / "cpuset.mems", mems) and _write(d / "cpuset.cpus", chosen)):
            d.rmdir()  # an unusable cpuset would refuse every process that joins it
            del group.dirs["cpuset"]
    if not ok:
        group.remove()
        return None
    return group
