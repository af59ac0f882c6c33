"""Model-side speed as ratios against a reference timed in the same run (SmolLM2-135M fp32, real legal prompts):

* prefix reuse on vs off: a rank pass with the system block's KV state reused and one prompt pass per case, against
  main's old scheme (every option chunk re-runs the whole prompt with full-vocabulary logits, nothing cached);
* a prompt pass against the fp32 bound: tokens/s of a prefill (last-position logits) over the tokens/s that a
  2048x2048 fp32 matmul's FLOP rate allows for a model of this size (2 x parameters FLOPs a token);
* GRPO-style group sampling with a shared prefill against prefilling every group member.

Each is ~1 minute on 2 cores. Run: ``pytest benchmarks/test_model_reuse.py --benchmark-enable -s``
(``SIA_BENCH_THREADS`` sets torch threads, default 2). Timings are the best of two rounds, interleaved, so other load
on a shared machine distorts the ratio less.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "legal_charges"


@pytest.fixture(scope="session")
def legal_task():
    if not (REAL / "lawbench191" / "train.csv").exists():
        pytest.skip(f"reference data absent: {REAL}")
    from tasks.legal_charges.task import LegalChargesTask

    return LegalChargesTask(data_dir=str(REAL))


@pytest.fixture(scope="session")
def smollm2():
    """The default model on $SIA_BENCH_THREADS threads (default 2: the target machine)."""
    import torch

    from sia_bench.models import build_model

    torch.set_num_threads(int(os.environ.get("SIA_BENCH_THREADS", "2")))
    return build_model("hf")


def tooled(task, **params):
    from sia_bench.harness import Patch

    harness = task.default_harness()
    for key, value in params.items():
        if harness[key] != value:
            harness = harness.apply(Patch("set_param", param=key, value=value))
    return harness


def interleaved(fns: dict, rounds: int = 2) -> dict[str, float]:
    """Best time of each function over ``rounds`` interleaved rounds (A B A B)."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def old_rank(model, batch, chunk: int) -> list[list[float]]:
    """The reference: main's scheme before prefix reuse (each option chunk re-runs the whole prompt; logits at every
    position; no cached system block)."""
    import torch

    tok = model.tokenizer
    out = []
    with torch.no_grad():
        for messages, options in batch:
            prefix = tok(model.chat_text(messages), add_special_tokens=False)["input_ids"]
            opts = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
            scores = []
            for start in range(0, len(opts), chunk):
                part = opts[start:start + chunk]
                res = model.hf(input_ids=torch.tensor([prefix]), use_cache=True)
                first = torch.log_softmax(res.logits[0, -1].float(), -1)
                width = max(map(len, part))
                ids = torch.full((len(part), width), tok.pad_token_id)
                for i, o in enumerate(part):
                    ids[i, :len(o)] = torch.tensor(o)
                cache = res.cache
                cache.batch_repeat_interleave(len(part))
                logp = torch.log_softmax(model.hf(input_ids=ids, cache=cache, attention_mask=torch.ones(
                    len(part), len(prefix) + width, dtype=torch.long)).logits.float(), -1)
                for i, o in enumerate(part):
                    scores.append((first[o[0]].item() + sum(logp[i, j - 1, o[j]].item()
                                                            for j in range(1, len(o)))) / len(o))
            out.append(scores)
    return out


def test_prefix_reuse_on_vs_off(benchmark, legal_task, smollm2):
    harness = tooled(legal_task, candidates=True, answer_mode="rank", candidates_n=8)
    prompts = [legal_task.render(harness, i) for i in legal_task.split("val")[:4]]
    batch = [(p.messages, p.options) for p in prompts]
    chunk = 4  # 8 options in 2 chunks, as batch_size=4 did on main
    smollm2.batch_size = chunk
    new = smollm2.loglikelihood(batch)
    old = old_rank(smollm2, batch, chunk)
    for a, b in zip(new, old):  # the same ranking, to float precision
        assert a == pytest.approx(b, abs=2e-3)
    smollm2.prefixes.clear()
    times = interleaved({"off": lambda: old_rank(smollm2, batch, chunk), "on": lambda: smollm2.rank(batch)})
    ratio = times["off"] / times["on"]
    benchmark.extra_info.update({"seconds_on": times["on"], "seconds_off": times["off"], "speedup": ratio})
    benchmark.pedantic(smollm2.rank, args=(batch,), rounds=1, iterations=1)
    print(f"\nprefix reuse: {times['off']:.2f} s off vs {times['on']:.2f} s on for 4 cases x 8 options: "
          f"{ratio:.2f}x")
    assert ratio > 1.3


