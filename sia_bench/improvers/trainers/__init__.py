"""Weight updates for the Task Agent on a LoRA adapter: GRPO, rejection-sampling fine-tuning (RFT), entropic
advantage weighting, and PPO with GAE and a value head.

Why our own loop and not TRL's trainers: the maths is TRL's (GRPO's loss with ``beta=0`` and token-level
normalisation, PPO's clipped surrogate, clipped value loss and whitened GAE advantages), but the trainers own things
that must be ours. They build their own dataset/dataloader, optimizer, accelerate state and generation path around a
model they wrap themselves, score with reward functions of ``(prompts, completions)``, and cannot resample a prompt
whose group has zero reward variance. Here the prompts come from *our* harness (``task.render`` + the chat
template), rewards from the task's scorer (often a sandbox) through the agent's crash-proof parse/score, the model is
the already-wrapped :class:`~sia_bench.models.hf.HFModel` whose adapter stays in place between the loop's
evaluations, every rollout is charged to our ledger, and the optimizer and schedule must carry across generations
in safe files beside the adapter. Two things TRL has no notion of decide it: under a rank-mode harness the action is
an *option* drawn from softmax(mean token log-prob / T), a sequence-level policy TRL's token-level trainers cannot
express; and a group's rows share their prompt, so one prefix pass with a KV cache serves sampling, the old-policy
pass and the gradient (TRL runs the prompt once per sampled row: about group_size times the work on a ~950-token
legal prompt whose answers are a few tokens).

The exact objectives are in :mod:`.objectives`; advantages in :mod:`.advantages`:

* GRPO: ``A_i = (r_i - mean(r)) / (std(r) + 1e-4)`` within a prompt's group, one update per batch (ratio 1:
  REINFORCE with a group baseline); more epochs/minibatches turn on PPO-style clipping (TRL's ``num_iterations``).
* Entropic (TTT-Discover): ``A_i = G * softmax(r / beta)_i - 1``, beta fixed or set per group so that
  ``KL(w || uniform) = ln 2``.
* RFT (DSPy BetterTogether's bootstrap fine-tuning): keep each distinct sample whose reward reaches the threshold,
  minimise its negative log-likelihood under the agent's policy.
* SFT (the ``sft`` attribution control): no sampling; RFT's loss on each drawn prompt's gold completion
  (:meth:`~sia_bench.task.Task.reference_text`), so the weights lever can be compared with and without RL.
* PPO (the SIA paper's weight update): a linear value head on the last hidden state, trained with the LoRA; rewards
  at the final token (minus ``kl_coef`` x the per-token log-ratio to the base model), GAE(gamma, lambda) on the
  rollout's values, whitened advantages, clipped surrogate and clipped value loss over ``epochs`` passes of
  ``minibatches``, optional entropy bonus. In rank mode an episode is one option: the value is the prompt's
  baseline and the advantage is ``r - V``.

Groups without a learning signal are skipped, counted and replaced for up to ``resample_rounds`` draws; a round with
nothing to learn takes no optimizer step and says so. Training runs in the model's dtype on its device: fp32 on CPU
(bf16 is ~30x slower there), bf16 base weights with fp32 LoRA weights and value head on a GPU.
"""

from __future__ import annotations

from typing import Any

from sia_bench.improvers.trainers.advantages import (adaptive_beta, entropic_advantages, entropic_weights, gae,
                                                     group_signal, grpo_advantages, rft_keep, whiten)
from sia_bench.improvers.trainers.settings import ALGOS, SUPERVISED, UpdateSettings, WeightUpdate

# Names that need torch are loaded on first use, so importing the settings stays cheap.
_LAZY = {
    "apply_weight_update": "update", "train_pool": "update", "ppo_advantages": "update", "MAX_GRAD_NORM": "update",
    "Group": "rollouts", "sample_groups": "rollouts", "reference_groups": "rollouts", "step_seed": "rollouts",
    "next_prompts": "rollouts",
    "prepare_adapter": "state", "Trainer": "state", "TrainerState": "state", "lr_at": "state",
    "SharedPrefix": "forward", "make_value_head": "forward",
    "backward_minibatch": "objectives", "clipped_surrogate": "objectives", "clipped_value_loss": "objectives",
    "old_policy_pass": "objectives",
    "StepCost": "cost", "estimate_step_cost": "cost", "steps_for_budget": "cost", "machine_flops_per_second": "cost",
}

__all__ = ["ALGOS", "SUPERVISED", "UpdateSettings", "WeightUpdate", "adaptive_beta", "entropic_advantages",
           "entropic_weights", "gae", "group_signal", "grpo_advantages", "rft_keep", "whiten", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
