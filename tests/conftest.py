"""Shared fixtures: the tiny model is built once per session (it needs the real tokenizer, converted once)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model():
    from sia_bench.models import build_model

    return build_model("tiny")


@pytest.fixture
def toy_task():
    from sia_bench.loop import build_task

    return build_task("toy_arithmetic", {})
