"""The Task Agent: runs a harness with a model over instances and records one trajectory per instance.

Every model call is metered (charged to the ledger and purpose of the pass, and refused once the compute budget is
spent). With a :class:`~sia_bench.memo.ResultMemo`, results already computed under the same key are reused: the
trajectory says so (``reused``), the ledger counts them under ``reused`` and charges their tokens and FLOPs as if
computed, at the same points of the pass, so memoisation changes no score and no budget decision.

How the agent answers is one setting, :class:`Answering`: the model once (every arm), the harness's tools alone (the
``tool-only`` control: no model call, nothing charged, nothing memoised) or ``votes`` sampled answers per instance with
the most frequent parsed one kept (the ``best-of-n`` control).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sia_bench import metering
from sia_bench.harness import Harness
from sia_bench.memo import ResultMemo, code_digest, result_key
from sia_bench.models.base import Model, SamplingParams
from sia_bench.records import JsonlWriter, Ledger
from sia_bench.task import Answer, Instance, Score, Task

NO_TOOL_ANSWER = "the harness's tools give no answer for this instance (tool-only control: the model is not asked)"
RETRY_TEMPLATE = "Your answer could not be used: {error}\nAnswer again, following the required output format exactly."
RANK_BLOCK = 32  # instances per block of a rank-mode pass (see Agent.run)
_ENGINE_CODE = [Path(__file__).parent / name for name in ("agent.py", "harness.py", "task.py", "models")]


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
    reused: bool = False  # served from the memo: computed earlier under the same key, not by this pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answering:
    """Who answers and how; the same for every pass of a run (train, val, test).

    ``answers_with="tools"``: each raw answer is :meth:`Task.tool_answer` (the ``tool-only`` control). With
    ``temperature`` set, every instance gets ``votes`` samples at that temperature (generate mode: sampled replies;
    rank mode: one ranking, then draws from softmax(scores / temperature)) and the most frequent parsed answer wins,
    ties to the first drawn (self-consistency, the ``best-of-n`` control). None keeps the harness's decoding.
    """

    answers_with: str = "model"  # model | tools
    votes: int = 1
    temperature: float | None = None

    def __post_init__(self) -> None:
        if self.answers_with not in ("model", "tools"):
            raise ValueError(f"answers_with must be 'model' or 'tools', got {self.answers_with!r}")
        if not isinstance(self.votes, int) or self.votes < 1:
            raise ValueError(f"votes must be a whole number >= 1, got {self.votes!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"a sampling temperature must be > 0, got {self.temperature!r}")
        if self.votes > 1 and self.temperature is None:
            raise ValueError("votes > 1 need a sampling temperature (greedy samples would all agree)")
        if self.answers_with == "tools" and (self.votes > 1 or self.temperature is not None):
            raise ValueError("tool answers are deterministic: no votes or temperature")

    @property
    def sampled(self) -> bool:
        return self.temperature is not None

    @property
    def is_default(self) -> bool:
        return self == Answering()


@dataclass
class _Work:
    """One instance's state during a pass; ``attempts`` holds (tokens_in, tokens_out) per model call round (summed
    over its samples when voting); ``samples`` the (text, error) of each sample of the last round."""

    prompt: Any = None
    raw: str = ""
    error: str | None = None
    answer: Answer | None = None
    seconds: float = 0.0
    attempts: list[list[int]] = field(default_factory=list)
    ranked: bool = False
    samples: list[tuple[str, str | None]] = field(default_factory=list)
    votes: list[Any] | None = None


class Agent:
    """Render -> generate (or rank options) -> parse (-> retry) -> score, batched over instances."""

    def __init__(self, task: Task, model: Model, memo: ResultMemo | None = None, answering: Answering = Answering()):
        self.task, self.model, self.memo, self.answering = task, model, memo, answering
        self._task_identity: dict[str, Any] | None = None

    def run(self, harness: Harness, instances: Sequence[Instance], purpose: str, *, seed: int = 0,
            ledger: Ledger | None = None, writer: JsonlWriter | None = None,
            on_sample: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        def emit(traj: Trajectory) -> None:
            if writer is not None:
                writer.write(traj.to_dict())
            if on_sample is not None:
                on_sample(traj)

        instances = list(instances)
        # Rank-mode answers are independent per instance (nothing batch-dependent enters them or their memo key),
        # so a long pass runs in blocks: each block is written and memoised when it ends, and a killed pass resumes
        # from the memo instead of starting over. Generation passes stay whole: batch mates are part of their key.
        block = RANK_BLOCK if harness.params.get("answer_mode") == "rank" else len(instances)
        with metering.charging(ledger, purpose):
            trajectories = []
            for start in range(0, len(instances), max(block, 1)):
                trajectories += self._run(harness, instances[start:start + block], purpose, seed, emit)
        if ledger is not None:
            ledger.count_rollouts(purpose, len(instances))
            ledger.sandbox_seconds += sum(float(t.details.get("sandbox_seconds", 0.0)) for t in trajectories
                                          if not t.reused)
        return trajectories

    # -- one pass ----------------------------------------------------------------------------------------------
    def _run(self, harness: Harness, instances: list[Instance], purpose: str, seed: int,
             emit: Callable[[Trajectory], None]) -> list[Trajectory]:
        if self.answering.answers_with == "tools":
            return self._run_tools(harness, instances, purpose, emit)
        rank = harness.params.get("answer_mode") == "rank"
        temperature = self.answering.temperature if self.answering.sampled else harness["temperature"]
        params = SamplingParams(max_new_tokens=harness["max_new_tokens"], temperature=temperature, seed=seed)
        keys = self._keys(harness, instances, params, rank) if self.memo is not None else [None] * len(instances)
        hits = {i: e for i, k in enumerate(keys) if k is not None and (e := self.memo.get(k)) is not None
                and e["ranked"] == rank}
        work = {i: _Work() for i in range(len(instances)) if i not in hits}
        for i, w in work.items():
            w.prompt = self.task.render(harness, instances[i])
            w.ranked = rank and bool(w.prompt.options)
        ranked = [i for i, w in work.items() if w.ranked]
        if ranked or any(e["ranked"] for e in hits.values()):
            self._rank_round(ranked, work, hits, [instances[i].id for i in ranked], seed)
        todo = [i for i, w in work.items() if not w.ranked]
        if todo or any(not e["ranked"] for e in hits.values()):
            self._generate_round(todo, work, hits, params, 0)
        for i in work:
            self._answer(harness, instances[i], work[i])
        for attempt in range(1, harness["retries"] + 1):
            again = [i for i in todo if not work[i].answer.ok and work[i].error is None]
            if not again and not any(len(e["attempts"]) > attempt for e in hits.values()):
                break
            for i in again:
                w = work[i]
                w.prompt.messages = w.prompt.messages + [
                    {"role": "assistant", "content": w.raw},
                    {"role": "user", "content": RETRY_TEMPLATE.format(error=w.answer.error)}]
            self._generate_round(again, work, hits, params, attempt)
            for i in again:
                self._answer(harness, instances[i], work[i])
        out = []
        for i, inst in enumerate(instances):
            if i in hits:
                traj = Trajectory(**{**hits[i]["trajectory"], "purpose": purpose, "seconds": 0.0, "reused": True})
            else:
                traj = self._finish(inst, purpose, work[i])
                if keys[i] is not None and (work[i].ranked or not rank):  # rank-mode prompts without options: batched
                    entry = {k: v for k, v in traj.to_dict().items() if k not in ("purpose", "seconds", "reused")}
                    self.memo.put(keys[i], {"trajectory": entry, "attempts": work[i].attempts,
                                            "ranked": work[i].ranked})
            out.append(traj)
            emit(traj)
        return out

    def _run_tools(self, harness: Harness, instances: list[Instance], purpose: str,
                   emit: Callable[[Trajectory], None]) -> list[Trajectory]:
        """Every raw answer from the harness's tools: no model call, nothing charged, nothing memoised (cheap)."""
        out = []
        for inst in instances:
            t0 = time.perf_counter()
            w = _Work(prompt=self.task.render(harness, inst))  # recorded, so the trajectory shows what the tools saw
            try:
                text = self.task.tool_answer(harness, inst)
            except Exception as err:  # a tool bug is a miss with the reason kept, like a parser crash
                w.answer = Answer(None, "tool_crash", f"tool_answer raised {type(err).__name__}: {err}")
            else:
                if text is None:
                    w.answer = Answer(None, "no_tool_answer", NO_TOOL_ANSWER)
                else:
                    w.raw = text
                    w.answer = self._parse(harness, inst, text, None)
            w.seconds = time.perf_counter() - t0
            traj = self._finish(inst, purpose, w)
            traj.details = {**traj.details, "answered_by": "tools"}
            out.append(traj)
            emit(traj)
        return out

    def _rank_round(self, ranked: list[int], work: dict[int, _Work], hits: dict[int, dict], ids: list[str],
                    seed: int) -> None:
        metering.admit(self.model)
        if ranked:
            rankings = self.model.rank([(work[i].prompt.messages, work[i].prompt.options) for i in ranked])
            for i, r, inst_id in zip(ranked, rankings, ids):
                w = work[i]
                w.raw = w.prompt.options[max(range(len(r.scores)), key=r.scores.__getitem__)]
                if self.answering.sampled:
                    w.samples = [(w.prompt.options[j], None) for j in self._draw(r.scores, seed, inst_id)]
                w.seconds += r.seconds
                w.attempts.append([r.tokens_in, 0])
        self._replay([e for e in hits.values() if e["ranked"]], 0)

    def _draw(self, scores: list[float], seed: int, inst_id: str) -> list[int]:
        """``votes`` option indices drawn from softmax(scores / temperature), seeded by the pass seed and the id."""
        rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}/{inst_id}".encode()).digest()[:8], "big"))
        top = max(scores)
        weights = [math.exp((s - top) / self.answering.temperature) for s in scores]
        return rng.choices(range(len(scores)), weights=weights, k=self.answering.votes)

    def _generate_round(self, todo: list[int], work: dict[int, _Work], hits: dict[int, dict],
                        params: SamplingParams, attempt: int) -> None:
        metering.admit(self.model)
        if todo:
            n = self.answering.votes  # each prompt n times in one batch: n independent samples, charged as computed
            gens = self.model.generate([work[i].prompt.messages for i in todo for _ in range(n)], params)
            for k, i in enumerate(todo):
                group, w = gens[k * n:(k + 1) * n], work[i]
                errors = [g.error for g in group if g.error]
                w.raw, w.error = group[0].text, errors[0] if len(errors) == n else None
                w.samples = [(g.text, g.error) for g in group]
                w.seconds += sum(g.seconds for g in group)
                w.attempts.append([sum(g.tokens_in for g in group), sum(g.tokens_out for g in group)])
        self._replay([e for e in hits.values() if not e["ranked"]], attempt)

    def _replay(self, entries: list[dict], attempt: int) -> None:
        """Charge memoised results' model round ``attempt`` as if it had run now (tokens and FLOPs; no seconds)."""
        rounds = [e["attempts"][attempt] for e in entries if len(e["attempts"]) > attempt]
        if rounds:
            metering.charge(self.model, sum(r[0] for r in rounds), sum(r[1] for r in rounds), calls=0,
                            reused=len(rounds) if attempt == 0 else 0)

    def _answer(self, harness: Harness, inst: Instance, w: _Work) -> None:
        """Parse the round's reply; when voting, parse every sample and keep the most frequent parsed answer (ties:
        the first), with its raw text; samples that do not parse vote for nothing."""
        if not self.answering.sampled or w.error or not w.samples:
            w.answer = self._parse(harness, inst, w.raw, w.error)
            return
        parsed = [self._parse(harness, inst, text, error) for text, error in w.samples]
        keys = [_vote_key(a.value) if a.ok else None for a in parsed]
        counts = Counter(k for k in keys if k is not None)
        best = max(counts.values(), default=0)
        pick = next((j for j, k in enumerate(keys) if k is not None and counts[k] == best), 0)
        w.raw, w.answer = w.samples[pick][0], parsed[pick]
        w.votes = [_vote_value(a.value) if a.ok else None for a in parsed]

    def _finish(self, inst: Instance, purpose: str, w: _Work) -> Trajectory:
        t0 = time.perf_counter()
        score = self._score(inst, w.answer)
        details = score.details if w.votes is None else {**score.details, "votes": w.votes}
        return Trajectory(inst.id, purpose, w.prompt.messages, w.raw, w.answer.value, w.answer.method,
                          w.answer.error, score.value, score.feedback, details, w.prompt.options,
                          max(len(w.attempts) - 1, 0), w.prompt.tool_calls, sum(a[0] for a in w.attempts),
                          sum(a[1] for a in w.attempts), w.seconds + time.perf_counter() - t0, w.error)

    # -- memo keys ---------------------------------------------------------------------------------------------
    def _keys(self, harness: Harness, instances: list[Instance], params: SamplingParams, rank: bool) -> list[str]:
        if self._task_identity is None:
            module_file = getattr(sys.modules.get(type(self.task).__module__), "__file__", None)
            folders = _ENGINE_CODE + ([Path(module_file).parent] if module_file else [])
            self._task_identity = {"task": self.task.name, "version": self.task.version,
                                   "data": self.task.data_info(), "code": code_digest(folders)}
        decoding = {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                    "top_p": params.top_p, "stop": list(params.stop), "retries": harness["retries"],
                    "seed": params.seed if params.temperature > 0 else None, "rank": rank}
        if self.answering.sampled:  # votes and rank-mode draws depend on them too
            decoding.update(votes=self.answering.votes, vote_temperature=self.answering.temperature, seed=params.seed)
        context = {**self._task_identity, "harness": harness.digest, "model": self.model.identity(),
                   "decoding": decoding}
        # Generation is batched (and sampling draws from one generator), so batch mates are part of the key.
        batch = None if rank else hashlib.sha256("\n".join(i.id for i in instances).encode()).hexdigest()
        return [result_key(context, inst, batch) for inst in instances]

    # -- parse and score, crash-proof --------------------------------------------------------------------------
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


def _vote_key(value: Any) -> str:
    """Parsed answers compared by value (lists, dicts and programs too)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _vote_value(value: Any) -> Any:
    """A vote as recorded: the answer itself when it is short, else a digest of it (program answers)."""
    key = _vote_key(value)
    return value if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
