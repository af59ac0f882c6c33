"""Start a program inside the sandbox: set ``sys.path`` from the environment, then run the script as ``__main__``.

The interpreter is started with ``-I -S`` (no site, no user paths, no ``.pth`` files), so only the read-only
libraries the harness mounted are importable. In the weak mode (no OS boundary, chosen explicitly by the user) an
audit-hook tripwire refuses file opens outside the allowed folders; under bubblewrap there is nothing to refuse.
"""

import json
import os
import runpy
import sys

script = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.getcwd(), here]
sys.path += [p for p in json.loads(os.environ.get("SIA_SITE", "[]")) if p not in sys.path]
sys.argv = sys.argv[1:]

_allowed = json.loads(os.environ.pop("SIA_TRIPWIRE", "null") or "null")
_denied = json.loads(os.environ.pop("SIA_TRIPWIRE_DENY", "[]") or "[]")
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

runpy.run_path(script, run_name="__main__")
