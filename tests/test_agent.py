from sia_bench.agent import Agent
from sia_bench.harness import Patch
from sia_bench.models.base import Generation, Model, SamplingParams
from sia_bench.records import Ledger
from tests.doubles import ScriptedModel


def test_retry_re_asks_with_the_parse_error(toy_task):
    harness = toy_task.default_harness().apply(Patch("set_param", param="retries", value=1))
    model = ScriptedModel(replies=["no idea", "26"])
    inst = toy_task.split("val")[0]
    [traj] = Agent(toy_task, model).run(harness, [inst], "val")
    assert traj.retries == 1 and traj.parse_error is None
    assert "could not be used: no integer" in model.seen[1][-1]["content"]
    assert traj.answer == 26 and traj.score == float(inst.target == 26)


def test_malformed_answer_is_a_miss_with_reason(toy_task):
    [traj] = Agent(toy_task, ScriptedModel(replies=["¯\\_(ツ)_/¯"])).run(
        toy_task.default_harness(), toy_task.split("val")[:1], "val")
    assert traj.score == 0.0 and "no integer" in traj.parse_error


class FailingModel(Model):
    @property
    def name(self):
        return "failing"

    def _generate(self, batch, params: SamplingParams):
        return [Generation("", error="endpoint failed after 5 tries: 503") for _ in batch]


def test_model_error_is_recorded_not_raised(toy_task):
    ledger = Ledger()
    trajs = Agent(toy_task, FailingModel()).run(toy_task.default_harness(), toy_task.split("val")[:3], "val",
                                                 ledger=ledger)
    assert all(t.model_error and t.parse_method == "model_error" and t.score == 0 for t in trajs)
    assert ledger.rollouts == {"val": 3}


def test_parser_crash_is_contained(toy_task, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(toy_task, "parse", broken)
    [traj] = Agent(toy_task, ScriptedModel(replies=["3"])).run(toy_task.default_harness(), toy_task.split("val")[:1],
                                                                "val")
    assert traj.parse_method == "parser_crash" and "boom" in traj.parse_error
