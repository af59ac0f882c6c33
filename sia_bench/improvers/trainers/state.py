"""Training state that carries across generations: the adapter, AdamW's moments and step counts, the value head,
the schedule position and the prompt stream, saved next to the adapter in safe formats only.

Files in an adapter folder (beside peft's ``adapter_config.json`` / ``adapter_model.safetensors``):

* ``optimizer.safetensors``: ``<param>.exp_avg``, ``<param>.exp_avg_sq``, ``<param>.step`` per trainable tensor,
  keyed by parameter name (LoRA names, and ``value_head.weight`` / ``value_head.bias``);
* ``value_head.safetensors``: the PPO value head, when one was trained;
* ``trainer_state.json``: the scalars (global optimizer step, rollout rounds, prompt-stream seed and cursor, rank).

No pickle anywhere. A continued update (warm start from the best kept adapter) restores all of it, so N steps in
one go and N/2 + N/2 with a save and a reload into a fresh model give the same weights and optimizer state.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sia_bench.improvers.trainers.forward import hidden_size, make_value_head
from sia_bench.improvers.trainers.settings import UpdateSettings

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
VALUE_HEAD_FILE = "value_head.safetensors"
STATE_VERSION = 1
MIN_LR_RATIO = 0.1  # cosine decays to this share of the peak lr
BETAS, EPS = (0.9, 0.999), 1e-8  # AdamW defaults, stated so a restored optimizer matches a fresh one exactly


@dataclass
class TrainerState:
    """The JSON scalars of the training position."""

    version: int = STATE_VERSION
    global_step: int = 0  # optimizer steps since the fresh adapter: the LR schedule's position
    rounds: int = 0  # rollout rounds since the fresh adapter: the sampling seeds' position
    data_seed: int = 0  # seed of the prompt stream's epoch permutations
    cursor: int = 0  # prompts drawn from the stream so far
    lora_rank: int = 0
    updates: int = 0  # weight updates (generations) this state has been through


def lr_at(step: int, settings: UpdateSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then constant, or cosine to MIN_LR_RATIO at ``schedule_steps``."""
    factor = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps else 1.0
    if settings.schedule_steps:
        progress = min(1.0, step / settings.schedule_steps)
        factor *= MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))
    return settings.lr * factor


def lora_rank(model: Any) -> int | None:
    return model.hf.peft_config["default"].r if hasattr(model.hf, "peft_config") else None


def prepare_adapter(model: Any, best_dir: Path | None, rank: int, seed: int) -> str:
    """Start from the best adapter when there is one, else a fresh LoRA of ``rank`` (B = 0: outputs unchanged)."""
    from peft.tuners.lora import LoraLayer

    want = json.loads((Path(best_dir) / "adapter_config.json").read_text())["r"] if best_dir else rank
    if lora_rank(model) not in (None, want):
        model.hf = model.hf.unload()  # drop the adapter of another rank; base weights are untouched
    if best_dir is not None:
        model.load_adapter(Path(best_dir))
        return str(best_dir)
    if lora_rank(model) is None:
        model.enable_lora(rank=rank, alpha=2 * rank)
    # Re-initialise from the seed in both cases (a rejected candidate's weights may still sit in the adapter), so
    # a fresh process and a long-lived one start from the same A (B = 0).
    torch.manual_seed(seed)
    for module in model.hf.modules():
        if isinstance(module, LoraLayer):
            module.reset_lora_parameters("default", True)
    model.use_trained_adapter("fresh")
    return "fresh"


