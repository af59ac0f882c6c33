"""The training objectives, written once for free generation (per token) and rank mode (per option).

Notation: a sample's log-probability under the policy being trained is ``logp``; under the policy that sampled it,
``old``; with the adapter off, ``ref``. Free generation: per token, ``logp_t = log softmax(z_t / T)[y_t]``. Rank
mode: per sample, ``logp = log pi(k)`` with ``pi = softmax(s / T)`` over the prompt's options and ``s_j`` option
j's *mean* token log-probability (the ranker's score), so gradients are those of the option policy that sampled
(``(1/T) * (grad s_k - sum_j pi_j grad s_j)``), not of the summed, length-weighted option likelihood.

* policy term (grpo, entropic, ppo): ``-min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)`` with ``rho = exp(logp -
  old)``; with one update per batch ``old = logp.detach()``, so rho = 1 and this is REINFORCE with the advantage.
* grpo / entropic KL (``kl_coef > 0``): ``+ kl_coef * (exp(ref - logp) - (ref - logp) - 1)`` (k3, TRL's GRPO).
* rft: ``-logp`` on the kept samples (SFT on the agent's own successful answers; in rank mode the cross-entropy of
  the option policy towards the kept option).
* sft: the same loss on the task's gold completion of each prompt (:meth:`Task.reference_text`) instead of kept
  samples: the mean token NLL of the gold answer given the prompt, or in rank mode ``-log pi(gold option)``.
* ppo value term: ``vf_coef * 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)``; entropy bonus
  ``-entropy_coef * H(pi)`` (per token over the vocabulary, or over the options).

Every term is summed over the minibatch's tokens (free generation, DAPO-style token normalisation) or samples (rank
mode) and divided by their count, so micro-batching does not change the gradient.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sia_bench import metering
from sia_bench.improvers.trainers.forward import CommonPrefix, RowOutputs, SharedPrefix, row_chunks
from sia_bench.improvers.trainers.rollouts import TRAIN_STEP, Group, option_policy
from sia_bench.improvers.trainers.settings import SUPERVISED, UpdateSettings


def clipped_surrogate(logp: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-element PPO policy loss ``-min(rho * A, clip(rho) * A)``."""
    ratio = torch.exp(logp - old)
    return -torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)


