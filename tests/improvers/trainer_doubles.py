"""Toy tasks and a sharpened tiny model for the trainer tests (real tokenizer, real peft, real optimizer).

The tiny model's output head is sharpened (x20): a 2-layer, 64-wide random model with the default 0.02-std head is
almost uniform over 49k tokens, which no LoRA on attention can move far. With the sharper head a reward defined by a
direction in the head's space ("the sampled token lies in the top quarter along v") is learnable in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sia_bench.agent import Agent
from sia_bench.harness import Harness, ParamSpec
from sia_bench.improvers.base import LoopState
from sia_bench.records import Ledger
from sia_bench.task import Answer, Instance, Metric, Prompt, Score, Task

HEAD_SCALE = 20.0


def tiny():
    from sia_bench.models import build_model

    model = build_model("tiny")
    model.hf.lm_head.weight.data *= HEAD_SCALE
    return model


class DirectionTask(Task):
    """Reward 1 when the one sampled token is among the quarter of the vocabulary furthest along a fixed direction."""

    name = "direction"
    version = "0"
    metric = Metric("reward")

    def __init__(self, good: set[str], constant: dict[int, float] | None = None):
        super().__init__()
        self.good, self.constant = good, constant or {}

    def load_split(self, split):
        return [Instance(f"{split}-{i}", i) for i in range(16)]

    def default_harness(self):
        return Harness.create("---\nname: d\ndescription: say one word\n---\nSay one word.",
                              {"max_new_tokens": 1, "temperature": 1.0})

    def render(self, harness, instance):
        return Prompt([{"role": "user", "content": f"Word {instance.input}?"}])

    def parse(self, harness, instance, text):
        return Answer(text)

    def score(self, instance, answer):
        if instance.input in self.constant:
            return Score(self.constant[instance.input])
        return Score(float(answer.value in self.good))

    def perfect_answer(self, instance):
        return Answer(next(iter(self.good)))

    def null_answer(self, instance):
        return Answer("")


def good_tokens(model) -> set[str]:
    head = model.hf.get_output_embeddings().weight.detach()
    v = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(0))
    top = set(torch.topk(head @ v, head.shape[0] // 4).indices.tolist())
    decode = model.tokenizer.decode
    return {decode([i]) for i in top} - {decode([i]) for i in range(head.shape[0]) if i not in top}


class RankTask(DirectionTask):
    """Pick one of a few words by log-likelihood (answer_mode=rank); reward 1 for one of them."""

    OPTIONS = ["apple", "river", "stone", "cloud", "ember", "maple"]

    def __init__(self, options: list[str] | None = None, rewarded: str = "stone"):
        super().__init__({rewarded})
        self.options = list(options or self.OPTIONS)
        self.rewarded = rewarded

    def default_harness(self):
        return Harness.create("---\nname: r\ndescription: pick a word\n---\nPick a word.",
                              {"max_new_tokens": 4, "temperature": 0.0, "answer_mode": "rank"},
                              {"answer_mode": ParamSpec(str, "generate", choices=("generate", "rank"))})

    def render(self, harness, instance):
        return Prompt([{"role": "user", "content": f"Word {instance.input}?"}], options=list(self.options))


def loop_state(task, model, workdir: Path, seed: int = 1, best: Path | None = None) -> LoopState:
    return LoopState(generation=1, task=task, agent=Agent(task, model), train=task.split("train"),
                     best_harness=task.default_harness(), best_adapter_dir=best, best_val={}, history=[],
                     ledger=Ledger(), gen_ledger=Ledger(), budget=None, seed=seed, workdir=workdir)


def p_rewarded(task: RankTask, model) -> float:
    """Mean probability the option policy (T = 1) puts on the rewarded option, over 8 val prompts."""
    prompts = [task.render(task.default_harness(), inst) for inst in task.split("val")[:8]]
    scores = model.loglikelihood([(p.messages, p.options) for p in prompts])
    k = task.options.index(task.rewarded)
    return sum(torch.softmax(torch.tensor(s), 0)[k].item() for s in scores) / len(scores)


def split_params(model):
    lora = {n: p.detach().clone() for n, p in model.hf.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.hf.named_parameters() if "lora_" not in n}
    return lora, base


def live_lora(model, seed: int = 0) -> None:
    """A fresh adapter with B != 0 too (B = 0 gives A no gradient), for gradient comparisons."""
    from sia_bench.improvers.trainers import prepare_adapter

    prepare_adapter(model, None, 8, seed)
    gen = torch.Generator().manual_seed(seed)
    for module in model.hf.modules():
        if hasattr(module, "lora_B"):
            w = module.lora_B["default"].weight
            w.data = torch.randn(w.shape, generator=gen) * 0.1