class Trainer:
    """The live training state of one update: parameters, optimizer, value head and the JSON position."""

    def __init__(self, model: Any, best_dir: Path | None, settings: UpdateSettings, seed: int):
        self.model, self.settings = model, settings
        self.started_from = prepare_adapter(model, best_dir, settings.lora_rank, seed)
        self.lora = {n: p for n, p in model.hf.named_parameters() if p.requires_grad}
        if not self.lora or any("lora_" not in n for n in self.lora):
            raise RuntimeError("weight update: only LoRA parameters may be trainable")
        folder = Path(best_dir) if best_dir is not None else None
        saved = folder is not None and (folder / STATE_FILE).exists()
        self.state = TrainerState(**json.loads((folder / STATE_FILE).read_text())) if saved else TrainerState(
            data_seed=seed)
        self.state.lora_rank = lora_rank(model) or settings.lora_rank
        self.value_head = self._load_value_head(folder)
        self.params = dict(self.lora)
        if self.value_head is not None and settings.algo == "ppo":
            self.params.update({f"value_head.{n}": p for n, p in self.value_head.named_parameters()})
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=settings.lr, betas=BETAS, eps=EPS,
                                           weight_decay=0.0)
        self.carried: dict[str, torch.Tensor] = {}  # saved moments of tensors not trained now (e.g. the value head)
        self.optimizer_origin = self._restore_optimizer(folder) if saved else "fresh"

    def _load_value_head(self, folder: Path | None) -> torch.nn.Linear | None:
        path = folder / VALUE_HEAD_FILE if folder is not None else None
        if path is None or not path.exists():
            return make_value_head(hidden_size(self.model.hf), self.model.device) if self.settings.algo == "ppo" \
                else None
        from safetensors.torch import load_file

        tensors = load_file(str(path), device=str(self.model.device))
        head = make_value_head(tensors["weight"].shape[1], self.model.device)
        with torch.no_grad():
            head.weight.copy_(tensors["weight"])
            head.bias.copy_(tensors["bias"])
        return head

    def _restore_optimizer(self, folder: Path) -> str:
        from safetensors.torch import load_file

        path = folder / OPTIMIZER_FILE
        if not path.exists():
            return "fresh (no saved optimizer state)"
        tensors = load_file(str(path), device=str(self.model.device))
        restored = 0
        for name, param in self.params.items():
            if f"{name}.exp_avg" in tensors and tensors[f"{name}.exp_avg"].shape == param.shape:
                self.optimizer.state[param] = {"step": tensors[f"{name}.step"].cpu(),
                                               "exp_avg": tensors[f"{name}.exp_avg"].clone(),
                                               "exp_avg_sq": tensors[f"{name}.exp_avg_sq"].clone()}
                restored += 1
        self.carried = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in self.params}
        return f"restored ({restored} tensors, global step {self.state.global_step})"

    # -- stepping ----------------------------------------------------------------------------------------------
    def step(self, max_grad_norm: float) -> tuple[float, float, bool]:
        """Clip, then take one AdamW step at the schedule's lr; returns (grad norm, lr, stepped)."""
        params = list(self.params.values())
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        lr = lr_at(self.state.global_step, self.settings)
        stepped = bool(torch.isfinite(norm))
        if stepped:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            self.state.global_step += 1
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm), lr, stepped

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.value_head is not None:
            self.value_head.zero_grad(set_to_none=True)

    # -- saving ------------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """The adapter (peft), then the optimizer moments, the value head and the JSON position beside it."""
        from safetensors.torch import save_file

        from sia_bench.records import atomic_write_json

        folder = Path(folder)
        self.model.save_adapter(folder)
        tensors = dict(self.carried)
        for name, param in self.params.items():
            st = self.optimizer.state.get(param)
            if st:
                step = st["step"] if torch.is_tensor(st["step"]) else torch.tensor(float(st["step"]))
                tensors.update({f"{name}.exp_avg": st["exp_avg"], f"{name}.exp_avg_sq": st["exp_avg_sq"],
                                f"{name}.step": step.reshape(())})
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / OPTIMIZER_FILE))
        if self.value_head is not None:
            save_file({"weight": self.value_head.weight.detach().contiguous().cpu(),
                       "bias": self.value_head.bias.detach().contiguous().cpu()}, str(folder / VALUE_HEAD_FILE))
        atomic_write_json(folder / STATE_FILE, asdict(self.state))

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """The optimizer's moments by parameter name (what :meth:`save` writes), for comparisons."""
        out = {}
        for name, param in self.params.items():
            st = self.optimizer.state.get(param)
            if st:
                out.update({f"{name}.exp_avg": st["exp_avg"].clone(), f"{name}.exp_avg_sq": st["exp_avg_sq"].clone(),
                            f"{name}.step": torch.as_tensor(st["step"]).clone()})
        return out