def clipped_value_loss(value: torch.Tensor, old: torch.Tensor, target: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-element ``0.5 * max((V - R)^2, (V_old + clip(V - V_old) - R)^2)``."""
    clipped = old + (value - old).clamp(-clip, clip)
    return 0.5 * torch.maximum((value - target) ** 2, (clipped - target) ** 2)


def k3(ref: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) at the sampled action."""
    delta = ref - logp
    return torch.exp(delta) - delta - 1.0


@dataclass
class Terms:
    """Sums over a minibatch, divided by ``count`` at the end; diagnostics ride along."""

    count: float = 0.0
    loss: float = 0.0
    policy: float = 0.0
    value: float = 0.0
    entropy: float = 0.0
    clipped: float = 0.0  # samples/tokens whose ratio left [1 - eps, 1 + eps]
    ratio_dev: float = 0.0  # max |rho - 1| seen
    approx_kl: float = 0.0  # sum of (old - logp) over samples/tokens

    def add(self, **values: float) -> None:
        for key, value in values.items():
            setattr(self, key, getattr(self, key) + value)


def minibatch_count(groups: Sequence[Group], algo: str) -> float:
    """The normaliser: tokens (free) or samples (rank) that carry loss."""
    total = 0.0
    for g in groups:
        live = _live_rows(g, algo)
        total += len(live) if g.rank else sum(len(g.completions[i]) for i in live)
    return max(total, 1.0)


def _live_rows(group: Group, algo: str) -> list[int]:
    """The rows that carry loss: all of them, except that rft/sft train only on the kept (non-zero weight) ones."""
    weights = group.weights or [1.0] * len(group.completions)
    return [i for i, w in enumerate(weights) if algo not in SUPERVISED or w != 0]


def backward_minibatch(model: Any, groups: Sequence[Group], settings: UpdateSettings, value_head: Any = None,
                       chunk_tokens: int | None = None) -> Terms:
    """Accumulate the gradient of the minibatch loss (module docstring) into the LoRA (and value head)."""
    algo = settings.algo
    terms = Terms(count=minibatch_count(groups, algo))
    work = [(g, c) for g in groups if (c := _chunks(g, algo, chunk_tokens))]
    base = None
    for n, (group, chunks) in enumerate(work):
        rows = group.rows
        with metering.model_call(model, purpose=TRAIN_STEP, training=True) as call:
            if n == 0:  # the minibatch's shared leading tokens, run once (its seconds land in this call)
                base = CommonPrefix.of(model.hf, [g.prompt_ids for g, _ in work], model.device)
            shared = SharedPrefix(model.hf, group.prompt_ids, model.device, need_hidden=algo == "ppo", base=base)
            for chunk in chunks:
                out = shared.rows([rows[i] for i in chunk])
                part = (_rank_terms if group.rank else _free_terms)(group, chunk, out, settings, value_head, terms)
                (part / terms.count).backward()
                terms.loss += part.item() / terms.count
            shared.backward()
            if base is not None and n == len(work) - 1:
                base.backward()
            # charged as if the prompt ran whole (see metering: cached work costs what it would cost fresh)
            call.count(len(group.prompt_ids) + sum(len(rows[i]) for c in chunks for i in c))
    for name in ("policy", "value", "entropy", "approx_kl"):
        setattr(terms, name, getattr(terms, name) / terms.count)
    return terms


def _chunks(group: Group, algo: str, chunk_tokens: int | None) -> list[list[int]]:
    """The row chunks one group is run in: rank mode one chunk (the option policy needs every option's score, and
    options are short); free text chunks of the live rows (rft/sft train only on kept rows; the others keep
    zero-advantage rows in the token count). Empty when no row carries loss."""
    rows = group.rows
    if group.rank:
        return [list(range(len(rows)))]
    live = _live_rows(group, algo)
    return [[live[j] for j in c] for c in row_chunks([rows[i] for i in live], chunk_tokens)] if live else []


def _free_terms(group: Group, rows: list[int], out: RowOutputs, s: UpdateSettings, value_head: Any,
                terms: Terms) -> torch.Tensor:
    mask = out.mask
    logp = out.token_logps(s.temperature)
    if s.algo in SUPERVISED:
        keep = torch.tensor([group.weights[i] for i in rows], device=mask.device).unsqueeze(1)
        loss = -(logp * keep * mask).sum()
        terms.add(policy=loss.item())
        return loss
    width = mask.shape[1]
    old = group.old["logp"][rows, :width] if "logp" in group.old else logp.detach()
    if group.advantages is not None:
        adv = group.advantages[rows, :width]
    else:
        adv = torch.tensor([group.weights[i] for i in rows], device=mask.device).unsqueeze(1).expand_as(logp)
    policy = (clipped_surrogate(logp, old, adv, s.clip_range) * mask).sum()
    loss = policy
    _ratio_stats(logp, old, mask, s.clip_range, terms)
    if s.kl_coef > 0 and s.algo != "ppo":
        loss = loss + s.kl_coef * (k3(group.old["ref"][rows, :width], logp) * mask).sum()
    if s.algo == "ppo":
        values = value_head(out.hidden).squeeze(-1)
        vloss = (clipped_value_loss(values, group.old["value"][rows, :width], group.returns[rows, :width],
                                    s.value_clip) * mask).sum()
        loss = loss + s.vf_coef * vloss
        terms.add(value=vloss.item())
        if s.entropy_coef > 0:
            ent = out.token_entropy(s.temperature).sum()
            loss = loss - s.entropy_coef * ent
            terms.add(entropy=ent.item())
    terms.add(policy=policy.item())
    return loss


def _rank_terms(group: Group, _options: list[int], out: RowOutputs, s: UpdateSettings, value_head: Any,
                terms: Terms) -> torch.Tensor:
    log_pi = option_policy(out.mean_logps(), s.temperature)
    picks = torch.tensor(group.picks, device=log_pi.device)
    logp = log_pi[picks]
    if s.algo in SUPERVISED:
        keep = torch.tensor(group.weights, device=logp.device)
        loss = -(logp * keep).sum()
        terms.add(policy=loss.item())
        return loss
    old = group.old["logp"][picks] if "logp" in group.old else logp.detach()
    adv = group.advantages if group.advantages is not None else torch.tensor(group.weights, device=logp.device)
    ones = torch.ones_like(logp)
    policy = clipped_surrogate(logp, old, adv, s.clip_range).sum()
    loss = policy
    _ratio_stats(logp, old, ones, s.clip_range, terms)
    if s.kl_coef > 0 and s.algo != "ppo":
        loss = loss + s.kl_coef * k3(group.old["ref"][picks], logp).sum()
    if s.algo == "ppo":
        value = value_head(out.hidden[0, 0]).squeeze(-1).expand_as(logp)  # the prompt's value, before any option
        vloss = clipped_value_loss(value, group.old["value"].expand_as(logp), group.returns, s.value_clip).sum()
        loss = loss + s.vf_coef * vloss
        terms.add(value=vloss.item())
        if s.entropy_coef > 0:
            ent = -(log_pi.exp() * log_pi).sum() * len(group.picks)
            loss = loss - s.entropy_coef * ent
            terms.add(entropy=ent.item())
    terms.add(policy=policy.item())
    return loss


def _ratio_stats(logp: torch.Tensor, old: torch.Tensor, mask: torch.Tensor, clip: float, terms: Terms) -> None:
    with torch.no_grad():
        ratio = torch.exp(logp - old)
        dev = ((ratio - 1.0).abs() * mask)
        terms.ratio_dev = max(terms.ratio_dev, float(dev.max()) if dev.numel() else 0.0)
        terms.clipped += float(((dev > clip).float() * mask).sum())
        terms.approx_kl += float(((old - logp) * mask).sum())


@torch.no_grad()
def old_policy_pass(model: Any, groups: Sequence[Group], settings: UpdateSettings, value_head: Any,
                    chunk_tokens: int | None = None) -> None:
    """Fill ``group.old`` with what the trained policy is compared to: the sampling policy's log-probs (and
    values, for ppo) where sampling did not already give them, and the base model's (adapter off) for the KL."""
    need_ref = settings.kl_coef > 0
    for group in groups:
        if group.rank:
            if need_ref:
                with model.hf.disable_adapter(), metering.model_call(model, purpose=TRAIN_STEP) as call:
                    call.count(group.tokens())
                    shared = SharedPrefix(model.hf, group.prompt_ids, model.device)
                    group.old["ref"] = option_policy(shared.rows(group.options).mean_logps(), settings.temperature)
            continue
        passes = [("logp", False)] + ([("ref", True)] if need_ref else [])
        for key, adapter_off in passes:
            if key in group.old:
                continue
            want_value = settings.algo == "ppo" and not adapter_off
            with (model.hf.disable_adapter() if adapter_off else contextlib.nullcontext(),
                  metering.model_call(model, purpose=TRAIN_STEP) as call):
                call.count(group.tokens())
                shared = SharedPrefix(model.hf, group.prompt_ids, model.device, need_hidden=want_value)
                logps, values = [], []
                for chunk in row_chunks(group.completions, chunk_tokens):
                    out = shared.rows([group.completions[i] for i in chunk])
                    logps.append(_pad(out.token_logps(settings.temperature), group))
                    if want_value:
                        values.append(_pad(value_head(out.hidden).squeeze(-1) * out.mask, group))
            group.old[key] = torch.cat(logps)
            if want_value:
                group.old["value"] = torch.cat(values)


def completion_mask(group: Group, device: Any) -> torch.Tensor:
    width = max(map(len, group.completions))
    mask = torch.zeros((len(group.completions), width), device=device)
    for i, c in enumerate(group.completions):
        mask[i, :len(c)] = 1.0
    return mask


def _pad(x: torch.Tensor, group: Group) -> torch.Tensor:
    width = max(map(len, group.completions))
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))
