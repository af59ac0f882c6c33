"""The scene for hostile programs: the real scrna task (pbmc68k, whose source file sits inside the mounted
site-packages), host listeners a program must not reach, a secret the harness holds, canaries outside the sandbox,
and a scan for processes that outlive their program."""

from __future__ import annotations

import os
import secrets
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sia_bench.sandbox import check_mode
from sia_bench.sandbox.boundary import python_paths
from sia_bench.task import TaskError

TIMEOUT_S = 5.0
GRACE_S = 5.0
SECRET_NAME = "SIA_SECURITY_TEST_API_KEY"
BWRAP_MISSING = check_mode("bwrap")


@dataclass
class Listeners:
    tcp: socket.socket
    udp: socket.socket
    abstract: socket.socket
    unix: socket.socket
    abstract_name: str
    unix_path: str

    def received(self) -> list[str]:
        """What reached any listener (it must stay empty)."""
        got = []
        for name, sock, op in (("tcp", self.tcp, "accept"), ("abstract", self.abstract, "accept"),
                               ("unix", self.unix, "accept"), ("udp", self.udp, "recv")):
            try:
                getattr(sock, op)(*(() if op == "accept" else (4096,)))
                got.append(name)
            except (BlockingIOError, socket.timeout):
                pass
        return got

    def close(self) -> None:
        for sock in (self.tcp, self.udp, self.abstract, self.unix):
            sock.close()


@pytest.fixture(scope="session")
def scrna_task():
    """One pbmc68k task for the whole suite (loading it costs seconds), with a short program timeout."""
    if BWRAP_MISSING:
        pytest.skip(BWRAP_MISSING)
    from tasks.scrna_denoise.task import ScrnaDenoiseTask

    try:
        task = ScrnaDenoiseTask(timeout_s=TIMEOUT_S, memory_mb=768)
        task.split("val")
    except TaskError as err:
        pytest.skip(str(err))
    yield task
    task.close()


@pytest.fixture
def listeners(tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    name = f"sia-security-{secrets.token_hex(6)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + name)
    abstract.listen(8)
    path = str(tmp_path / "host.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen(8)
    for sock in (tcp, udp, abstract, unix):
        sock.setblocking(False)
    found = Listeners(tcp, udp, abstract, unix, name, path)
    yield found
    found.close()


def survivors(marker: str) -> list[int]:
    """Processes of this test run still alive: a marked command line, or a sandbox cgroup of this process."""
    found, tag = [], f"sia-sandbox-{os.getpid()}-"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if marker.encode() in cmdline or tag in cgroup:
            found.append(int(entry.name))
    return found


def wait_for_no_survivors(marker: str, seconds: float = 2.0) -> list[int]:
    end = time.monotonic() + seconds
    while (alive := survivors(marker)) and time.monotonic() < end:
        time.sleep(0.05)
    return alive


def fingerprint(*folders: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every entry directly in these folders, and of the folders themselves."""
    out = {}
    for folder in folders:
        if not folder.exists():
            out[str(folder)] = (-1, -1)
            continue
        for path in [folder, *folder.iterdir()]:
            st = path.lstat()
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def outside_folders(task, canary: Path) -> list[Path]:
    """Host places a program might try to write: canaries, site-packages, the task's code and cache, the kit."""
    from sia_bench.sandbox.boundary import KIT
    from tasks.scrna_denoise import data as scdata
    from tasks.scrna_denoise.task import HERE

    return [canary, *map(Path, python_paths()["site"]), HERE, KIT, scdata.cache_dir(), Path("/etc")]


def render(body: str, **values: str) -> str:
    from tests.security.hostile_programs import PRELUDE

    return string.Template(PRELUDE + body).substitute(values)


@pytest.fixture
def h5ad_path(tmp_path, monkeypatch):
    """A small synthetic dataset, for tests that build their own task (private cache)."""
    import anndata

    from tests.tasks.scrna_denoise.conftest import low_rank_counts

    monkeypatch.setenv("SIA_BENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.h5ad"
    anndata.AnnData(low_rank_counts()).write_h5ad(path)
    return path


@pytest.fixture
def secret(monkeypatch):
    """A credential in the harness's environment and in the *initial* environment of a host process (what
    ``/proc/<pid>/environ`` shows; variables set at run time never appear there), e.g. the user's shell."""
    value = secrets.token_hex(16)
    monkeypatch.setenv(SECRET_NAME, value)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              env={**os.environ, SECRET_NAME: value}, stdin=subprocess.DEVNULL)
    yield value
    holder.kill()
    holder.wait()
