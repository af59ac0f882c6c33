"""Shared buffers the driver owns: memfds mapped here and handed to workers over a Unix socket.

Inputs and expected outputs are written by the trusted reference worker; before a candidate gets the input buffer
it is sealed (no shrink, no grow, no future write), so the candidate maps it read-only and cannot edit what the
eager reference will read. Output buffers are sealed against shrink/grow only, so a candidate cannot truncate them
under the driver (a SIGBUS here). Element types travel as names; bfloat16 is viewed as raw uint16 here.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)
ALIGN = 4096  # every tensor starts on a page: identical placement for candidate and eager
NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": np.uint16,
         "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}
ITEMSIZE = {k: np.dtype(v).itemsize for k, v in NUMPY.items()}


def nbytes(spec: dict[str, Any]) -> int:
    return math.prod(spec["shape"]) * ITEMSIZE[spec["dtype"]]


def aligned(n: int) -> int:
    return max(ALIGN, -(-n // ALIGN) * ALIGN)


class Arena:
    """One memfd and the driver's read-write mapping of it."""

    def __init__(self, name: str, size: int):
        self.name, self.size = name, aligned(size)
        self.fd = os.memfd_create(f"sia-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, self.size)
            self.map = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            raise
        self.sealed = False

    def seal(self, read_only_for_others: bool) -> None:
        """Fix the size for good; with ``read_only_for_others`` no new writable mapping or write() is possible
        (mappings made before, the driver's and the reference worker's, keep writing)."""
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        if read_only_for_others:
            seals |= F_SEAL_FUTURE_WRITE
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, seals)
        self.sealed = True

    def array(self, ref: dict[str, Any]) -> np.ndarray:
        dtype = NUMPY[ref["dtype"]]
        count = math.prod(ref["shape"])
        return np.frombuffer(self.map, dtype=dtype, count=count, offset=ref["offset"]).reshape(ref["shape"])

    def spec(self, writable: bool) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.size, "writable": writable}

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a numpy view is still alive; the mapping goes when it does
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass
class Layout:
    """Where each slot's inputs and outputs live. One slot = the arguments and results of one call."""

    inputs: list[dict[str, Any]]  # per input: {"dtype", "shape"} or {"value"}
    outputs: list[dict[str, Any]]  # per output: {"dtype", "shape"}
    slots: int
    in_offsets: list[list[int | None]] = field(default_factory=list)
    out_offsets: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        pos = 0
        for _ in range(self.slots):
            row = []
            for spec in self.inputs:
                row.append(None if "value" in spec else pos)
                pos += 0 if "value" in spec else aligned(nbytes(spec))
            self.in_offsets.append(row)
        self.in_bytes = pos
        pos = 0
        for _ in range(self.slots):
            self.out_offsets.append([pos + sum(aligned(nbytes(o)) for o in self.outputs[:i])
                                     for i in range(len(self.outputs))])
            pos += sum(aligned(nbytes(o)) for o in self.outputs)
        self.out_bytes = pos

    @staticmethod
    def slot_bytes(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> int:
        return sum(aligned(nbytes(s)) for s in inputs if "value" not in s) + \
            sum(aligned(nbytes(o)) for o in outputs)

    def input_refs(self, slot: int, arena: str) -> list[dict[str, Any]]:
        return [dict(spec) if off is None else {**spec, "arena": arena, "offset": off}
                for spec, off in zip(self.inputs, self.in_offsets[slot])]

    def output_refs(self, slot: int, arena: str) -> list[dict[str, Any]]:
        return [{**spec, "arena": arena, "offset": off} for spec, off in zip(self.outputs, self.out_offsets[slot])]
