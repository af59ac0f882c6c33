"""Child side of the sandbox channel: send results and receive commands as framed messages.

Mounted read-only in every sandbox at ``/sandbox/kit``; imports nothing from sia_bench (none of it is visible in there). The harness
validates everything that arrives, so nothing here is trusted: it is a convenience for honest programs.
"""

import json
import os
import struct

MAGIC = b"SIAM"
_HEADER = struct.Struct(">4sI")
RESULT_FD = int(os.environ.get("SIA_RESULT_FD", "-1"))
COMMAND_FD = int(os.environ.get("SIA_COMMAND_FD", "-1"))


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def send(header, arrays=()):
    """Send one message: a JSON-able dict and optional numpy arrays (sent raw, C order)."""
    blobs = []
    if arrays:
        import numpy as np

        arrays = [np.ascontiguousarray(a) for a in arrays]
        blobs = [{"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": int(a.nbytes)} for a in arrays]
    data = json.dumps(dict(header, blobs=blobs), separators=(",", ":"), default=str).encode()
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
    header = json.loads(_read_exact(COMMAND_FD, length))
    arrays = []
    blobs = header.pop("blobs", [])
    if blobs:
        import numpy as np

        for b in blobs:
            raw = _read_exact(COMMAND_FD, b["nbytes"]) if b["nbytes"] else b""
            arrays.append(np.frombuffer(raw, dtype=b["dtype"]).reshape(b["shape"]).copy())
    return header, arrays
