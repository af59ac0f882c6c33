"""One weight update: rollout rounds on train prompts, each followed by epochs x minibatches optimizer steps.

A round samples ``prompts_per_step`` prompts (replacing groups without a learning signal for up to
``resample_rounds`` extra draws), computes advantages (group-normalised for grpo, entropic weights, RFT's keep mask,
or GAE with the value head for ppo), then takes ``epochs`` passes over the batch split into ``minibatches`` groups of
prompts, one clipped AdamW step per minibatch. ``sft`` draws the same prompts but samples nothing: each prompt's row
is the task's gold completion (instances without one are skipped, not replaced), trained with RFT's loss. The
training position (adapter, optimizer, value head, schedule, prompt stream) continues from the run's latest trained
adapter (``continue_from="last"``, the default) or the best kept one (``"best"``) and is saved with the new one
(:mod:`.state`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from sia_bench.harness import Harness
from sia_bench.improvers.trainers.advantages import gae, group_signal, whiten
from sia_bench.improvers.trainers.cost import forward_flops, train_flops
from sia_bench.improvers.trainers.objectives import backward_minibatch, completion_mask, old_policy_pass
from sia_bench.improvers.trainers.rollouts import Group, next_prompts, reference_groups, sample_groups, step_seed
from sia_bench.improvers.trainers.settings import SUPERVISED, WeightUpdate
from sia_bench.improvers.trainers.state import STATE_FILE, Trainer
from sia_bench.task import Instance

if TYPE_CHECKING:
    from sia_bench.improvers.base import LoopState

MAX_GRAD_NORM = 1.0  # TRL's default clipping


def train_pool(train: Sequence[Instance], ids: list[str] | None) -> list[Instance]:
    if ids is None:
        if not train:
            raise ValueError("weight update: the train split is empty")
        return list(train)
    by_id = {inst.id: inst for inst in train}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"weight_update.instance_ids: {unknown[:3]} are not train instances")
    return [by_id[i] for i in dict.fromkeys(ids)]


def start_adapter(state: "LoopState", update: WeightUpdate) -> Path | None:
    """The adapter an update continues (see ``UpdateSettings.continue_from``): the best kept one, or the run's
    latest trained adapter whose saved training state is still on disk (else the best kept one)."""
    if update.continue_from == "best":
        return state.best_adapter_dir
    run_dir = Path(state.workdir).parent  # candidate paths are recorded relative to the run folder
    for gen in reversed(state.history):
        trained = any(a.get("type") == "weight_update" and (a.get("report") or {}).get("optimizer_steps")
                      for a in gen.actions)
        if trained and gen.candidate is not None and gen.candidate.adapter_dir:
            folder = run_dir / gen.candidate.adapter_dir
            if (folder / STATE_FILE).exists():
                return folder
    return state.best_adapter_dir


def apply_weight_update(state: "LoopState", harness: Harness, update: WeightUpdate) -> tuple[Path, dict]:
    """Train the LoRA adapter of state.agent.model on TRAIN instances with prompts rendered by ``harness``,
    continuing the training state of :func:`start_adapter` (or a fresh one); save adapter + state to
    ``state.workdir / "adapter"``; charge ``state.gen_ledger``; return (adapter_dir, report)."""
    update.validate()
    model = state.agent.model
    if not getattr(model, "trainable", False) or not hasattr(model, "enable_lora"):
        raise ValueError(f"weight update: the task model {getattr(model, 'name', model)!r} has no trainable weights "
                         "(use the hf or tiny backend)")
    t0 = time.perf_counter()
    pool = train_pool(state.train, update.instance_ids)
    trainer = Trainer(model, start_adapter(state, update), update, state.seed)
    run = _Run(state, harness, update, pool, trainer)
    rounds = [run.round() for _ in range(update.steps)]
    adapter_dir = Path(state.workdir) / "adapter"
    trainer.state.updates += 1
    trainer.save(adapter_dir)
    model.use_trained_adapter(str(adapter_dir))
    seconds = time.perf_counter() - t0
    opt_steps = sum(r["optimizer_steps"] for r in rounds)
    led = state.gen_ledger
    led.train_rollouts += run.rollouts
    led.train_tokens += run.tokens
    led.train_steps += opt_steps
    led.train_seconds += seconds
    flops = run.sample_flops + run.train_flops
    report = {
        "algo": update.algo, "started_from": trainer.started_from, "optimizer": trainer.optimizer_origin,
        "lora_rank": trainer.state.lora_rank, "optimizer_steps": opt_steps, "global_step": trainer.state.global_step,
        "epochs": update.resolved_epochs(), "minibatches": update.resolved_minibatches(),
        "rollouts": run.rollouts, "tokens": run.tokens, "seconds": round(seconds, 3),
        "sample_flops": run.sample_flops, "train_flops": run.train_flops,
        "achieved_flops_per_second": flops / seconds if seconds > 0 else None,
        "mean_reward_per_step": [r["mean_reward"] for r in rounds], "loss_per_step": [r["loss"] for r in rounds],
        "skipped_groups": sum(r["skipped_groups"] for r in rounds), "steps": rounds, "adapter_dir": str(adapter_dir)}
    return adapter_dir, report


class _Run:
    """The rounds of one update, with their running totals."""

    def __init__(self, state: "LoopState", harness: Harness, update: WeightUpdate, pool: list[Instance],
                 trainer: Trainer):
        self.state, self.harness, self.update, self.pool, self.trainer = state, harness, update, pool, trainer
        self.model = state.agent.model
        self.parameters = sum(p.numel() for n, p in self.model.hf.named_parameters() if "lora_" not in n)
        self.focus_cursor = 0
        self.rollouts = self.tokens = 0
        self.sample_flops = self.train_flops = 0.0

    def _draw(self, n: int) -> list[Instance]:
        st = self.trainer.state
        if self.update.instance_ids is None:  # the run's prompt stream, continued across generations
            batch, st.cursor = next_prompts(self.pool, st.data_seed, st.cursor, n)
            return batch
        batch, self.focus_cursor = next_prompts(self.pool, self.state.seed, self.focus_cursor, n)
        return batch

    def _sample(self, record: dict[str, Any]) -> list[Group]:
        update, used, rewards = self.update, [], []
        head = self.trainer.value_head if update.algo == "ppo" else None
        for _ in range(update.resample_rounds + 1):
            need = update.prompts_per_step - len(used)
            if need <= 0:
                break
            for group in sample_groups(self.state, self.harness, self._draw(need), update, value_head=head):
                self.rollouts += len(group.completions)
                self.tokens += len(group.completions) * len(group.prompt_ids) + sum(map(len, group.completions))
                self.sample_flops += forward_flops(self.parameters, group.tokens())  # as the meter charges it
                rewards += [r for r in group.rewards if math.isfinite(r)]
                record["unscorable"] += sum(not math.isfinite(r) for r in group.rewards)
                group.weights = group_signal(update.algo, group.rewards, update, group.texts)
                if group.weights is None:
                    record["skipped_groups"] += 1
                else:
                    used.append(group)
        record["groups_used"] = len(used)
        record["mean_reward"] = sum(rewards) / len(rewards) if rewards else float("nan")
        if update.algo == "ppo" and len(set(rewards)) < 2 and update.kl_coef == 0:
            record["note"] = "every sampled reward in the batch is the same: no signal, step not taken"
            return []
        return used

    def _references(self, record: dict[str, Any]) -> list[Group]:
        """sft: the round's draw from the same prompt stream, each prompt with its gold completion as its one row."""
        batch = self._draw(self.update.prompts_per_step)
        groups = reference_groups(self.state, self.harness, batch)
        used = [g for g in groups if g is not None]
        record["no_reference"] = len(groups) - len(used)
        record["skipped_groups"] += record["no_reference"]
        record["groups_used"] = len(used)
        if not used:
            raise ValueError(f"sft: task {self.state.task.name!r} has no reference_text for any of the {len(batch)} "
                             f"train instances of round {record['step']} ({', '.join(i.id for i in batch[:4])}"
                             f"{', ...' if len(batch) > 4 else ''}) under this harness; sft trains on gold "
                             "completions, which this task does not provide")
        return used

    def round(self) -> dict[str, Any]:
        update, trainer = self.update, self.trainer
        ts = time.perf_counter()
        round_index = trainer.state.rounds
        seed = step_seed(self.state.seed, round_index)
        torch.manual_seed(seed)
        record: dict[str, Any] = {"step": round_index, "groups_used": 0, "skipped_groups": 0, "unscorable": 0,
                                  "mean_reward": float("nan"), "loss": None, "completion_tokens": 0,
                                  "optimizer_steps": 0, "updated": False}
        used = self._references(record) if update.algo == "sft" else self._sample(record)
        trainer.state.rounds += 1
        record["sample_seconds"] = round(time.perf_counter() - ts, 3)
        if used:
            self._train(used, seed, record)
        elif "note" not in record:
            record["note"] = "no group carried a learning signal: step not taken"
        record["seconds"] = time.perf_counter() - ts
        return record

    def _train(self, used: list[Group], seed: int, record: dict[str, Any]) -> None:
        update, trainer = self.update, self.trainer
        t_train = time.perf_counter()
        epochs, minibatches = update.resolved_epochs(), min(update.resolved_minibatches(), len(used))
        free = [g for g in used if not g.rank]
        needs_old = update.algo == "ppo" or (update.algo not in SUPERVISED and epochs * minibatches > 1)
        passes = int(needs_old and bool(free)) + int(update.kl_coef > 0)
        old_policy_pass(self.model, used if update.kl_coef > 0 else free if needs_old else [], update,
                        trainer.value_head)
        self.sample_flops += passes * forward_flops(self.parameters, sum(g.tokens() for g in used))
        if update.algo == "ppo":
            ppo_advantages(used, update)
        record["completion_tokens"] = sum(sum(map(len, g.completions)) for g in used)
        generator = torch.Generator().manual_seed(seed)
        losses, stats = [], {"policy_loss": [], "value_loss": [], "clip_fraction": [], "approx_kl": [],
                             "grad_norm": [], "lr": []}
        ratio_dev = 0.0
        for _epoch in range(epochs):
            order = torch.randperm(len(used), generator=generator).tolist()
            for part in _split(order, minibatches):
                trainer.zero_grad()
                terms = backward_minibatch(self.model, [used[i] for i in part], update, trainer.value_head)
                self.train_flops += train_flops(self.parameters, sum(used[i].tokens() for i in part))
                if not math.isfinite(terms.loss):
                    trainer.zero_grad()
                    record["note"] = "non-finite loss: step not taken"
                    continue
                norm, lr, stepped = trainer.step(MAX_GRAD_NORM)
                if not stepped:
                    record["note"] = "non-finite gradient: step not taken"
                    continue
                record["optimizer_steps"] += 1
                losses.append(terms.loss)
                ratio_dev = max(ratio_dev, terms.ratio_dev)
                for key, value in (("policy_loss", terms.policy), ("value_loss", terms.value),
                                   ("clip_fraction", terms.clipped / terms.count), ("approx_kl", terms.approx_kl),
                                   ("grad_norm", norm), ("lr", lr)):
                    stats[key].append(value)
        record["updated"] = record["optimizer_steps"] > 0
        record["loss"] = sum(losses) / len(losses) if losses else None
        record["ratio_max_deviation"] = ratio_dev
        record.update({k: v for k, v in stats.items() if v and (k != "value_loss" or update.algo == "ppo")})
        record["train_seconds"] = round(time.perf_counter() - t_train, 3)


