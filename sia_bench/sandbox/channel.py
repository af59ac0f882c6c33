"""The framed message channel between the harness and a sandboxed program, parent side.

A message is ``b"SIAM"``, a 4-byte big-endian header length, a JSON header, then the raw bytes of each array the
header lists under ``"blobs"`` (dtype, shape, nbytes). The parent parses incrementally with hard caps (header size,
bytes per message, bytes per session), accepts only whitelisted dtypes and shapes whose size matches, and never
unpickles anything. The child side is :mod:`sia_bench.sandbox.kit.sandbox_child` (standalone, copied into the sandbox).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"SIAM"
HEADER = struct.Struct(">4sI")
MAX_HEADER_BYTES = 1 << 20
DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
MAX_DIMS = 8


class ChannelError(ValueError):
    """The program broke the protocol (bad framing, oversized, malformed header); the message says how."""


@dataclass
class Message:
    header: dict[str, Any]
    arrays: list[np.ndarray] = field(default_factory=list)
    nbytes: int = 0  # its size on the wire

    @property
    def kind(self) -> str:
        return str(self.header.get("kind", ""))


def encode(header: dict[str, Any], arrays: list[np.ndarray] | tuple = ()) -> bytes:
    """One framed message (used by the parent for commands; the child kit mirrors it)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    head = dict(header)
    head["blobs"] = [{"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": int(a.nbytes)} for a in arrays]
    data = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([HEADER.pack(MAGIC, len(data)), data, *(a.tobytes() for a in arrays)])


def _blob_spec(spec: Any) -> tuple[np.dtype, tuple[int, ...], int]:
    if not isinstance(spec, dict):
        raise ChannelError("blob description is not an object")
    dtype, shape, nbytes = spec.get("dtype"), spec.get("shape"), spec.get("nbytes")
    if dtype not in DTYPES or dtype == "bfloat16":
        raise ChannelError(f"array dtype {str(dtype)[:40]!r} is not allowed")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
        raise ChannelError(f"array shape {str(shape)[:80]} is not a list of non-negative integers")
    np_dtype = np.dtype(dtype)
    expected = math.prod(shape) * np_dtype.itemsize
    if not isinstance(nbytes, int) or nbytes != expected:
        raise ChannelError(f"array of shape {shape} and dtype {dtype} claims {nbytes!r} bytes, not {expected}")
    return np_dtype, tuple(shape), nbytes


class Framer:
    """Incremental parser; ``feed`` returns complete messages and raises ChannelError on any violation.

    ``max_total_bytes`` caps the bytes held at once: everything fed minus what the owner has ``release``d (a
    session releases a message when it is received; a one-shot run keeps every message, so it never releases)."""

    def __init__(self, max_message_bytes: int, max_total_bytes: int):
        self.max_message, self.max_total = max_message_bytes, max_total_bytes
        self.buffer = bytearray()
        self.total = 0
        self._header: dict[str, Any] | None = None
        self._specs: list[tuple[np.dtype, tuple[int, ...], int]] = []
        self._need = 0
        self._header_bytes = 0

    def release(self, message: Message) -> None:
        """The owner no longer holds ``message``: its bytes stop counting against the cap."""
        self.total -= message.nbytes

    def feed(self, data: bytes) -> list[Message]:
        self.total += len(data)
        if self.total > self.max_total:
            raise ChannelError(f"the program sent more than {self.max_total / 2**20:.1f} MiB of results")
        self.buffer += data
        out = []
        while True:
            if self._header is None:
                if len(self.buffer) < HEADER.size:
                    break
                magic, length = HEADER.unpack_from(self.buffer)
                if magic != MAGIC:
                    raise ChannelError("result channel: bad frame (not a sia-bench message)")
                if length > MAX_HEADER_BYTES:
                    raise ChannelError(f"result header of {length} bytes exceeds {MAX_HEADER_BYTES}")
                if len(self.buffer) < HEADER.size + length:
                    break
                raw = bytes(self.buffer[HEADER.size:HEADER.size + length])
                self._header_bytes = length
                del self.buffer[:HEADER.size + length]
                try:
                    header = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as err:
                    raise ChannelError(f"result header is not JSON: {str(err)[:120]}") from None
                if not isinstance(header, dict):
                    raise ChannelError("result header is not a JSON object")
                blobs = header.pop("blobs", [])
                if not isinstance(blobs, list) or len(blobs) > 64:
                    raise ChannelError("result header: 'blobs' must be a list of at most 64 arrays")
                self._specs = [_blob_spec(b) for b in blobs]
                self._need = sum(n for _, _, n in self._specs)
                if self._need + length > self.max_message:
                    raise ChannelError(f"a result of {(self._need + length) / 2**20:.1f} MiB exceeds the "
                                       f"{self.max_message / 2**20:.1f} MiB limit")
                self._header = header
            if len(self.buffer) < self._need:
                break
            arrays, offset = [], 0
            for dtype, shape, nbytes in self._specs:
                arrays.append(np.frombuffer(bytes(self.buffer[offset:offset + nbytes]), dtype=dtype).reshape(shape))
                offset += nbytes
            del self.buffer[:offset]
            out.append(Message(self._header, arrays, HEADER.size + self._header_bytes + offset))
            self._header, self._specs, self._need = None, [], 0
        return out
