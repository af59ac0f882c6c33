"""Toy addition task: generated, deterministic data; exact-match scoring. The template for new tasks."""

from __future__ import annotations

import random
import re
from pathlib import Path

from sia_bench.harness import Harness, ParamSpec, load_default_harness
from sia_bench.task import Answer, Instance, Metric, Prompt, Score, Task

HERE = Path(__file__).parent
SIZES = {"train": 64, "val": 32, "test": 32}
PARSERS = ("last_integer", "first_integer")


class ToyArithmeticTask(Task):
    """Add two whole numbers (the example task used by the tests and the 'add a task' guide)."""

    name = "toy_arithmetic"
    version = "1.0"
    metric = Metric("accuracy", higher_is_better=True)
    description = "Answer 'What is a + b?' with the sum, digits only."
    options = {"max_operand": ParamSpec(int, 20, min=1, max=10_000, help="operands are drawn from 0..max_operand"),
               "data_seed": ParamSpec(int, 1234, help="seed of the generated data")}
    search_space = {"few_shot": [2, 4], "parser": ["first_integer"], "retries": [1]}

    def load_split(self, split: str) -> list[Instance]:
        # Disjoint splits: each split draws from its own seeded stream and skips pairs used by earlier splits.
        rng = random.Random(self.opts["data_seed"])
        seen: set[tuple[int, int]] = set()
        out: dict[str, list[Instance]] = {}
        for name in ("train", "val", "test"):
            items = []
            while len(items) < SIZES[name]:
                a, b = rng.randint(0, self.opts["max_operand"]), rng.randint(0, self.opts["max_operand"])
                if (a, b) in seen and len(seen) < (self.opts["max_operand"] + 1) ** 2:
                    continue
                seen.add((a, b))
                items.append(Instance(f"{name}-{len(items)}", {"a": a, "b": b}, a + b))
            out[name] = items
        return out[split]

    def default_harness(self) -> Harness:
        return load_default_harness(HERE, {"parser": ParamSpec(str, "last_integer", choices=PARSERS)})

    def render(self, harness: Harness, instance: Instance) -> Prompt:
        messages = [{"role": "system", "content": harness.skill}]
        for demo in self.split("train")[: harness["few_shot"]]:
            messages.append({"role": "user", "content": _question(demo)})
            messages.append({"role": "assistant", "content": str(demo.target)})
        messages.append({"role": "user", "content": _question(instance)})
        return Prompt(messages)

    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer:
        numbers = re.findall(r"-?\d+", text)
        if not numbers:
            return Answer(None, harness["parser"], f"no integer in the answer {text[:60]!r}")
        return Answer(int(numbers[-1] if harness["parser"] == "last_integer" else numbers[0]), harness["parser"])

    def score(self, instance: Instance, answer: Answer) -> Score:
        if not answer.ok:
            return Score(0.0, f"unparsable answer: {answer.error}; expected {instance.target}")
        ok = answer.value == instance.target
        return Score(float(ok), "correct" if ok else f"answered {answer.value}, expected {instance.target}",
                     {"pred": answer.value})

    def reference_text(self, harness: Harness, instance: Instance) -> str | None:
        """The sum, digits only, as the demonstrations answer. (No tool_answer: the harness has no calculator.)"""
        return str(instance.target)

    def perfect_answer(self, instance: Instance) -> Answer:
        return Answer(instance.target, "control")

    def null_answer(self, instance: Instance) -> Answer:
        return Answer(0, "control")


def _question(instance: Instance) -> str:
    return f"What is {instance.input['a']} + {instance.input['b']}?"