def test_prompt_pass_against_the_fp32_matmul_bound(benchmark, legal_task, smollm2):
    import torch

    from sia_bench.models import engine

    harness = tooled(legal_task, candidates=True, answer_mode="rank")
    ids = [smollm2.prompt_ids(legal_task.render(harness, i).messages)[0] for i in legal_task.split("val")[:3]]
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    flops_per_token = 2 * smollm2.info()["parameters"]
    times = interleaved({"matmul": lambda: [a @ b for _ in range(8)],
                         "prefill": lambda: [engine.prefill(smollm2.hf, x, smollm2.device) for x in ids]})
    matmul_rate = 8 * 2 * 2048 ** 3 / times["matmul"]
    bound = matmul_rate / flops_per_token
    achieved = sum(map(len, ids)) / times["prefill"]
    benchmark.extra_info.update({"matmul_gflops": matmul_rate / 1e9, "bound_tokens_per_s": bound,
                                 "tokens_per_s": achieved, "share_of_bound": achieved / bound})
    benchmark.pedantic(engine.prefill, args=(smollm2.hf, ids[0], smollm2.device), rounds=1, iterations=1)
    print(f"\nprompt pass: {achieved:.0f} tokens/s = {achieved / bound:.0%} of the fp32 bound ({bound:.0f} tokens/s "
          f"from {matmul_rate / 1e9:.0f} GFLOP/s)")
    assert achieved / bound > 0.3


def test_group_sampling_with_and_without_shared_prefill(benchmark, legal_task, smollm2):
    from sia_bench.models.base import SamplingParams

    harness = tooled(legal_task, candidates=True)
    messages = [legal_task.render(harness, i).messages for i in legal_task.split("train")[:2]]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=0)
    group = 4
    smollm2.batch_size = 8

    def separate():  # every member prefilled on its own (main's trainer sampled a padded batch of repeated prompts)
        smollm2.prefix_cache = False
        try:
            smollm2.generate([m for m in messages for _ in range(group)], params)
        finally:
            smollm2.prefix_cache = True

    times = interleaved({"separate": separate, "shared": lambda: smollm2.sample_groups(messages, group, params)})
    ratio = times["separate"] / times["shared"]
    benchmark.extra_info.update({"seconds_shared": times["shared"], "seconds_separate": times["separate"],
                                 "speedup": ratio})
    benchmark.pedantic(smollm2.sample_groups, args=(messages, group, params), rounds=1, iterations=1)
    print(f"\ngroup sampling (2 prompts x {group}, 8 new tokens): {times['separate']:.2f} s separate vs "
          f"{times['shared']:.2f} s shared prefill: {ratio:.2f}x")
    assert ratio > 1.5


def legal_rank_groups(task, model, n: int = 4) -> list:
    """GRPO groups of ``n`` rank-mode legal train prompts (start harness), 8 fixed picks of their 3 options each."""
    from sia_bench.improvers.trainers import Group, grpo_advantages

    tok, groups = model.tokenizer, []
    for inst in task.split("train")[:n]:
        prompt = task.render(task.default_harness(), inst)
        prefix = tok(model.chat_text(prompt.messages), add_special_tokens=False)["input_ids"]
        options = [tok(o, add_special_tokens=False)["input_ids"] for o in prompt.options]
        picks, rewards = [0, 1, 2, 0, 1, 2, 0, 0], [1.0, 0, 0, 1.0, 0, 0, 1.0, 1.0]
        groups.append(Group(inst, prefix, [options[k] for k in picks], [prompt.options[k] for k in picks], rewards,
                            grpo_advantages(rewards), options=options, picks=picks))
    return groups


def test_training_pass_with_the_system_block_shared(benchmark, legal_task, smollm2, monkeypatch):
    """One GRPO minibatch (4 rank-mode legal prompts x 3 options, LoRA on): the gradient pass with the prompts'
    shared system block run once (``CommonPrefix``) against every prompt run whole. Same gradient (tested in
    tests/improvers/test_objectives.py); the ratio is what sharing saves on these prompts."""
    import torch

    from sia_bench.improvers.trainers import WeightUpdate, backward_minibatch
    from sia_bench.improvers.trainers import forward
    from sia_bench.improvers.trainers.forward import common_prefix_length

    if getattr(smollm2.hf, "peft_config", None) is None:
        smollm2.enable_lora(rank=8, alpha=16)
    groups = legal_rank_groups(legal_task, smollm2)
    shared_tokens = common_prefix_length([g.prompt_ids for g in groups])
    update = WeightUpdate()

    def run():
        smollm2.hf.zero_grad(set_to_none=True)
        backward_minibatch(smollm2, groups, update)

    def whole():
        with monkeypatch.context() as m:
            m.setattr(forward, "MIN_COMMON", 10 ** 9)
            run()

    with torch.enable_grad():
        times = interleaved({"whole": whole, "shared": run})
        benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = times["whole"] / times["shared"]
    mean_prompt = sum(len(g.prompt_ids) for g in groups) / len(groups)
    benchmark.extra_info.update({"seconds_shared": times["shared"], "seconds_whole": times["whole"], "speedup": ratio,
                                 "shared_tokens": shared_tokens, "mean_prompt_tokens": mean_prompt})
    print(f"\ntraining pass (4 prompts of {mean_prompt:.0f} tokens, {shared_tokens} shared): {times['whole']:.2f} s "
          f"whole vs {times['shared']:.2f} s shared: {ratio:.2f}x")
    assert shared_tokens > 100 and ratio > 1.1
