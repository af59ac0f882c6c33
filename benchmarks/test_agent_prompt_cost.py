"""legal_charges with SmolLM2-135M on val and train only (never test): the accuracy/cost curve of the prompt-cost
harness parameters (facts truncation x candidate count, rank mode), and how often *sampled* answers of candidate
starting harnesses earn reward on train (what the weights lever needs to learn anything).

Slow (tens of minutes on 2 cores). Run:
``pytest benchmarks/test_agent_prompt_cost.py -m slow -s -p no:cacheprovider``; each measurement is appended to
``$SIA_BENCH_CURVE_OUT`` (default ``prompt_cost.jsonl``) as it finishes, and the tables are printed at the end.
Settings: ``SIA_BENCH_CURVE_VAL`` (val cases, default 64), ``SIA_BENCH_CURVE_TRAIN`` (train cases, default 64),
``SIA_BENCH_CURVE_STARTS`` (a ``|``-separated subset of the starts), ``SIA_BENCH_CURVE_GRID=0`` (skip the curve).
Measured with max_new_tokens 24 for the first two starts (before the default became 64): both earned no reward.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from sia_bench.agent import Agent
from sia_bench.harness import Patch
from sia_bench.models.base import SamplingParams
from sia_bench.records import Ledger

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "legal_charges"
FACT_CHARS = (100, 200, 400)
CANDIDATES = (3, 5, 8)
_PLAIN = {"answer_mode": "generate", "candidates": False, "candidates_n": 5, "fact_chars": 300, "few_shot": 0,
          "example_chars": 120, "max_new_tokens": 64}
STARTS = {  # every start spelled out in full, so a change of harness.toml does not change what is measured
    "plain (zero-shot generate)": _PLAIN,
    "candidates 5, generate": {**_PLAIN, "candidates": True},
    "candidates 5, rank": {**_PLAIN, "candidates": True, "answer_mode": "rank"},
    "few-shot 2 (similar, 60 chars) + candidates 5, generate": {**_PLAIN, "candidates": True, "few_shot": 2,
                                                                "example_chars": 60},
    "default: candidates 3, rank, facts 100": {**_PLAIN, "candidates": True, "answer_mode": "rank",
                                               "candidates_n": 3, "fact_chars": 100},
}
GROUP = 4


def _harness(task, **params):
    harness = task.default_harness()
    for key, value in params.items():
        if harness[key] != value:
            harness = harness.apply(Patch("set_param", param=key, value=value))
    return harness


def _out() -> Path:
    return Path(os.environ.get("SIA_BENCH_CURVE_OUT", "prompt_cost.jsonl"))


def _emit(row: dict) -> None:
    with _out().open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(json.dumps(row, ensure_ascii=False), flush=True)


def _accuracy(task, model, harness, instances, label: dict) -> dict:
    ledger = Ledger()
    t0 = time.perf_counter()
    metrics, trajs = Agent(task, model).evaluate(harness, instances, "val", ledger=ledger)
    row = {**label, "split": "val", "n": len(instances), "accuracy": metrics["accuracy"],
           "prompt_tokens": sum(t.tokens_in for t in trajs) / len(trajs),
           "seconds_per_case": (time.perf_counter() - t0) / len(instances),
           "gflops_per_case": ledger.total_flops() / len(instances) / 1e9}
    _emit(row)
    return row


def _sampled_reward(task, model, harness, instances, label: dict) -> dict:
    """GROUP sampled answers per train case at temperature 1: generation samples text, rank mode samples an option
    from softmax(mean log-prob), as the trainers do."""
    import torch

    agent = Agent(task, model)
    prompts = [task.render(harness, i) for i in instances]
    rewards: list[list[float]] = []
    t0 = time.perf_counter()
    if harness["answer_mode"] == "rank":
        gen = torch.Generator().manual_seed(0)
        for inst, prompt, ranking in zip(instances, prompts, model.rank([(p.messages, p.options) for p in prompts])):
            probs = torch.softmax(torch.tensor(ranking.scores, dtype=torch.float64), 0)
            picks = torch.multinomial(probs, GROUP, replacement=True, generator=gen).tolist()
            rewards.append([_reward(agent, harness, inst, prompt.options[k]) for k in picks])
    else:
        params = SamplingParams(max_new_tokens=harness["max_new_tokens"], temperature=1.0, seed=0)
        for inst, group in zip(instances, model.sample_groups([p.messages for p in prompts], GROUP, params)):
            rewards.append([_reward(agent, harness, inst, text) for text in group.texts])
    flat = [r for g in rewards for r in g]
    row = {**label, "split": "train", "n": len(instances), "group": GROUP, "reward_rate": sum(flat) / len(flat),
           "cases_with_a_reward": sum(any(g) for g in rewards) / len(rewards),
           "groups_with_signal": sum(min(g) != max(g) for g in rewards) / len(rewards),
           "seconds_per_case": (time.perf_counter() - t0) / len(instances)}
    _emit(row)
    return row


def _reward(agent, harness, inst, text) -> float:
    return agent._score(inst, agent._parse(harness, inst, text, None)).value


@pytest.mark.slow
def test_prompt_cost_curve_and_starting_signal():
    if not (REAL / "lawbench191" / "train.csv").exists():
        pytest.skip(f"reference data absent: {REAL}")
    import torch

    from sia_bench.models import build_model
    from tasks.legal_charges.task import LegalChargesTask

    torch.set_num_threads(int(os.environ.get("SIA_BENCH_THREADS", "1")))
    n_val = int(os.environ.get("SIA_BENCH_CURVE_VAL", "64"))
    n_train = int(os.environ.get("SIA_BENCH_CURVE_TRAIN", "64"))
    task = LegalChargesTask(data_dir=str(REAL), val_size=n_val)
    val = task.split("val")
    train = random.Random(0).sample(task.split("train"), n_train)
    model = build_model("hf")
    only = os.environ.get("SIA_BENCH_CURVE_STARTS")  # a |-separated subset of STARTS' names, to resume
    names = [n for n in STARTS if only is None or n in only.split("|")]
    grid = os.environ.get("SIA_BENCH_CURVE_GRID", "1") != "0"
    starts = [_sampled_reward(task, model, _harness(task, **STARTS[name]), train, {"start": name}) for name in names]
    starts += [_accuracy(task, model, _harness(task, **STARTS[name]), val, {"start": name})
               for name in names if STARTS[name].get("answer_mode") != "rank"]
    curve = [_accuracy(task, model, _harness(task, **{**_PLAIN, "candidates": True, "answer_mode": "rank",
                                                      "fact_chars": chars, "candidates_n": n}),
                       val, {"fact_chars": chars, "candidates_n": n})
             for chars in FACT_CHARS for n in CANDIDATES if grid]
    print("\n| fact_chars | candidates_n | val accuracy | prompt tokens / case | GFLOPs / case | s / case |")
    print("|---|---|---|---|---|---|")
    for r in curve:
        print(f"| {r['fact_chars']} | {r['candidates_n']} | {r['accuracy']:.4f} | {r['prompt_tokens']:.0f} | "
              f"{r['gflops_per_case']:.0f} | {r['seconds_per_case']:.2f} |")
    for r in starts:
        print(r)
    assert all(0 <= r["accuracy"] <= 1 for r in curve)
