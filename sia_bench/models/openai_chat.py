"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API), with retries and backoff.

The key comes from an environment variable (``api_key_env``, default ``OPENAI_API_KEY``); endpoint errors are retried
with exponential backoff and then returned as a :class:`Generation` with ``error`` set, never raised into the run.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sia_bench.models.base import Generation, Messages, Model, SamplingParams


@dataclass
class OpenAIChatModel(Model):
    """OpenAI-compatible chat endpoint (base_url=..., model=..., key from $OPENAI_API_KEY or api_key_env=...)."""

    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    concurrency: int = 4
    structured: bool = True  # send json_schema as response_format; false for servers without it
    parameters: int | None = None  # the served model's size, when known: its calls are then charged in FLOPs
    client: Any = None  # injected in tests

    def __post_init__(self) -> None:
        if self.parameters is not None and (not isinstance(self.parameters, int) or self.parameters <= 0):
            raise ValueError(f"parameters must be a positive whole number (the model's size), got {self.parameters!r}")
        if self.client is None:
            from openai import OpenAI

            key = os.environ.get(self.api_key_env) or ("EMPTY" if self.base_url else None)
            if key is None:
                raise ValueError(f"set ${self.api_key_env} (or pass base_url= for a local server without a key)")
            self.client = OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0)

    @property
    def name(self) -> str:
        return self.model

    def info(self) -> dict[str, Any]:
        info = {"backend": "openai", "name": self.model, "base_url": self.base_url or "api.openai.com"}
        return {**info, "parameters": self.parameters} if self.parameters else info

    def _response_format(self, params: SamplingParams) -> dict[str, Any]:
        """OpenAI's structured outputs (also served by vLLM and SGLang); ``structured=false`` for servers without."""
        if not params.json_schema or not self.structured:
            return {}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "answer", "schema": json.loads(params.json_schema)}}}

    def _one(self, messages: Messages, params: SamplingParams) -> Generation:
        error = ""
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=params.max_new_tokens,
                    temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                    stop=list(params.stop) or None, **self._response_format(params))
                usage = getattr(resp, "usage", None)
                return Generation(resp.choices[0].message.content or "",
                                  getattr(usage, "prompt_tokens", 0) or 0,
                                  getattr(usage, "completion_tokens", 0) or 0, time.perf_counter() - t0)
            except Exception as err:  # the SDK raises many types; all are retried the same way
                error = f"{type(err).__name__}: {err}"
                if attempt < self.max_retries:
                    time.sleep(self.backoff_s * 2 ** attempt)
        return Generation("", error=f"endpoint failed after {self.max_retries + 1} tries: {error}")

    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda m: self._one(m, params), batch))
