"""A tiny random-init Llama with the real SmolLM2 tokenizer: real code paths, fast tests, meaningless text."""

from __future__ import annotations

from typing import Any

from sia_bench.models.hf import HFModel
from sia_bench.models.packaged import DEFAULT_MODEL, converted_folder


def tiny_model(layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0, device: str = "cpu",
               batch_size: int = 8, **_: Any) -> HFModel:
    """Tiny random Llama (2 layers, hidden 64) with the SmolLM2 tokenizer; for mechanics tests only."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, _info = converted_folder(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    return HFModel(model="tiny", path=None, device=device, dtype="float32", batch_size=batch_size, hf=model,
                   tokenizer=tokenizer, extra_info={"model": "tiny-random-llama", "layers": layers, "hidden": hidden,
                                                    "seed": seed})
