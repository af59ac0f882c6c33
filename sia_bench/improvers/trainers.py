"""Weight updates for the Task Agent: GRPO, rejection-sampling fine-tuning and entropic weighting on a LoRA adapter.

Why our own loop and not TRL's ``GRPOTrainer``: the maths is the same, but the trainer owns things we must own.
It builds its own dataset/dataloader, optimizer, accelerate state and generation path around a model it wraps
itself, scores with reward functions of ``(prompts, completions)``, and cannot resample a prompt whose group has
zero reward variance (it logs the fraction and trains on zero advantages). Here the prompts come from *our*
harness (``task.render`` + the model's chat template), rewards from the task's scorer (often a sandbox) through
the agent's crash-proof parse/score, the model is the already-wrapped :class:`~sia_bench.models.hf.HFModel` whose
adapter must stay in place between the loop's evaluations, and every rollout is charged to our ledger. The loop
below is ~200 lines of that same maths, tested on the tiny model.

The maths (TRL's ``_compute_loss`` with its defaults, ``beta=0``, ``num_iterations=1``):

* GRPO: for each prompt, ``group_size`` completions are sampled; advantage ``A_i = (r_i - mean(r)) / (std(r) +
  1e-4)`` within the group, broadcast to every completion token; loss ``-sum_t A_i * rho_it / n_tokens`` over all
  completion tokens of the batch (DAPO's token-level normalisation, TRL's default). Each optimizer step samples
  fresh completions and takes one gradient step on them, so the importance ratio ``rho = exp(logp - logp_old)`` is
  exactly 1 (it is kept in the graph only for its gradient): this *is* REINFORCE with a group-mean baseline and
  std scaling, and PPO clipping never activates. An optional k3 KL penalty to the reference (the base model, i.e.
  the adapter switched off) is off by default (``kl_coef=0``), as in TRL.
* RFT / expert iteration: sample the same groups, keep the completions whose reward reaches ``reward_threshold``
  and take an SFT step (token-level NLL) on them.
* Entropic (TTT-Discover style, for continuous rewards): weights ``w = softmax(r / beta)`` within the group and
  advantage ``A_i = G * w_i - 1`` (mean zero, so the group's own mean is the baseline); ``beta`` is fixed when
  given, else chosen per group by bisection so that ``KL(w || uniform) = ln 2`` (the paper's adaptive rule).

Groups that carry no learning signal (zero reward variance for GRPO/entropic, no sample above the threshold for
RFT) are skipped, counted, and replaced by fresh prompts for up to ``resample_rounds`` extra rounds; a step with no
informative group at all takes no optimizer step and says so. Training runs in the model's dtype on its device:
fp32 on CPU (bf16 is ~30x slower there), bf16 base weights with fp32 LoRA weights on a GPU (peft keeps adapter
weights in fp32). Multi-GPU data parallelism is not wired here.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from sia_bench.harness import Harness
from sia_bench.task import Instance

if TYPE_CHECKING:
    import torch

    from sia_bench.improvers.base import LoopState

ALGOS = ("grpo", "rft", "entropic")
ADV_EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)
ENTROPIC_KL = math.log(2)  # TTT-Discover's adaptive-beta target: KL(weights || uniform) = ln 2
# Tokens (rows x padded length) per forward/backward; gradients accumulate over the step's batch. With gradient
# checkpointing, one GRPO step of SmolLM2 on 8 rows of 1,000 tokens peaks at 3.2 GB here; 8-row micro-batches
# without it took 14.7 GB, and two parallel ablation workers were OOM-killed on 24 GB.
MICRO_TOKENS = 2048
MAX_GRAD_NORM = 1.0  # TRL's default clipping


@dataclass
class WeightUpdate:
    """The ``weight_update`` action of the Feedback-Agent's schema: what to train, how long, on which prompts."""

    algo: str = "grpo"  # "grpo" | "rft" | "entropic"
    steps: int = 2  # optimizer steps in this update
    lr: float = 5e-4
    group_size: int = 4  # completions sampled per prompt
    prompts_per_step: int = 4
    lora_rank: int = 8
    temperature: float = 1.0
    instance_ids: list[str] | None = None  # focus on these train instances (e.g. a failure cluster); None = sample
    rationale: str = ""
    reward_threshold: float = 1.0  # rft keeps samples with reward >= this (1.0 = full credit on 0/1 scorers)
    entropic_beta: float = 0.0  # > 0 fixes beta; 0 = adaptive (KL(weights || uniform) = ln 2 per group)
    kl_coef: float = 0.0  # k3 KL penalty to the base model; 0 = off (TRL's default)
    max_new_tokens: int = 0  # 0 = the harness's max_new_tokens
    resample_rounds: int = 2  # extra sampling rounds per step to replace groups without signal

    def validate(self) -> "WeightUpdate":
        """Return self, or raise ValueError naming the bad setting."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"weight_update.{name}={getattr(self, name)!r}: {why}")

        if self.algo not in ALGOS:
            bad("algo", f"choose one of {', '.join(ALGOS)}")
        for name, low, high in (("steps", 1, 10_000), ("group_size", 1, 256), ("prompts_per_step", 1, 4096),
                                ("lora_rank", 1, 1024), ("max_new_tokens", 0, 32_768), ("resample_rounds", 0, 100)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                bad(name, f"must be a whole number in [{low}, {high}]")
        for name, low, high in (("lr", 0.0, 1.0), ("temperature", 0.0, 5.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low < value <= high:
                bad(name, f"must be a number in ({low}, {high}]")
        for name in ("reward_threshold", "entropic_beta", "kl_coef"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, "must be a finite number")
        if self.entropic_beta < 0 or self.kl_coef < 0:
            bad("entropic_beta" if self.entropic_beta < 0 else "kl_coef", "must be >= 0")
        if self.algo != "rft" and self.group_size < 2:
            bad("group_size", f"{self.algo} compares completions within a group: needs at least 2")
        if self.instance_ids is not None:
            if (not isinstance(self.instance_ids, (list, tuple)) or not self.instance_ids
                    or not all(isinstance(i, str) for i in self.instance_ids)):
                bad("instance_ids", "must be a non-empty list of train instance ids, or None")
            self.instance_ids = list(self.instance_ids)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- advantages (pure maths, tested directly) ------------------------------------------------------------------
def grpo_advantages(rewards: Sequence[float]) -> list[float]:
    """(r - mean) / (std + eps) within one group (sample std, as TRL's ``nanstd``); NaN rewards get 0."""
    vals = [r for r in rewards if math.isfinite(r)]
    if len(vals) < 2:
        return [0.0] * len(rewards)
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return [(r - mean) / (std + ADV_EPS) if math.isfinite(r) else 0.0 for r in rewards]


def entropic_weights(rewards: Sequence[float], beta: float) -> list[float]:
    """softmax(r / beta) over the finite rewards of a group (NaN rewards weigh 0)."""
    finite = [r for r in rewards if math.isfinite(r)]
    top = max(finite)
    exps = [math.exp((r - top) / beta) if math.isfinite(r) else 0.0 for r in rewards]
    total = sum(exps)
    return [e / total for e in exps]


def adaptive_beta(rewards: Sequence[float], kl_target: float = ENTROPIC_KL) -> float:
    """The beta whose softmax weights sit at KL(w || uniform) = kl_target (capped at what the group allows)."""
    finite = [r for r in rewards if math.isfinite(r)]
    n = len(finite)
    spread = max(finite) - min(finite)
    if n < 2 or spread <= 0:
        return 1.0
    kl_target = min(kl_target, 0.999 * math.log(n / sum(r == max(finite) for r in finite)))

    def kl(beta: float) -> float:
        w = entropic_weights(finite, beta)
        return sum(x * math.log(x * n) for x in w if x > 0)

    lo, hi = spread * 1e-4, spread * 1e4  # kl falls as beta grows
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if kl(mid) > kl_target else (lo, mid)
    return math.sqrt(lo * hi)


def entropic_advantages(rewards: Sequence[float], beta: float = 0.0) -> list[float]:
    """A_i = G * softmax(r / beta)_i - 1 (mean zero over the finite rewards); beta 0 means adaptive."""
    finite = [r for r in rewards if math.isfinite(r)]
    if len(finite) < 2 or max(finite) == min(finite):
        return [0.0] * len(rewards)
    w = entropic_weights(rewards, beta if beta > 0 else adaptive_beta(rewards))
    return [len(finite) * x - 1.0 if math.isfinite(r) else 0.0 for x, r in zip(w, rewards)]


def group_signal(algo: str, rewards: Sequence[float], update: WeightUpdate) -> list[float] | None:
    """Per-completion weights for the loss, or None when the group teaches nothing (and should be skipped)."""
    finite = [r for r in rewards if math.isfinite(r)]
    if algo == "rft":
        keep = [1.0 if math.isfinite(r) and r >= update.reward_threshold else 0.0 for r in rewards]
        return keep if any(keep) else None
    if len(finite) < 2 or max(finite) == min(finite):
        return None
    return grpo_advantages(rewards) if algo == "grpo" else entropic_advantages(rewards, update.entropic_beta)


# -- rollouts --------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One prompt's sampled completions, their rewards and the loss weights derived from them."""

    instance: Instance
    prompt_ids: list[int]
    completions: list[list[int]]
    texts: list[str]
    rewards: list[float]
    weights: list[float] | None = None


def sample_groups(state: "LoopState", harness: Harness, instances: Sequence[Instance], update: WeightUpdate
                  ) -> list[Group]:
    """Sample ``group_size`` completions per instance with the adapter on, and reward each with the task scorer.

    The rollouts follow the policy the agent actually runs under ``harness``: free generation, or, where the harness
    ranks a closed set of options (``answer_mode=rank``), options drawn from ``softmax(score / temperature)`` over the
    ranker's own scores (mean token log-probability), whose greedy limit is the ranker's argmax. Sampling free text
    under a rank-mode harness would train a behaviour the agent never uses (and, on legal_charges with a 135M model,
    never earns a reward: every group had zero variance)."""
    prompts = [state.task.render(harness, inst) for inst in instances]
    rank = harness.params.get("answer_mode") == "rank"
    ranked = [i for i, p in enumerate(prompts) if rank and p.options]
    groups: dict[int, Group] = {}
    if ranked:
        groups.update(zip(ranked, _sample_options(state, harness, [instances[i] for i in ranked],
                                                  [prompts[i] for i in ranked], update)))
    free = [i for i in range(len(instances)) if i not in groups]
    if free:
        groups.update(zip(free, _sample_generations(state, harness, [instances[i] for i in free],
                                                    [prompts[i] for i in free], update)))
    return [groups[i] for i in range(len(instances))]


def _reward(state: "LoopState", harness: Harness, inst: Instance, text: str) -> float:
    value = float(state.agent._score(inst, state.agent._parse(harness, inst, text, None)).value)
    return value if math.isfinite(value) else float("nan")


def _sample_generations(state: "LoopState", harness: Harness, instances: Sequence[Instance], prompts: Sequence[Any],
                        update: WeightUpdate) -> list[Group]:
    import torch

    model = state.agent.model
    texts = [model.chat_text(p.messages) for p in prompts]
    enc = model.encode_prompts([t for t in texts for _ in range(update.group_size)])
    max_new = update.max_new_tokens or harness["max_new_tokens"]
    eos, pad = model.tokenizer.eos_token_id, model.tokenizer.pad_token_id
    with torch.no_grad():
        seqs = model.hf.generate(**enc, max_new_tokens=max_new, do_sample=True, temperature=update.temperature,
                                 top_p=1.0, top_k=0, pad_token_id=pad, eos_token_id=eos)
    width = enc["input_ids"].shape[1]
    groups = []
    for g, inst in enumerate(instances):
        rows = range(g * update.group_size, (g + 1) * update.group_size)
        prompt = enc["input_ids"][rows[0]][enc["attention_mask"][rows[0]].bool()].tolist()
        comps, outs, rewards = [], [], []
        for row in rows:
            ids = seqs[row, width:].tolist()
            if eos in ids:
                ids = ids[:ids.index(eos) + 1]  # keep EOS: stopping is part of what is learned
            text = model.tokenizer.decode(ids, skip_special_tokens=True)
            comps.append(ids or [eos])
            outs.append(text)
            rewards.append(_reward(state, harness, inst, text))
        groups.append(Group(inst, prompt, comps, outs, rewards))
    return groups


def _sample_options(state: "LoopState", harness: Harness, instances: Sequence[Instance], prompts: Sequence[Any],
                    update: WeightUpdate) -> list[Group]:
    """Options as completions (their tokens exactly as the ranker scores them, no EOS). With GRPO's zero-mean group
    advantages, the gradient of the advantage-weighted option log-likelihoods is the policy gradient of the
    option-softmax policy (the normaliser's gradient cancels), so training raises the rank of rewarded options."""
    import torch

    model = state.agent.model
    tok = model.tokenizer
    with torch.no_grad():
        scores = model.loglikelihood([(p.messages, p.options) for p in prompts])
    groups = []
    for inst, prompt, opt_scores in zip(instances, prompts, scores):
        probs = torch.softmax(torch.tensor(opt_scores, dtype=torch.float64) / update.temperature, 0)
        picks = torch.multinomial(probs, update.group_size, replacement=True).tolist()
        prefix = tok(model.chat_text(prompt.messages), add_special_tokens=False)["input_ids"]
        comps, outs, rewards = [], [], []
        for k in picks:
            text = prompt.options[k]
            comps.append(tok(text, add_special_tokens=False)["input_ids"] or [tok.eos_token_id])
            outs.append(text)
            rewards.append(_reward(state, harness, inst, text))
        groups.append(Group(inst, prefix, comps, outs, rewards))
    return groups


# -- the loss --------------------------------------------------------------------------------------------------
def _batch_tensors(groups: Sequence[Group], pad: int, device: Any, drop_zero: bool) -> tuple["torch.Tensor", ...]:
    """Left-padded prompts + right-padded completions, with masks and positions, one row per completion.

    RFT drops the samples it does not keep; GRPO keeps zero-advantage rows so they count in the token normaliser.
    """
    import torch

    rows = [(g.prompt_ids, c, w) for g in groups for c, w in zip(g.completions, g.weights or [])
            if not (drop_zero and w == 0.0)]
    p_len = max(len(p) for p, _, _ in rows)
    c_len = max(len(c) for _, c, _ in rows)
    ids = torch.full((len(rows), p_len + c_len), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    cmask = torch.zeros((len(rows), c_len))
    weights = torch.tensor([w for _, _, w in rows], dtype=torch.float32)
    for i, (p, c, _) in enumerate(rows):
        ids[i, p_len - len(p):p_len] = torch.tensor(p)
        ids[i, p_len:p_len + len(c)] = torch.tensor(c)
        attn[i, p_len - len(p):p_len + len(c)] = 1
        cmask[i, :len(c)] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), attn.to(device), pos.to(device), cmask.to(device), weights.to(device)


def _completion_logps(hf: Any, ids: "torch.Tensor", attn: "torch.Tensor", pos: "torch.Tensor", c_len: int
                      ) -> "torch.Tensor":
    """Per-token log-probabilities of the last ``c_len`` tokens of each row (only those logits are computed)."""
    import torch

    logits = hf(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=c_len + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(-1, ids[:, -c_len:].unsqueeze(-1)).squeeze(-1)


def policy_step(model: Any, groups: Sequence[Group], algo: str, kl_coef: float) -> tuple[float, int]:
    """Accumulate gradients of this step's loss over micro-batches; returns (loss, completion tokens)."""
    ids, attn, pos, cmask, weights = _batch_tensors(groups, model.tokenizer.pad_token_id, model.device,
                                                  drop_zero=algo == "rft")
    n_tokens = int(cmask.sum().item())
    c_len = cmask.shape[1]
    rows = max(1, MICRO_TOKENS // ids.shape[1])
    total = 0.0
    with _checkpointed(model.hf):
        for start in range(0, ids.shape[0], rows):
            total += _micro_step(model, ids, attn, pos, cmask, weights, slice(start, start + rows), c_len, algo,
                                 kl_coef, n_tokens)
    return total, n_tokens


@contextmanager
def _checkpointed(hf: Any) -> Iterator[None]:
    """Gradient checkpointing for the step (activations are recomputed in backward: memory grows with layers, not
    with layers x tokens). transformers only checkpoints in train mode; SmolLM2-style models have no dropout, so train
    mode changes nothing else. The model goes back to eval mode for generation and ranking."""
    can = hasattr(hf, "gradient_checkpointing_enable")
    if can:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf.train()
    try:
        yield
    finally:
        hf.eval()
        if can:
            hf.gradient_checkpointing_disable()


def _micro_step(model: Any, ids: "torch.Tensor", attn: "torch.Tensor", pos: "torch.Tensor", cmask: "torch.Tensor",
                weights: "torch.Tensor", sl: slice, c_len: int, algo: str, kl_coef: float, n_tokens: int) -> float:
    """Backward of one micro-batch's share of the step loss (normalised by the whole step's tokens)."""
    import torch

    logp = _completion_logps(model.hf, ids[sl], attn[sl], pos[sl], c_len)
    mask, w = cmask[sl], weights[sl].unsqueeze(1)
    if algo == "rft":
        per_token = -logp * w  # SFT on kept samples (w is 1 for kept rows; dropped rows never got here)
    else:
        per_token = -w * torch.exp(logp - logp.detach())  # rho = 1; its gradient is A * grad(logp)
        if kl_coef > 0:
            with torch.no_grad(), model.hf.disable_adapter():
                ref = _completion_logps(model.hf, ids[sl], attn[sl], pos[sl], c_len)
            per_token = per_token + kl_coef * (torch.exp(ref - logp) - (ref - logp) - 1)
    loss = (per_token * mask).sum() / max(n_tokens, 1)
    loss.backward()
    return loss.item()


# -- the adapter -----------------------------------------------------------------------------------------------
def _lora_rank(model: Any) -> int | None:
    return model.hf.peft_config["default"].r if hasattr(model.hf, "peft_config") else None


def prepare_adapter(model: Any, best_dir: Path | None, rank: int, seed: int) -> str:
    """Start from the best adapter when there is one, else a fresh LoRA of ``rank`` (B = 0: outputs unchanged)."""
    import json

    import torch
    from peft.tuners.lora import LoraLayer

    want = json.loads((Path(best_dir) / "adapter_config.json").read_text())["r"] if best_dir else rank
    if _lora_rank(model) not in (None, want):
        model.hf = model.hf.unload()  # drop the adapter of another rank; base weights are untouched
    if best_dir is not None:
        model.load_adapter(Path(best_dir))
        return str(best_dir)
    if _lora_rank(model) is None:
        model.enable_lora(rank=rank, alpha=2 * rank)
    # Re-initialise from the seed in both cases (a rejected candidate's weights may still sit in the adapter), so
    # a fresh process and a long-lived one start from the same A (B = 0).
    torch.manual_seed(seed)
    for module in model.hf.modules():
        if isinstance(module, LoraLayer):
            module.reset_lora_parameters("default", True)
    model.use_trained_adapter("fresh")
    return "fresh"


def _train_pool(train: Sequence[Instance], ids: list[str] | None) -> list[Instance]:
    if ids is None:
        if not train:
            raise ValueError("weight update: the train split is empty")
        return list(train)
    by_id = {inst.id: inst for inst in train}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"weight_update.instance_ids: {unknown[:3]} are not train instances")
    return [by_id[i] for i in dict.fromkeys(ids)]


# -- the update ------------------------------------------------------------------------------------------------
def apply_weight_update(state: "LoopState", harness: Harness, update: WeightUpdate) -> tuple[Path, dict]:
    """Train the LoRA adapter of state.agent.model on TRAIN instances, prompts rendered with `harness` (so a patched
    harness changes the training prompts), starting from the currently loaded best adapter (or a fresh one),
    rewards = task.score(task.parse(harness, inst, completion)).value; save to state.workdir / "adapter";
    charge state.gen_ledger; return (adapter_dir, report) where report has per-step mean reward, skipped
    zero-variance groups, tokens, seconds, and the loss."""
    import torch

    update.validate()
    model = state.agent.model
    if not getattr(model, "trainable", False) or not hasattr(model, "enable_lora"):
        raise ValueError(f"weight update: the task model {getattr(model, 'name', model)!r} has no trainable weights "
                         "(use the hf or tiny backend)")
    t0 = time.perf_counter()
    pool = _train_pool(state.train, update.instance_ids)
    rng = random.Random(state.seed)
    started_from = prepare_adapter(model, state.best_adapter_dir, update.lora_rank, state.seed)
    torch.manual_seed(state.seed)
    params = [p for n, p in model.hf.named_parameters() if p.requires_grad]
    if not params or any("lora_" not in n for n, p in model.hf.named_parameters() if p.requires_grad):
        raise RuntimeError("weight update: only LoRA parameters may be trainable")
    optimizer = torch.optim.AdamW(params, lr=update.lr, weight_decay=0.0)
    order: list[Instance] = []
    steps, rollouts, tokens, opt_steps = [], 0, 0, 0
    for step in range(update.steps):
        ts = time.perf_counter()
        used: list[Group] = []
        sampled_rewards: list[float] = []
        skipped = unscorable = 0
        for _round in range(update.resample_rounds + 1):
            need = update.prompts_per_step - len(used)
            if need <= 0:
                break
            batch = []
            for _ in range(need):
                if not order:
                    order = rng.sample(pool, len(pool))
                batch.append(order.pop())
            groups = sample_groups(state, harness, batch, update)
            for group in groups:
                rollouts += len(group.completions)
                tokens += len(group.completions) * len(group.prompt_ids) + sum(map(len, group.completions))
                sampled_rewards += [r for r in group.rewards if math.isfinite(r)]
                unscorable += sum(not math.isfinite(r) for r in group.rewards)
                group.weights = group_signal(update.algo, group.rewards, update)
                if group.weights is None:
                    skipped += 1
                else:
                    used.append(group)
        record: dict[str, Any] = {
            "step": step, "groups_used": len(used), "skipped_groups": skipped, "unscorable": unscorable,
            "mean_reward": sum(sampled_rewards) / len(sampled_rewards) if sampled_rewards else float("nan"),
            "loss": None, "completion_tokens": 0, "updated": False}
        if used:
            optimizer.zero_grad(set_to_none=True)
            loss, n_tok = policy_step(model, used, update.algo, update.kl_coef)
            norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            record.update(loss=loss, completion_tokens=n_tok, grad_norm=float(norm))
            if math.isfinite(loss) and torch.isfinite(norm):
                optimizer.step()
                opt_steps += 1
                record["updated"] = True
            else:
                record["note"] = "non-finite loss or gradient: step not taken"
            optimizer.zero_grad(set_to_none=True)
        else:
            record["note"] = "no group carried a learning signal: step not taken"
        record["seconds"] = time.perf_counter() - ts
        steps.append(record)
    adapter_dir = Path(state.workdir) / "adapter"
    model.save_adapter(adapter_dir)
    model.use_trained_adapter(str(adapter_dir))
    seconds = time.perf_counter() - t0
    led = state.gen_ledger
    led.train_rollouts += rollouts
    led.train_tokens += tokens
    led.train_steps += opt_steps
    led.train_seconds += seconds
    report = {
        "algo": update.algo, "started_from": started_from, "lora_rank": _lora_rank(model),
        "optimizer_steps": opt_steps, "rollouts": rollouts, "tokens": tokens, "seconds": round(seconds, 3),
        "mean_reward_per_step": [s["mean_reward"] for s in steps], "loss_per_step": [s["loss"] for s in steps],
        "skipped_groups": sum(s["skipped_groups"] for s in steps), "steps": steps, "adapter_dir": str(adapter_dir)}
    return adapter_dir, report
