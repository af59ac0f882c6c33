"""legal_charges performance: parse+score of 913 predictions, building the retrieval index, rendering with tools,
and — with the default SmolLM2-135M on CPU — the harness overhead per instance versus model time, and batched versus
one-at-a-time generation.

Run: ``pytest benchmarks/test_legal_charges_bench.py --benchmark-enable -p no:cacheprovider -s``
(the model benchmarks are marked slow: add ``-m slow`` to include them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sia_bench.harness import Patch
from tasks.legal_charges.task import LegalChargesTask
from tasks.legal_charges.tools import build_index

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "legal_charges"
TOOLS = [("candidates", True), ("answer_mode", "rank"), ("retrieval", True), ("few_shot", 2)]


@pytest.fixture(scope="module")
def task():
    if not (REAL / "lawbench191" / "train.csv").exists():
        pytest.skip(f"reference data absent: {REAL}")
    return LegalChargesTask(data_dir=str(REAL))


def tooled(harness):
    for key, value in TOOLS:
        harness = harness.apply(Patch("set_param", param=key, value=value))
    return harness


def test_parse_and_score_913(benchmark, task):
    h = task.default_harness()
    test = task.split("test")
    texts = [f"罪名：{i.target[0]}罪" if n % 3 else "被告人的行为构成盗窃" for n, i in enumerate(test)]
    task.index()  # confusables for feedback come from the index; build it outside the timing

    def run():
        scores = [task.score(i, task.parse(h, i, t)) for i, t in zip(test, texts)]
        return task.aggregate(scores, test)

    result = benchmark(run)
    assert result["n"] == 913


def test_build_index_5332(benchmark, task):
    cases = task._data()["train"] + task._data()["val"]
    index = benchmark.pedantic(build_index, args=(cases, "tfidf"), rounds=2, iterations=1)
    assert len(index.ids) == 5332


def test_render_with_tools(benchmark, task):
    h = tooled(task.default_harness())
    val = task.split("val")[:20]
    benchmark(lambda: [task.render(h, i) for i in val])


@pytest.mark.slow
def test_overhead_ratio_and_batching(task):
    """Harness overhead (render + parse + score) per instance against model time, in both answer modes; and the
    speed-up of batched generation (batch 8) over one prompt at a time on the same 8 prompts."""
    import torch

    from sia_bench.models import build_model
    from sia_bench.models.base import SamplingParams

    torch.set_num_threads(2)
    model = build_model("hf")
    val = task.split("val")[:8]
    for harness in (task.default_harness(), tooled(task.default_harness())):
        t0 = time.perf_counter()
        prompts = [task.render(harness, i) for i in val]
        render_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if harness["answer_mode"] == "rank":
            scores = model.loglikelihood([(p.messages, p.options) for p in prompts])
            texts = [p.options[max(range(len(s)), key=s.__getitem__)] for p, s in zip(prompts, scores)]
        else:
            texts = [g.text for g in model.generate([p.messages for p in prompts],
                                                    SamplingParams(max_new_tokens=harness["max_new_tokens"]))]
        model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, t in zip(val, texts):
            task.score(i, task.parse(harness, i, t))
        post_s = time.perf_counter() - t0
        per = (render_s + post_s) / len(val)
        print(f"\n[{harness['answer_mode']}] model {model_s / len(val):.3f} s/instance, harness {per * 1000:.1f} "
              f"ms/instance, ratio {per / (model_s / len(val)):.4f}")
    messages = [task.render(task.default_harness(), i).messages for i in val]
    params = SamplingParams(max_new_tokens=16)
    model.batch_size = 8
    t0 = time.perf_counter()
    model.generate(messages, params)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for m in messages:
        model.generate([m], params)
    single = time.perf_counter() - t0
    print(f"\nbatched {batched:.1f} s vs one-at-a-time {single:.1f} s for 8 prompts: speed-up {single / batched:.2f}x")
    assert batched < single
