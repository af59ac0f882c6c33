"""Model backends behind one interface; build one by registry name with :func:`build_model`."""

from __future__ import annotations

from typing import Any

from sia_bench.models.base import Generation, Messages, Model, ModelError, Ranking, SamplingParams, Usage

__all__ = ["Generation", "Messages", "Model", "ModelError", "Ranking", "SamplingParams", "Usage", "build_model"]


def build_model(spec: str, **options: Any) -> Model:
    """``spec`` is a backend name (``hf``, ``openai``, ``tiny``) or ``backend:model`` (``hf:smollm2-135m``)."""
    from sia_bench.registry import MODELS

    backend, _, model = spec.partition(":")
    factory = MODELS.get(backend)
    if model:
        options.setdefault("model", model)
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"-M options for {backend!r}: {err}") from None
