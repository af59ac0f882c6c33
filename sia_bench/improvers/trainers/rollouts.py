"""Rollouts under the policy the agent actually runs, rewarded by the task's own parse + score.

Free generation samples completions with ``temperature`` (top-p 1, no top-k, so the sampling policy is exactly
softmax(logits / T)). Under a rank-mode harness (``answer_mode=rank``, a prompt with options) the agent picks the
option with the best mean token log-probability, so the rollout policy is softmax(score / T) over the options, whose
greedy limit is the agent's choice; sampling free text there would train a behaviour the agent never uses.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from sia_bench.harness import Harness
from sia_bench.task import Instance

# Ledger purposes of the trainers' model calls (see sia_bench.metering): sampling, and the optimizer's passes.
TRAIN_ROLLOUT, TRAIN_STEP = "train_rollout", "train_step"

if TYPE_CHECKING:
    import torch

    from sia_bench.improvers.base import LoopState
    from sia_bench.improvers.trainers.settings import UpdateSettings


@dataclass
class Group:
    """One prompt's samples: what was sampled, its rewards, and what the trainer derives from them.

    Free generation: ``completions`` are the rows. Rank mode: ``options`` are the rows (the action space) and each
    sample is ``picks[i]``, an option index; ``completions[i]`` is that option's tokens."""

    instance: Instance
    prompt_ids: list[int]
    completions: list[list[int]]
    texts: list[str]
    rewards: list[float]
    weights: list[float] | None = None  # per-sample advantages (grpo/entropic) or keep mask (rft; sft: [1.0])
    options: list[list[int]] | None = None
    picks: list[int] | None = None
    # From the sampling (old) policy, no grad: "logp" (free: per token (G, L); rank: per option (K,)), "value"
    # (free: (G, L); rank: scalar), "ref" (the same as logp with the adapter off).
    old: dict[str, "torch.Tensor"] = field(default_factory=dict)
    advantages: "torch.Tensor | None" = None  # free: (G, L) per token; rank: (G,) per sample
    returns: "torch.Tensor | None" = None  # ppo value targets, same shape

    @property
    def rank(self) -> bool:
        return self.options is not None

    @property
    def rows(self) -> list[list[int]]:
        return self.options if self.options is not None else self.completions

    def tokens(self) -> int:
        """Tokens a forward of this group touches with a shared prefix (prompt once, then every row)."""
        return len(self.prompt_ids) + sum(map(len, self.rows))


def step_seed(seed: int, round_index: int) -> int:
    """The seed of one rollout round: a function of the update's seed and the global round, so a continued run
    draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + round_index * 7_919 + 17) % (2 ** 63)


def next_prompts(pool: Sequence[Instance], data_seed: int, cursor: int, n: int) -> tuple[list[Instance], int]:
    """``n`` prompts from a stream of seeded epoch permutations of ``pool``, starting at ``cursor``."""
    out = []
    while len(out) < n:
        epoch, pos = divmod(cursor, len(pool))
        order = random.Random(f"{data_seed}:{epoch}").sample(range(len(pool)), len(pool))
        take = min(n - len(out), len(pool) - pos)
        out += [pool[i] for i in order[pos:pos + take]]
        cursor += take
    return out, cursor


def sample_groups(state: "LoopState", harness: Harness, instances: Sequence[Instance], update: "UpdateSettings",
                  value_head: Any = None) -> list[Group]:
    """Sample ``group_size`` answers per instance with the adapter on and reward each with the task scorer.

    Rank-mode groups also carry the sampling policy's option log-probs (and, given ``value_head``, the prompt's
    value), computed by the same pass that sampled them."""
    prompts = [state.task.render(harness, inst) for inst in instances]
    rank = harness.params.get("answer_mode") == "rank"
    ranked = [i for i, p in enumerate(prompts) if rank and p.options]
    groups: dict[int, Group] = {}
    if ranked:
        groups.update(zip(ranked, _sample_options(state, harness, [instances[i] for i in ranked],
                                                  [prompts[i] for i in ranked], update, value_head)))
    free = [i for i in range(len(instances)) if i not in groups]
    if free:
        groups.update(zip(free, _sample_generations(state, harness, [instances[i] for i in free],
                                                    [prompts[i] for i in free], update)))
    return [groups[i] for i in range(len(instances))]


def reference_groups(state: "LoopState", harness: Harness, instances: Sequence[Instance]) -> list[Group | None]:
    """One-row groups holding each instance's gold completion (:meth:`Task.reference_text`), for ``sft``; None
    where the task gives no reference (or, under a rank harness, none among the prompt's options). No model call.

    The rows are tokenised as the sampler's would be: free text ends with EOS (the sampler keeps it, and a gold
    answer teaches the model to stop), an option is the ranker's own tokens with the gold option as the one pick."""
    model = state.agent.model
    tok, eos = model.tokenizer, model.tokenizer.eos_token_id
    rank = harness.params.get("answer_mode") == "rank"
    groups: list[Group | None] = []
    for inst in instances:
        gold = state.task.reference_text(harness, inst)
        prompt = state.task.render(harness, inst) if gold is not None else None
        if prompt is None or (rank and prompt.options and gold not in prompt.options):
            groups.append(None)
            continue
        prefix = tok(model.chat_text(prompt.messages), add_special_tokens=False)["input_ids"]
        if rank and prompt.options:
            options = [tok(o, add_special_tokens=False)["input_ids"] or [eos] for o in prompt.options]
            k = prompt.options.index(gold)
            groups.append(Group(inst, prefix, [options[k]], [gold], [float("nan")], [1.0], options=options,
                                picks=[k]))
        else:
            ids = tok(gold, add_special_tokens=False)["input_ids"] + [eos]
            groups.append(Group(inst, prefix, [ids], [gold], [float("nan")], [1.0]))
    return groups


