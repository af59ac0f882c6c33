"""Test doubles: a scripted chat model (for proposer and agent mechanics) and an oracle model for the toy task."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from sia_bench.models.base import Generation, Messages, Model, SamplingParams


@dataclass
class ScriptedModel(Model):
    """Answers from a list (cycling on the last) or a function of the messages; records every prompt it saw."""

    replies: list[str] = field(default_factory=list)
    fn: Callable[[Messages], str] | None = None
    seen: list[Messages] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "scripted"

    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]:
        out = []
        for messages in batch:
            self.seen.append(messages)
            if self.fn is not None:
                text = self.fn(messages)
            else:
                text = self.replies[min(len(self.seen) - 1, len(self.replies) - 1)] if self.replies else ""
            out.append(Generation(text, sum(len(m["content"]) for m in messages) // 4, len(text) // 4, 0.0))
        return out


def adder(skill_bonus: str | None = None) -> Callable[[Messages], str]:
    """A toy-task model that hedges ("X or maybe X+1": right only with the first_integer parser), unless the system
    prompt contains ``skill_bonus``, when it answers plainly."""

    def answer(messages: Messages) -> str:
        match = re.search(r"What is (\d+) \+ (\d+)\?", messages[-1]["content"])
        if not match:
            return "?"
        total = int(match.group(1)) + int(match.group(2))
        good = skill_bonus is not None and skill_bonus in messages[0]["content"]
        return f"The answer is {total}" if good else f"{total} or maybe {total + 1}"

    return answer
