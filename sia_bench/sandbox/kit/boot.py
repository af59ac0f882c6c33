"""Start a program inside the sandbox: set ``sys.path`` from the environment, then run the script as ``__main__``.

The interpreter is started with ``-I -S`` (no site, no user paths, no ``.pth`` files), so only the read-only
libraries the harness mounted are importable. In the weak mode (no OS boundary, chosen explicitly by the user) an
audit-hook tripwire refuses file opens outside the allowed folders; under bubblewrap there is nothing to refuse.
"""

import os
import sys

# json and runpy are not imported here: on a slow CPU they cost ~40 ms, most of a trivial program's start-up.
script = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.getcwd(), here]
sys.path += [p for p in os.environ.get("SIA_SITE_PATHS", "").split(os.pathsep) if p and p not in sys.path]
sys.argv = sys.argv[1:]

if "SIA_TRIPWIRE" in os.environ:  # the weak mode only
    import json

    _allowed = json.loads(os.environ.pop("SIA_TRIPWIRE") or "[]")
    _denied = json.loads(os.environ.pop("SIA_TRIPWIRE_DENY", "[]") or "[]")
else:
    _allowed = None
if _allowed is not None:
    _roots = [os.path.realpath(p) for p in _allowed + sys.path if p]

    def _under(real, roots):
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

    def _inside(path):
        real = os.path.realpath(path)
        return (_under(real, _roots) or real.startswith("/dev/")) and not _under(real, _denied)

    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            if not _inside(os.fsdecode(args[0])):
                raise PermissionError(f"sandbox (weak mode): access outside the sandbox refused: {args[0]!r}")
        elif event in {"socket.connect", "socket.bind", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"}:
            raise PermissionError(f"sandbox (weak mode): {event} refused")

    sys.addaudithook(_hook)

# What runpy.run_path does for a plain file: the script runs as a fresh ``__main__`` module (so pickling and
# multiprocessing find what it defines), compiled from bytes (so an encoding declaration is honoured).
with open(script, "rb") as _fh:
    _code = compile(_fh.read(), script, "exec")
_main = type(sys)("__main__")
_main.__file__, _main.__builtins__ = script, __builtins__
sys.modules["__main__"] = _main
del _fh
exec(_code, _main.__dict__)
