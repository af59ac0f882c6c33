"""bfloat16 against float32 for the task model, timed in the same run on real legal prompts (SmolLM2-135M):

* a rank pass of the default start harness over 16 val cases: seconds, and how many cases pick the same option;
* one GRPO training minibatch (4 rank prompts x 8 sampled options, LoRA rank 8: peft keeps the adapter in fp32);
* the rank pass again with the same non-zero adapter on both (the weight arms' evaluation).

Measured 2026-12-03, 2 threads, nothing else running (AMX-BF16 CPU): rank pass 8.36 s fp32 vs 3.66 s bf16 (2.29x, the
same option on 15/16 cases); GRPO minibatch 8.10 vs 5.71 s (1.42x, cosine of the two LoRA gradients 0.997); rank
pass with the adapter 8.76 vs 4.10 s (2.14x, 16/16 the same).

On CPUs with AMX-BF16 tiles bf16 matrix products run on the tiles (a 560x576 by 576x1536 product: 0.9 ms against
6.3 ms in fp32, one thread); without them bf16 is emulated and slower (``PLATFORM.md``: training ~30x slower), so
``dtype=auto`` stays fp32 on CPUs and bf16 is opt-in (``-M dtype=bfloat16``). The ratio assertion applies only where
the tiles exist. Run: ``pytest benchmarks/test_precision_bench.py --benchmark-enable -s`` (``SIA_BENCH_THREADS``,
default 2).
"""

from __future__ import annotations

import os

import pytest

from benchmarks.test_model_reuse import REAL, interleaved, legal_rank_groups


def amx_bf16() -> bool:
    import torch

    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    check = getattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    return " amx_bf16" in flags and bool(check())


@pytest.fixture(scope="module")
def models():
    if not (REAL / "lawbench191" / "train.csv").exists():
        pytest.skip(f"reference data absent: {REAL}")
    import torch

    from sia_bench.models import build_model

    torch.set_num_threads(int(os.environ.get("SIA_BENCH_THREADS", "2")))
    return {dtype: build_model("hf", dtype=dtype) for dtype in ("float32", "bfloat16")}


@pytest.fixture(scope="module")
def legal_task():
    from tasks.legal_charges.task import LegalChargesTask

    return LegalChargesTask(data_dir=str(REAL))


def rank_both(benchmark, models, legal_task, label: str) -> None:
    """Time a rank pass of 16 legal val cases on both precisions (interleaved) and compare the options picked."""
    harness = legal_task.default_harness()
    batch = [(p.messages, p.options) for p in (legal_task.render(harness, i) for i in legal_task.split("val")[:16])]
    picks = {}

    def rank(dtype):
        models[dtype].prefixes.clear()
        picks[dtype] = [max(range(len(r.scores)), key=r.scores.__getitem__) for r in models[dtype].rank(batch)]

    times = interleaved({dtype: (lambda d=dtype: rank(d)) for dtype in models})
    ratio = times["float32"] / times["bfloat16"]
    same = sum(a == b for a, b in zip(picks["float32"], picks["bfloat16"]))
    benchmark.extra_info.update({"seconds": times, "speedup": ratio, "same_pick": same, "cases": len(batch)})
    benchmark.pedantic(rank, args=("bfloat16",), rounds=1, iterations=1)
    print(f"\n{label}, 16 legal cases: fp32 {times['float32']:.2f} s, bf16 {times['bfloat16']:.2f} s: {ratio:.2f}x; "
          f"the same option picked on {same}/16 (AMX-BF16: {amx_bf16()})")
    assert same >= 13  # bf16 rounding flips only near-ties
    if amx_bf16():
        assert ratio > 1.5


def test_rank_pass_bf16_vs_fp32(benchmark, models, legal_task):
    rank_both(benchmark, models, legal_task, "rank pass")


def test_grpo_minibatch_bf16_vs_fp32(benchmark, models, legal_task):
    import torch

    from sia_bench.improvers.trainers import WeightUpdate, backward_minibatch

    for model in models.values():
        if getattr(model.hf, "peft_config", None) is None:
            model.enable_lora(rank=8, alpha=16)
    groups = {dtype: legal_rank_groups(legal_task, model) for dtype, model in models.items()}
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(models["bfloat16"].hf, models["float32"].adapter_state())  # the same starting LoRA
    lora = {d: [p for n, p in m.hf.named_parameters() if "lora_" in n] for d, m in models.items()}
    assert all(p.dtype == torch.float32 for p in lora["bfloat16"])  # the trained weights stay fp32

    def step(dtype):
        models[dtype].hf.zero_grad(set_to_none=True)
        backward_minibatch(models[dtype], groups[dtype], WeightUpdate())

    with torch.enable_grad():
        times = interleaved({dtype: (lambda d=dtype: step(d)) for dtype in models})
        benchmark.pedantic(step, args=("bfloat16",), rounds=1, iterations=1)
    grads = {d: torch.cat([p.grad.flatten() for p in lora[d] if p.grad is not None]) for d in models}
    cosine = float(torch.nn.functional.cosine_similarity(grads["float32"], grads["bfloat16"], 0))
    ratio = times["float32"] / times["bfloat16"]
    benchmark.extra_info.update({"seconds": times, "speedup": ratio, "gradient_cosine": cosine})
    print(f"\nGRPO minibatch (4 prompts x 8 options): fp32 {times['float32']:.2f} s, bf16 {times['bfloat16']:.2f} s: "
          f"{ratio:.2f}x; cosine of the two LoRA gradients {cosine:.3f} (AMX-BF16: {amx_bf16()})")
    assert cosine > 0.9
    if amx_bf16():
        assert ratio > 1.2  # 1.42x measured quietly: the backward pass gains less than inference


def test_rank_pass_with_an_adapter_bf16_vs_fp32(benchmark, models, legal_task):
    """The weight arms' evaluation: the same non-zero LoRA on both bases. Inference runs plain layers with the adapter
    merged in (``HFModel._adapter_context``); through peft's fp32 adapter the w arm's bf16 test pass took
    119 s against 64.7 s without an adapter."""
    import torch
    from peft import set_peft_model_state_dict

    fp32 = models["float32"]
    if getattr(fp32.hf, "peft_config", None) is None:
        fp32.enable_lora(rank=8, alpha=16)
    if getattr(models["bfloat16"].hf, "peft_config", None) is None:
        models["bfloat16"].enable_lora(rank=8, alpha=16)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in fp32.hf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    set_peft_model_state_dict(models["bfloat16"].hf, fp32.adapter_state())
    rank_both(benchmark, models, legal_task, "rank pass with a LoRA adapter")
