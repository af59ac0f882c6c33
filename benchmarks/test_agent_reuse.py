"""Agent-side speed as ratios against a reference timed in the same run (SmolLM2-135M fp32, real legal cases):

* memoised vs fresh re-evaluation of the same candidate (the memo's lookups and ledger replay against the model);
* harness time (render with retrieval, candidates and few-shot; parse; score; memo keys) as a share of model time.

Run: ``pytest benchmarks/test_agent_reuse.py --benchmark-enable -s`` (~1 minute each on 2 cores).
"""

from __future__ import annotations

import time

import pytest

from benchmarks.test_model_reuse import legal_task, smollm2, tooled  # noqa: F401  (fixtures)
from sia_bench.agent import Agent
from sia_bench.memo import ResultMemo
from sia_bench.records import Ledger


def test_memoised_vs_fresh_re_evaluation(benchmark, legal_task, smollm2, tmp_path):  # noqa: F811
    harness = tooled(legal_task, candidates=True, answer_mode="rank")
    val = legal_task.split("val")[:6]
    memo = ResultMemo(tmp_path / "memo")
    t0 = time.perf_counter()
    fresh = Agent(legal_task, smollm2, memo).run(harness, val, "val", ledger=Ledger())
    fresh_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = Agent(legal_task, smollm2, memo).run(harness, val, "val", ledger=Ledger())
    memo_s = time.perf_counter() - t0
    assert all(t.reused for t in again) and [t.score for t in again] == [t.score for t in fresh]
    benchmark.extra_info.update({"seconds_fresh": fresh_s, "seconds_memoised": memo_s, "speedup": fresh_s / memo_s})
    benchmark.pedantic(lambda: Agent(legal_task, smollm2, memo).run(harness, val, "val"), rounds=1, iterations=1)
    print(f"\nre-evaluation of 6 cases: fresh {fresh_s:.2f} s, memoised {memo_s * 1000:.1f} ms: "
          f"{fresh_s / memo_s:.0f}x")
    assert fresh_s / memo_s > 20


@pytest.mark.parametrize("mode", ["rank", "generate"])
def test_harness_time_is_a_small_share_of_model_time(benchmark, legal_task, smollm2, mode, tmp_path):  # noqa: F811
    harness = tooled(legal_task, candidates=True, answer_mode=mode, retrieval=True, few_shot=2)
    val = legal_task.split("val")[6:14]
    ledger = Ledger()
    t0 = time.perf_counter()
    Agent(legal_task, smollm2, ResultMemo(tmp_path / "memo")).run(harness, val, "val", ledger=ledger)
    wall = time.perf_counter() - t0
    model_s = sum(ledger.model_seconds.values())
    share = (wall - model_s) / model_s
    benchmark.extra_info.update({"wall_seconds": wall, "model_seconds": model_s, "harness_share": share})
    benchmark.pedantic(lambda: [legal_task.render(harness, i) for i in val], rounds=1, iterations=1)
    print(f"\n[{mode}] 8 cases: wall {wall:.2f} s, model {model_s:.2f} s, harness {share:.1%} of model time")
    assert share < 0.05

