"""The joint arm's evidence rule: explore each lever once, then optimistic gain per compute, stop on small gains."""

from sia_bench.improvers.chooser import Evidence, choose_lever, collect_evidence
from sia_bench.records import Candidate, GenerationRecord, Ledger


def gen(index, levers, val, best_before, tokens, accepted=None):
    led = Ledger()
    led.count_rollouts("val", 1)
    led.charge("val", calls=1, tokens_in=tokens, flops=2.0 * tokens)
    accepted = val > best_before if accepted is None else accepted
    return GenerationRecord(index=index, levers=levers, val={"acc": val}, accepted=accepted,
                            best_so_far=max(val, best_before) if accepted else best_before, ledger=led,
                            candidate=Candidate(harness_digest="x", harness_dir="x"))


def test_evidence_is_signed_gain_and_cost_per_lever():
    start = GenerationRecord(index=0, val={"acc": 0.5}, best_so_far=0.5, accepted=True)
    history = [start, gen(1, ["harness"], 0.6, 0.5, 100), gen(2, ["weights"], 0.4, 0.6, 1000),
               gen(3, ["harness", "weights"], 0.7, 0.6, 1100)]
    ev = collect_evidence(history, "acc")
    assert ev["harness"].gains == [0.6 - 0.5] and ev["harness"].costs == [200.0]  # FLOPs when charged
    assert ev["weights"].gains[0] == 0.4 - 0.6  # a worse candidate is negative evidence
    assert ev["both"].n == 1 and abs(ev["both"].gains[0] - 0.1) < 1e-12
    lower = collect_evidence(history, "acc", higher_is_better=False)
    assert lower["weights"].gains[0] > 0


def test_explores_in_order_then_exploits_gain_per_compute():
    empty = {k: Evidence(k) for k in ("harness", "weights", "both")}
    assert choose_lever(empty, None, 0.05).lever == "harness"
    ev = {"harness": Evidence("harness", [0.1], [100.0]), "weights": Evidence("weights"), "both": Evidence("both")}
    assert choose_lever(ev, None, 0.05).lever == "weights"
    ev = {"harness": Evidence("harness", [0.1, 0.1], [100.0, 100.0]),
          "weights": Evidence("weights", [0.1, 0.1], [1000.0, 1000.0]), "both": Evidence("both", [0.1], [1100.0])}
    choice = choose_lever(ev, None, 0.05)
    assert choice.lever == "harness"  # same gain, ten times cheaper
    ev["harness"] = Evidence("harness", [-0.05] * 12, [100.0] * 12)  # cheap, but reliably harmful
    ev["weights"] = Evidence("weights", [0.2, 0.3], [1000.0, 1000.0])
    assert choose_lever(ev, None, 0.05).lever == "weights"


def test_respects_the_remaining_budget_and_stops():
    ev = {"harness": Evidence("harness", [0.1], [100.0]), "weights": Evidence("weights", [0.3], [1000.0]),
          "both": Evidence("both", [0.3], [1100.0])}
    assert choose_lever(ev, 500.0, 0.05).lever == "harness"  # weights no longer fit
    assert choose_lever(ev, 50.0, 0.05).lever == "stop"
    flat = {k: Evidence(k, [0.0] * 30, [10.0] * 30) for k in ("harness", "weights", "both")}
    choice = choose_lever(flat, None, resolution=0.01, c=0.1)
    assert choice.lever == "stop" and "expected gain" in choice.reason
