"""The Task Agent: runs a harness with a model over instances and records one trajectory per instance."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from sia_bench.harness import Harness
from sia_bench.models.base import Model, SamplingParams
from sia_bench.records import JsonlWriter, Ledger
from sia_bench.task import Answer, Instance, Score, Task

RETRY_TEMPLATE = "Your answer could not be used: {error}\nAnswer again, following the required output format exactly."


@dataclass
class Trajectory:
    instance_id: str
    purpose: str  # train | val | test
    messages: list[dict[str, str]]
    raw: str
    answer: Any
    parse_method: str
    parse_error: str | None
    score: float
    feedback: str
    details: dict[str, Any] = field(default_factory=dict)
    options: list[str] | None = None
    retries: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    model_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Agent:
    """Render -> generate (or rank options) -> parse (-> retry) -> score, batched over instances."""

    def __init__(self, task: Task, model: Model):
        self.task, self.model = task, model

    def run(self, harness: Harness, instances: Sequence[Instance], purpose: str, *, seed: int = 0,
            ledger: Ledger | None = None, writer: JsonlWriter | None = None,
            on_sample: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        start_usage = (self.model.usage.calls, self.model.usage.tokens_in, self.model.usage.tokens_out,
                       self.model.usage.seconds)
        prompts = [self.task.render(harness, inst) for inst in instances]
        rank = harness.params.get("answer_mode") == "rank"
        params = SamplingParams(max_new_tokens=harness["max_new_tokens"], temperature=harness["temperature"],
                                seed=seed)
        raws: list[str] = [""] * len(instances)
        errors: list[str | None] = [None] * len(instances)
        per_item = [0.0] * len(instances)
        tokens = [[0, 0] for _ in instances]
        ranked = [i for i, p in enumerate(prompts) if rank and p.options]
        if ranked:
            t0 = time.perf_counter()
            scores = self.model.loglikelihood([(prompts[i].messages, prompts[i].options) for i in ranked])
            for i, opt_scores in zip(ranked, scores):
                best = max(range(len(opt_scores)), key=opt_scores.__getitem__)
                raws[i] = prompts[i].options[best]
                per_item[i] = (time.perf_counter() - t0) / len(ranked)
        ranked_set = set(ranked)
        todo = [i for i in range(len(instances)) if i not in ranked_set]
        todo_set = set(todo)
        if todo:
            gens = self.model.generate([prompts[i].messages for i in todo], params)
            for i, g in zip(todo, gens):
                raws[i], errors[i], per_item[i] = g.text, g.error, g.seconds
                tokens[i] = [g.tokens_in, g.tokens_out]
        answers = [self._parse(harness, inst, raw, err) for inst, raw, err in zip(instances, raws, errors)]
        retries = [0] * len(instances)
        for attempt in range(harness["retries"]):
            again = [i for i, a in enumerate(answers) if not a.ok and i in todo_set and errors[i] is None]
            if not again:
                break
            msgs = [prompts[i].messages + [{"role": "assistant", "content": raws[i]},
                                           {"role": "user", "content": RETRY_TEMPLATE.format(error=answers[i].error)}]
                    for i in again]
            for i, g, m in zip(again, self.model.generate(msgs, params), msgs):
                raws[i], retries[i] = g.text, retries[i] + 1
                prompts[i].messages = m
                per_item[i] += g.seconds
                tokens[i][0] += g.tokens_in
                tokens[i][1] += g.tokens_out
                answers[i] = self._parse(harness, instances[i], g.text, g.error)
        trajectories = []
        sandbox_seconds = 0.0
        for i, (inst, answer) in enumerate(zip(instances, answers)):
            t0 = time.perf_counter()
            score = self._score(inst, answer)
            sandbox_seconds += float(score.details.get("sandbox_seconds", 0.0))
            traj = Trajectory(inst.id, purpose, prompts[i].messages, raws[i], answer.value, answer.method,
                              answer.error, score.value, score.feedback, score.details, prompts[i].options,
                              retries[i], prompts[i].tool_calls, tokens[i][0], tokens[i][1],
                              per_item[i] + time.perf_counter() - t0, errors[i])
            trajectories.append(traj)
            if writer is not None:
                writer.write(traj.to_dict())
            if on_sample is not None:
                on_sample(traj)
        if ledger is not None:
            u = self.model.usage
            ledger.count_rollouts(purpose, len(instances), u.tokens_in - start_usage[1], u.tokens_out - start_usage[2],
                                  u.seconds - start_usage[3])
            ledger.sandbox_seconds += sandbox_seconds
        return trajectories

    def _parse(self, harness: Harness, inst: Instance, raw: str, model_error: str | None) -> Answer:
        if model_error:
            return Answer(None, "model_error", f"model call failed: {model_error}")
        try:
            return self.task.parse(harness, inst, raw)
        except Exception as err:  # a parser bug must not end the run; it is a miss with the reason kept
            return Answer(None, "parser_crash", f"parser raised {type(err).__name__}: {err}")

    def _score(self, inst: Instance, answer: Answer) -> Score:
        try:
            return self.task.score(inst, answer)
        except Exception as err:
            return Score(0.0, f"scorer raised {type(err).__name__}: {err}", {"scorer_error": True})

    def evaluate(self, harness: Harness, instances: Sequence[Instance], purpose: str, **kw: Any
                 ) -> tuple[dict[str, float], list[Trajectory]]:
        trajs = self.run(harness, instances, purpose, **kw)
        scores = [Score(t.score, t.feedback, t.details) for t in trajs]
        return self.task.aggregate(scores, list(instances)), trajs
