"""Child side of the sandbox channel: send results and receive commands as framed messages.

Mounted read-only in every sandbox at ``/sandbox/kit``; imports nothing from sia_bench (none of it is visible in there). The harness
validates everything that arrives, so nothing here is trusted: it is a convenience for honest programs.
"""

import os
import struct
from _json import encode_basestring_ascii as _quote  # the C half of json: no ``re`` import (~30 ms saved)

MAGIC = b"SIAM"
_HEADER = struct.Struct(">4sI")
RESULT_FD = int(os.environ.get("SIA_RESULT_FD", "-1"))
COMMAND_FD = int(os.environ.get("SIA_COMMAND_FD", "-1"))


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _dumps(value):
    """``json.dumps(value, default=str)`` for headers (dicts, lists, strings, numbers, None), without importing json."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{" + ",".join(_quote(k if isinstance(k, str) else _dumps(k).strip('"')) + ":" + _dumps(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return _quote(str(value))


def send(header, arrays=()):
    """Send one message: a JSON-able dict and optional numpy arrays (sent raw, C order)."""
    blobs = []
    if arrays:
        import numpy as np

        arrays = [np.ascontiguousarray(a) for a in arrays]
        blobs = [{"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": int(a.nbytes)} for a in arrays]
    data = _dumps(dict(header, blobs=blobs)).encode()
    _write_all(RESULT_FD, _HEADER.pack(MAGIC, len(data)) + data)
    for a in arrays:
        if a.nbytes:
            _write_all(RESULT_FD, a.data)


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the harness closed the command channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv():
    """Block for the next command from the harness: (header dict, list of numpy arrays)."""
    magic, length = _HEADER.unpack(_read_exact(COMMAND_FD, _HEADER.size))
    if magic != MAGIC:
        raise ValueError("bad command frame")
    import json

    header = json.loads(_read_exact(COMMAND_FD, length))
    arrays = []
    blobs = header.pop("blobs", [])
    if blobs:
        import numpy as np

        for b in blobs:
            raw = _read_exact(COMMAND_FD, b["nbytes"]) if b["nbytes"] else b""
            arrays.append(np.frombuffer(raw, dtype=b["dtype"]).reshape(b["shape"]).copy())
    return header, arrays