def reward_of(state: "LoopState", harness: Harness, inst: Instance, text: str) -> float:
    """The task's score of ``text`` through the agent's crash-proof parse and score; NaN when unscorable."""
    value = float(state.agent._score(inst, state.agent._parse(harness, inst, text, None)).value)
    return value if math.isfinite(value) else float("nan")


def _sample_generations(state: "LoopState", harness: Harness, instances: Sequence[Instance], prompts: Sequence[Any],
                        update: "UpdateSettings") -> list[Group]:
    """The model's group sampler: each prompt prefilled once, its ``group_size`` completions drawn from
    softmax(logits / T) (top-p 1) with EOS kept, metered as training rollouts."""
    from sia_bench import metering
    from sia_bench.models.base import SamplingParams

    model = state.agent.model
    params = SamplingParams(max_new_tokens=update.max_new_tokens or harness["max_new_tokens"],
                            temperature=update.temperature, top_p=1.0)
    with metering.charging(purpose=TRAIN_ROLLOUT):
        sampled = model.sample_groups([p.messages for p in prompts], update.group_size, params)
    return [Group(inst, list(s.prompt_ids), [list(c) for c in s.completions], list(s.texts),
                  [reward_of(state, harness, inst, t) for t in s.texts]) for inst, s in zip(instances, sampled)]


def option_policy(scores: "torch.Tensor", temperature: float) -> "torch.Tensor":
    """log pi over options: log_softmax(score / T), score = mean token log-probability (the ranker's own)."""
    import torch

    return torch.log_softmax(scores / temperature, -1)


def _sample_options(state: "LoopState", harness: Harness, instances: Sequence[Instance], prompts: Sequence[Any],
                    update: "UpdateSettings", value_head: Any) -> list[Group]:
    """Options as rows (their tokens exactly as the ranker scores them, no EOS), samples drawn from the option
    policy; the scores come from the shared-prefix pass the gradient step uses, so the sampling policy and the
    trained one are the same function."""
    import torch

    from sia_bench import metering
    from sia_bench.improvers.trainers.forward import CommonPrefix, SharedPrefix

    model = state.agent.model
    tok = model.tokenizer
    groups = []
    prefixes = [tok(model.chat_text(p.messages), add_special_tokens=False)["input_ids"] for p in prompts]
    base = None
    for n, (inst, prompt, prefix) in enumerate(zip(instances, prompts, prefixes)):
        options = [tok(o, add_special_tokens=False)["input_ids"] or [tok.eos_token_id] for o in prompt.options]
        with torch.no_grad(), metering.model_call(model, purpose=TRAIN_ROLLOUT) as call:
            if n == 0:  # the prompts' shared leading tokens (system block), run once (its seconds land here)
                base = CommonPrefix.of(model.hf, prefixes, model.device)
            shared = SharedPrefix(model.hf, prefix, model.device, need_hidden=value_head is not None, base=base)
            logp = option_policy(shared.rows(options).mean_logps(), update.temperature)
            value = value_head(shared.last_hidden).squeeze(-1) if value_head is not None else None
            call.count(len(prefix) + sum(map(len, options)))
        picks = torch.multinomial(logp.double().exp(), update.group_size, replacement=True).tolist()
        texts = [prompt.options[k] for k in picks]
        group = Group(inst, prefix, [options[k] for k in picks], texts,
                      [reward_of(state, harness, inst, t) for t in texts], options=options, picks=picks)
        group.old["logp"] = logp
        if value is not None:
            group.old["value"] = value
        groups.append(group)
    return groups
