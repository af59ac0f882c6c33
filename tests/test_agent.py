import pytest

from sia_bench.agent import NO_TOOL_ANSWER, Agent, Answering
from sia_bench.harness import ParamSpec, Patch
from sia_bench.models.base import Generation, Model, Ranking, SamplingParams
from sia_bench.records import Ledger
from tasks.toy_arithmetic.task import ToyArithmeticTask
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


# -- answering settings: tools alone (tool-only) and votes of sampled answers (best-of-n) ----------------------------
def test_tools_answer_without_the_model_and_charge_nothing(toy_task, monkeypatch):
    def tools(harness, inst):  # a calculator for even ids, nothing for odd ones
        return None if int(inst.id.split("-")[1]) % 2 else f"= {inst.input['a'] + inst.input['b']}"

    monkeypatch.setattr(toy_task, "tool_answer", tools)
    model, ledger = ScriptedModel(replies=["0"]), Ledger()
    trajs = Agent(toy_task, model, answering=Answering(answers_with="tools")).run(
        toy_task.default_harness(), toy_task.split("val")[:4], "val", ledger=ledger)
    assert model.seen == [] and model.usage.calls == 0
    assert ledger.rollouts == {"val": 4} and not any(ledger.tokens_in.values()) and not any(ledger.flops.values())
    assert [t.score for t in trajs] == [1.0, 0.0, 1.0, 0.0]
    assert all(t.details["answered_by"] == "tools" and "What is" in t.messages[-1]["content"] for t in trajs)
    assert trajs[1].parse_error == NO_TOOL_ANSWER and trajs[1].parse_method == "no_tool_answer"
    assert trajs[0].raw.startswith("= ") and trajs[0].parse_error is None


def test_answering_settings_are_validated():
    for bad in (dict(answers_with="oracle"), dict(votes=0), dict(votes=3), dict(temperature=0.0),
                dict(answers_with="tools", votes=2, temperature=0.5)):
        with pytest.raises(ValueError):
            Answering(**bad)


class ParamsSpy(ScriptedModel):
    params: list = None

    def _generate(self, batch, params):
        self.params = (self.params or []) + [params]
        return super()._generate(batch, params)


def test_votes_keep_the_most_frequent_parsed_answer_first_on_ties(toy_task):
    inst = toy_task.split("val")[0]
    model = ParamsSpy(replies=["5", "no idea", "7", "7", "5"])  # 5 and 7 tie 2:2, the first drawn (5) wins
    [traj] = Agent(toy_task, model, answering=Answering(votes=5, temperature=0.9)).run(
        toy_task.default_harness(), [inst], "val")
    assert traj.answer == 5 and traj.raw == "5" and traj.details["votes"] == [5, None, 7, 7, 5]
    assert len(model.seen) == 5 and model.params[0].temperature == 0.9  # n samples at the vote temperature
    model = ScriptedModel(replies=["x", "7", "no", "7", "5"])
    [traj] = Agent(toy_task, model, answering=Answering(votes=5, temperature=0.9)).run(
        toy_task.default_harness(), [inst], "val")
    assert traj.answer == 7 and traj.details["votes"] == [None, 7, None, 7, 5]


def test_votes_are_charged_for_every_sample(toy_task):
    insts, one, five = toy_task.split("val")[:3], Ledger(), Ledger()
    Agent(toy_task, ScriptedModel(replies=["1"])).run(toy_task.default_harness(), insts, "val", ledger=one)
    Agent(toy_task, ScriptedModel(replies=["1"]), answering=Answering(votes=5, temperature=0.7)).run(
        toy_task.default_harness(), insts, "val", ledger=five)
    assert five.tokens_in["val"] == 5 * one.tokens_in["val"] > 0 and five.rollouts == one.rollouts == {"val": 3}


class RankedToy(ToyArithmeticTask):
    """The toy task as a closed choice: options (sum + 1, sum, 0)."""

    def default_harness(self):
        base = super().default_harness()
        return base.__class__.create(base.skill, {**base.params, "answer_mode": "rank"},
                                     {**base.specs, "answer_mode": ParamSpec(str, "rank")})

    def render(self, harness, instance):
        prompt = super().render(harness, instance)
        total = instance.input["a"] + instance.input["b"]
        prompt.options = [str(total + 1), str(total), "0"]
        return prompt


class FixedRanker(ScriptedModel):
    """Scores the options (sum + 1, sum, 0) as -0.6, -0.5, -3: the sum is the argmax, sum + 1 close behind."""

    def _rank(self, batch):
        self.seen.extend(messages for messages, _ in batch)
        return [Ranking([-0.6, -0.5, -3.0], tokens_in=10) for _ in batch]


def test_rank_votes_draw_from_one_ranking_seeded_by_pass_and_instance():
    task = RankedToy()
    insts, harness = task.split("val")[:8], task.default_harness()

    def run(temperature, seed, model=None):
        agent = Agent(task, model or FixedRanker(), answering=Answering(votes=7, temperature=temperature))
        return agent.run(harness, insts, "val", seed=seed)

    model = FixedRanker()
    cold = run(0.001, 0, model)
    assert len(model.seen) == len(insts)  # one ranking pass, however many votes
    assert all(t.score == 1.0 and len(set(t.details["votes"])) == 1 for t in cold)  # near-greedy: all the argmax
    warm, again, other = run(1.0, 0), run(1.0, 0), run(1.0, 1)
    votes = [t.details["votes"] for t in warm]
    assert votes == [t.details["votes"] for t in again]  # seeded: the same pass draws the same votes
    assert votes != [t.details["votes"] for t in other]  # another pass seed draws others
    assert len({tuple(v) for v in votes}) > 1  # and each instance its own
    for t in warm:
        counts = {v: t.details["votes"].count(v) for v in t.details["votes"]}
        assert counts[t.answer] == max(counts.values())
        assert t.answer == next(v for v in t.details["votes"] if counts[v] == max(counts.values()))


def test_a_memo_never_serves_single_answers_to_a_vote_or_one_vote_count_to_another(toy_task, tmp_path):
    from sia_bench.memo import ResultMemo

    memo, insts, harness = ResultMemo(tmp_path / "memo"), toy_task.split("val")[:2], toy_task.default_harness()
    Agent(toy_task, ScriptedModel(replies=["1"]), memo).run(harness, insts, "val")
    calls = []
    for votes in (3, 5, 3):
        model = ScriptedModel(replies=["1"])
        trajs = Agent(toy_task, model, memo, Answering(votes=votes, temperature=0.5)).run(harness, insts, "val")
        assert all(len(t.details["votes"]) == votes for t in trajs)
        calls.append((len(model.seen), all(t.reused for t in trajs)))
    assert calls == [(6, False), (10, False), (0, True)]  # only the same vote setting again is served from the memo
