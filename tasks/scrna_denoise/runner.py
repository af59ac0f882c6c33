"""Sandbox-side runner: load the training counts, import the program, call ``denoise``, send the output back.

Started by :func:`tasks.scrna_denoise.execute.run_program` as ``python runner.py`` inside the sandbox, whose work
folder holds only ``job.json``, ``counts.npz`` (this instance's training molecules), ``program.py`` and this file.
It imports nothing from sia_bench; the output goes back as one array message over the result channel
(``sandbox_child.send``), never through a file. Nothing here is trusted: the harness validates the message again.
The harness checks the shape and values. Hyperparameters are passed only to ``denoise`` arguments that the program declares.
"""

import importlib.util
import inspect
import json
import sys
import time
import traceback

import numpy as np
import scipy.sparse as sp

import sandbox_child


def _fail(stage: str, message: str) -> None:
    """Report a failure over the channel (``stage`` names where it happened) and exit non-zero."""
    sandbox_child.send({"kind": "error", "stage": stage, "message": message[:2000]})
    print(message, file=sys.stderr)
    sys.exit(1)


def main() -> None:
    with open("job.json") as fh:
        job = json.load(fh)
    counts = sp.load_npz("counts.npz").toarray().astype(np.float64)
    try:
        spec = importlib.util.spec_from_file_location("program", "program.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException as err:  # noqa: BLE001 - anything the program does is reported, not raised
        traceback.print_exc()
        _fail("load", f"{type(err).__name__}: {err}")
    denoise = getattr(module, "denoise", None)
    if not callable(denoise):
        _fail("contract", "the program defines no function denoise(counts)")
    try:
        accepted = inspect.signature(denoise).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in job.get("params", {}).items() if k in accepted}
    np.random.seed(0)
    start = time.perf_counter()
    try:
        out = denoise(counts, **kwargs)
    except BaseException as err:  # noqa: BLE001
        traceback.print_exc()
        _fail("denoise", f"{type(err).__name__}: {err}")
    seconds = time.perf_counter() - start
    if sp.issparse(out):
        out = out.toarray()
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as err:
        _fail("contract", f"denoise returned {type(out).__name__}, not a numeric array: {err}")
    sandbox_child.send({"kind": "result", "seconds": seconds, "params_used": kwargs}, [out])


if __name__ == "__main__":
    main()
