"""Sandbox-side runner: load the training counts, import the program, call ``denoise``, save the output.

Copied into the sandbox working directory and run by :func:`sia_bench.sandbox.run_python`; it imports nothing from
sia_bench and sees only its own directory. ``job.json`` names the files and the keyword parameters; hyperparameters
are passed only to ``denoise`` arguments that the program declares. The harness re-checks the saved output itself.
"""

import inspect
import importlib.util
import json
import sys
import time
import traceback

import numpy as np
import scipy.sparse as sp


def _fail(message: str) -> None:
    with open("result.json", "w") as fh:
        json.dump({"ok": False, "error": message}, fh)
    print(message, file=sys.stderr)
    sys.exit(1)


def main() -> None:
    with open("job.json") as fh:
        job = json.load(fh)
    counts = sp.load_npz(job["counts"]).toarray().astype(np.float64)
    shape = counts.shape
    try:
        spec = importlib.util.spec_from_file_location("program", job["program"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - anything the program does is reported, not raised
        traceback.print_exc()
        _fail(f"the program failed to load: {type(err).__name__}: {err}")
    denoise = getattr(module, "denoise", None)
    if not callable(denoise):
        _fail("the program defines no function denoise(counts)")
    try:
        accepted = inspect.signature(denoise).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in job.get("params", {}).items() if k in accepted}
    np.random.seed(0)
    start = time.perf_counter()
    try:
        out = denoise(counts, **kwargs)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        _fail(f"denoise raised {type(err).__name__}: {err}")
    seconds = time.perf_counter() - start
    if sp.issparse(out):
        out = out.toarray()
    try:
        out = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as err:
        _fail(f"denoise returned {type(out).__name__}, not a numeric array: {err}")
    if out.shape != shape:
        _fail(f"denoise returned shape {out.shape}, expected {shape} (cells x genes, same as the input)")
    np.save(job["output"], out, allow_pickle=False)
    with open("result.json", "w") as fh:
        json.dump({"ok": True, "seconds": seconds, "params_used": kwargs}, fh)


if __name__ == "__main__":
    main()
