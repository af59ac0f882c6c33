"""Child-side bootstrap of :mod:`sia_bench.sandbox`: install the file tripwire, then run the script.

Kept free of sia_bench imports so the child starts fast and sees nothing of the harness.
"""

import json
import os
import sys
import sysconfig

_allowed = [os.path.realpath(p) for p in json.loads(os.environ.get("SIA_SANDBOX_ALLOWED", "[]"))]
_allowed += [os.path.realpath(p) for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                                            "platlib")} | {sys.prefix, sys.base_prefix}]
_allowed += ["/dev/null", "/dev/urandom", "/proc", "/sys", "/etc", "/usr", "/lib", "/tmp/.triton", "/opt"]


_script_dir = os.path.dirname(os.path.realpath(sys.argv[1])) + "/" if len(sys.argv) > 1 else None


def _inside(path: str) -> bool:
    real = os.path.realpath(path)
    if _script_dir and real.startswith(_script_dir) and real.endswith((".py", ".pyc", ".so")):
        return True  # the script's own modules (imports), not its data files
    return any(real == root or real.startswith(root.rstrip("/") + "/") for root in _allowed)


def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if not _inside(path):
            raise PermissionError(f"sandbox: access outside the sandbox refused: {path}")
    elif event in {"socket.connect", "socket.bind"}:
        raise PermissionError("sandbox: network access refused")


script = sys.argv[1]
with open(script, encoding="utf-8") as f:  # read before the tripwire: the script may live outside the sandbox
    code = compile(f.read(), script, "exec")
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
sys.addaudithook(_hook)
exec(code, {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__})