def _split(order: list[int], parts: int) -> list[list[int]]:
    """``order`` cut into ``parts`` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(order), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(order[start:end])
        start = end
    return [p for p in out if p]


def ppo_advantages(groups: Sequence[Group], settings: WeightUpdate) -> None:
    """Rewards at the final token (minus ``kl_coef`` x the sampled log-ratio to the base, per token), GAE with the
    rollout's values, advantages whitened over the whole batch; unscorable (NaN) samples get advantage 0 and their
    own value as target."""
    flat_adv, flat_mask = [], []
    for g in groups:
        finite = torch.tensor([math.isfinite(r) for r in g.rewards], dtype=torch.float32)
        reward = torch.tensor([r if math.isfinite(r) else 0.0 for r in g.rewards], dtype=torch.float32)
        if g.rank:
            picks = torch.tensor(g.picks)
            if settings.kl_coef > 0:
                reward = reward - settings.kl_coef * (g.old["logp"][picks] - g.old["ref"][picks]).cpu()
            value = g.old["value"].detach().cpu().expand(len(g.rewards))
            adv, returns, mask = (reward - value) * finite, reward * finite + value * (1 - finite), finite
        else:
            mask = completion_mask(g, "cpu") * finite.unsqueeze(1)
            per_token = torch.zeros_like(mask)
            if settings.kl_coef > 0:
                per_token = -settings.kl_coef * (g.old["logp"] - g.old["ref"]).cpu() * mask
            last = (completion_mask(g, "cpu").sum(1) - 1).long()
            per_token[torch.arange(len(g.rewards)), last] += reward * finite
            values = g.old["value"].cpu()
            adv, returns = gae(per_token, values, mask, settings.gamma, settings.lam)
            returns = returns + values * (completion_mask(g, "cpu") - mask)  # unscorable rows: target = own value
        g.advantages, g.returns = adv, returns
        flat_adv.append(adv.reshape(-1))
        flat_mask.append(mask.reshape(-1))
    white = whiten(torch.cat(flat_adv), torch.cat(flat_mask))
    start = 0
    device = groups[0].old["logp"].device if groups and "logp" in groups[0].old else "cpu"
    for g in groups:
        n = g.advantages.numel()
        g.advantages = white[start:start + n].reshape(g.advantages.shape).to(device)
        g.returns = g.returns.to(device)
        start += n
