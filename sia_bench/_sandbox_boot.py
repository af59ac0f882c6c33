"""Child-side bootstrap of :mod:`sia_bench.sandbox`: install the file tripwire, then run the script.

Kept free of sia_bench imports so the child starts fast and sees nothing of the harness.
"""

import json
import os
import runpy
import sys
import sysconfig

_allowed = [os.path.realpath(p) for p in json.loads(os.environ.get("SIA_SANDBOX_ALLOWED", "[]"))]
_allowed += [os.path.realpath(p) for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                                            "platlib")} | {sys.prefix, sys.base_prefix}]
_allowed += ["/dev/null", "/dev/urandom", "/proc", "/sys", "/etc", "/usr", "/lib", "/tmp/.triton", "/opt"]


def _inside(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in _allowed)


def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if not _inside(path):
            raise PermissionError(f"sandbox: access outside the sandbox refused: {path}")
    elif event in {"socket.connect", "socket.bind"}:
        raise PermissionError("sandbox: network access refused")


sys.addaudithook(_hook)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
