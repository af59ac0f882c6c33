"""The compute meter: charged FLOPs match a hand count, purposes route, the budget stops within one call."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sia_bench import metering
from sia_bench.agent import Agent
from sia_bench.harness import ParamSpec, load_default_harness
from sia_bench.models.base import SamplingParams
from sia_bench.records import Ledger
from sia_bench.task import Prompt
from tasks.toy_arithmetic.task import HERE as TOY_DIR, PARSERS, ToyArithmeticTask
from tests.doubles import ScriptedModel


class RankToy(ToyArithmeticTask):
    """The toy task in rank mode: three candidate sums to choose from."""

    def default_harness(self):
        return load_default_harness(TOY_DIR, {"parser": ParamSpec(str, "last_integer", choices=PARSERS),
                                              "answer_mode": ParamSpec(str, "rank", choices=("generate", "rank"))})

    def render(self, harness, instance):
        prompt = super().render(harness, instance)
        return Prompt(prompt.messages, [str(instance.target + d) for d in (-1, 0, 1)])


@dataclass
class SizedScripted(ScriptedModel):
    """A scripted model that declares a size, so its calls have FLOPs."""

    parameters: int = 1_000

    def info(self):
        return {"name": "scripted", "parameters": self.parameters}


def hand_params(model) -> int:
    return sum(p.numel() for name, p in model.hf.named_parameters() if "lora_" not in name)


def test_generation_flops_match_a_hand_count(tiny_model, toy_task):
    ledger = Ledger()
    harness = toy_task.default_harness()
    instances = toy_task.split("val")[:5]
    trajs = Agent(toy_task, tiny_model).run(harness, instances, "val", ledger=ledger)
    tok = tiny_model.tokenizer
    prompt_tokens = sum(len(tok.apply_chat_template(toy_task.render(harness, i).messages, add_generation_prompt=True,
                                                    tokenize=True, return_dict=False)) for i in instances)
    new_tokens = sum(t.tokens_out for t in trajs)
    assert 0 < new_tokens <= 5 * harness["max_new_tokens"]
    assert ledger.tokens_in == {"val": prompt_tokens} and ledger.tokens_out == {"val": new_tokens}
    assert ledger.flops["val"] == 2 * hand_params(tiny_model) * (prompt_tokens + new_tokens)
    assert ledger.calls == {"val": 1} and ledger.rollouts == {"val": 5} and ledger.model_seconds["val"] > 0


def test_ranking_is_charged_and_its_trajectories_carry_tokens(tiny_model):
    task = RankToy()
    ledger = Ledger()
    instances = task.split("val")[:3]
    trajs = Agent(task, tiny_model).run(task.default_harness(), instances, "val", ledger=ledger)
    tok = tiny_model.tokenizer
    expected = 0
    for inst, traj in zip(instances, trajs):
        prompt = task.render(task.default_harness(), inst)
        n = len(tok.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=False))
        n += sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in prompt.options)
        assert traj.tokens_in == n and traj.raw in prompt.options
        expected += n
    assert ledger.tokens_in == {"val": expected} and ledger.flops["val"] == 2 * hand_params(tiny_model) * expected


def test_purposes_route_and_test_is_never_charged_to_the_budget():
    model, feedback = SizedScripted(replies=["1"]), SizedScripted(replies=["{}"], parameters=10)
    feedback.meter_purpose = "feedback"
    ledger = Ledger()
    msgs = [[{"role": "user", "content": "x" * 40}]]
    with metering.charging(ledger):
        model.generate(msgs)  # no purpose anywhere: "other"
        feedback.generate(msgs)  # the model's own purpose
        with metering.charging(purpose="meta"):
            feedback.generate(msgs)  # an explicit scope wins over the model's purpose
        with metering.charging(purpose="test"):
            model.generate(msgs)
    assert set(ledger.flops) == {"other", "feedback", "meta", "test"}
    assert ledger.flops["feedback"] == 2 * 10 * (10 + 0)  # ScriptedModel: len(text) // 4 tokens
    assert ledger.total_flops() == ledger.total_flops(exclude_test=False) - ledger.flops["test"]
    merged = ledger.plus(ledger)
    assert merged.flops["meta"] == 2 * ledger.flops["meta"] and merged.calls["other"] == 2


def test_budget_admits_until_spent_then_overshoots_by_at_most_one_call():
    model = SizedScripted(replies=["1"])
    ledger = Ledger()
    msgs = [[{"role": "user", "content": "y" * 400}]]  # 100 tokens: 2e5 FLOPs a call
    calls = 0
    with metering.charging(ledger, "val"), metering.compute_budget(1e6) as guard:
        with pytest.raises(metering.BudgetExhausted, match="compute budget reached"):
            for _ in range(100):
                model.generate(msgs)
                calls += 1
        metering.admit(model, "test")  # the test pass is never refused
    assert calls == 5 and guard.spent == ledger.total_flops() == 1e6
    with metering.charging(ledger, "val"), metering.compute_budget(1.2e6, spent=0.9e6) as guard:
        model.generate(msgs)
        model.generate(msgs)  # started at 1.1e6 < 1.2e6: admitted, ends 0.1e6 over (less than one call)
        with pytest.raises(metering.BudgetExhausted):
            model.generate(msgs)
    assert guard.spent == pytest.approx(1.3e6)
    with pytest.raises(ValueError, match="positive"):
        with metering.compute_budget(0):
            pass


def test_models_of_unknown_size_are_counted_not_guessed():
    ledger = Ledger()
    with metering.charging(ledger, "feedback"):
        ScriptedModel(replies=["ok"]).generate([[{"role": "user", "content": "hi"}]], SamplingParams())
    assert ledger.flops_unknown == {"feedback": 1} and ledger.total_flops() == 0 and ledger.calls == {"feedback": 1}


def test_training_passes_are_charged_six_flops_per_parameter_token():
    model = SizedScripted()
    ledger = Ledger()
    with metering.charging(ledger, "train_step"):
        with metering.model_call(model, training=True) as call:
            call.count(tokens_in=300)
    assert ledger.flops == {"train_step": 6 * 1_000 * 300}


@dataclass
class CallLog(SizedScripted):
    """Keeps the FLOPs of every call it answered."""

    log: list = None

    def _generate(self, batch, params):
        gens = super()._generate(batch, params)
        self.log = (self.log or []) + [2 * self.parameters * sum(g.tokens_in + g.tokens_out for g in gens)]
        return gens


def test_loop_stops_on_the_compute_budget_within_one_call(tmp_path):
    from sia_bench.config import Budget
    from sia_bench.loop import Loop, RunConfig
    from tests.doubles import adder

    def run(name, **budget):
        config = RunConfig(task="toy_arithmetic", improver="h", seed=3, limit=None,
                           budget=Budget(generations=6, **budget))
        model = CallLog(fn=adder())
        return Loop(config, tmp_path / name, model=model).run(), model

    free, free_model = run("free")
    per_gen = [g.ledger.total_flops() for g in free.generations]
    assert all(x > 0 for x in per_gen) and free.ledger.total_flops() == sum(per_gen)
    # A generation that rolled out on train and then scored its candidate on val: spend exactly up to its train
    # call, so the val call is refused and the generation must end unaccepted.
    calls = [sum(g.ledger.calls.values()) for g in free.generations]
    g = next(i for i, gen in enumerate(free.generations) if i > 0 and gen.candidate is not None and calls[i] >= 2)
    limit = sum(free_model.log[:sum(calls[:g]) + 1])
    capped, model = run("capped", compute_flops=limit)
    assert capped.ledger.total_flops() == limit and len(capped.generations) == g + 1
    last = capped.generations[-1]
    assert not last.accepted and "stop" in last.levers and "compute budget" in last.reason and not last.val
    assert "compute budget" in capped.stop_reason
    assert capped.ledger.flops["test"] > 0 and capped.final["test"]  # test still scored once, never charged
    # A limit inside a call: the call that crosses it finishes, nothing starts after it.
    limit = sum(free_model.log[:sum(calls[:g]) + 1]) - free_model.log[sum(calls[:g])] / 2
    capped, model = run("inside", compute_flops=limit)
    assert limit < capped.ledger.total_flops() < limit + max(model.log)
    assert "compute budget" in capped.stop_reason
