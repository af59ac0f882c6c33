"""The improvement loop: generations, the val-only keep-best gate, the budget ledger, stop rules, and resume.

Generation 0 scores the starting candidate on val. Each later generation asks the improver for a proposal (harness
patch, weight update, both, or stop), scores the candidate on **val only**, and keeps it only on strict improvement.
Test is scored once, at the end, on the best candidate. Every generation is seeded from (seed, index) and improvers
are pure functions of the loop state, so a killed run resumed from its last finished generation ends exactly as an
uninterrupted one.
"""

from __future__ import annotations

import random
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from sia_bench import metering
from sia_bench.agent import Agent
from sia_bench.config import Budget, HarnessStart, RunConfig, resolve_run  # noqa: F401  (Budget re-exported)
from sia_bench.harness import Harness, PatchError
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.view import TrainOnlyTask
from sia_bench.memo import ResultMemo
from sia_bench.models.base import Model
from sia_bench.records import Candidate, GenerationRecord, JsonlWriter, Ledger, RunRecord, atomic_write_json, \
    environment, now
from sia_bench.registry import IMPROVERS, TASKS
from sia_bench.rundir import RunDirError, open_run, stored_config
from sia_bench.task import Task, TaskError, split_limit, subsample

EventHook = Callable[..., None]
EVAL_SAMPLE_SEED = 0  # the test subset never depends on the run seed: every arm and seed is scored on the same cases
# Sources of randomness a run seed drives, recorded in every run: seeds are replicates, not copies.
SEED_VARIES = ("val subset (drawn from the val pool carved from train)", "train minibatch order",
               "proposer tie-breaks and sampling", "RL sampling and prompt order", "LoRA initialisation",
               "sampled decoding (temperature > 0)")
SEED_FIXED = ("test instances", "the starting harness", "greedy decoding")


def build_task(name: str, options: dict[str, Any]) -> Task:
    return TASKS.get(name)(**options)


def build_improver(name: str, options: dict[str, Any]) -> Improver:
    return IMPROVERS.get(name).from_options(**options)


def starting_harness(task: Task, start: HarnessStart) -> tuple[Harness, HarnessStart]:
    """The harness a run starts from: the task's default, or ``--harness DIR``, with ``-H`` overrides typed by the
    task's specs. Returns it and the start in canonical form (overrides equal to the base value dropped)."""
    base = task.default_harness()
    if start.dir is not None:
        try:
            base = Harness.load(Path(start.dir), base, fill_missing=True)
        except PatchError as err:
            raise TaskError(f"--harness {start.dir}: {err}") from None
    try:
        harness = base.with_params(start.params)
    except PatchError as err:
        raise TaskError(str(err)) from None
    params = {k: harness.params[k] for k in sorted(start.params) if harness.params[k] != base.params[k]}
    return harness, HarnessStart(dir=start.dir, params=params)


def generation_seed(seed: int, generation: int) -> int:
    return seed * 100_003 + generation


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


class Loop:
    """One run: build (or receive) task, model and improver, then iterate generations into ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: Path, *, task: Task | None = None, model: Model | None = None,
                 feedback_model: Model | None = None, events: EventHook | None = None,
                 memo: ResultMemo | None = None):
        self._check_models = model is None
        config, self.run_dir = resolve_run(config, self._check_models), Path(run_dir)
        self.events = events or (lambda *a, **k: None)
        self.task = task or build_task(config.task, config.task_options)
        self.improver = build_improver(config.improver, config.improver_options)
        self.start_harness, start = starting_harness(self.task, config.harness)
        self.config = config = config.model_copy(update={"harness": start})
        if model is None:
            from sia_bench.models import build_model

            model = build_model(config.model, **config.model_options)
        self.model = model
        if feedback_model is None and config.feedback_model:
            from sia_bench.models import build_model

            feedback_model = build_model(config.feedback_model, **config.feedback_options)
        self.feedback_model = feedback_model
        if feedback_model is not None:
            feedback_model.meter_purpose = "feedback"  # its calls are charged as such unless a scope says otherwise
        self.agent = Agent(self.task, self.model, memo, self.improver.answering())  # tools or votes: every pass
        self.metric = self.task.metric
        self._eval_cache: dict[tuple[str, str | None], dict[str, float]] = {}

    # -- helpers -----------------------------------------------------------------------------------------------
    def _instances(self, split: str):
        """The scored subset: test is the same for every arm and seed; val is drawn with the run's seed."""
        seed = self.config.seed if split == "val" else EVAL_SAMPLE_SEED
        return subsample(self.task.split(split), split_limit(split, self.config.limit, self.config.test_limit), seed)

    def _use_adapter(self, adapter_dir: str | None) -> None:
        if self.model.trainable and hasattr(self.model, "load_adapter"):
            self.model.load_adapter(self.run_dir / adapter_dir if adapter_dir else None)

    def _evaluate(self, harness: Harness, adapter_dir: str | None, split: str, out: Path, seed: int,
                  ledger: Ledger) -> dict[str, float]:
        key = (harness.digest, adapter_dir)
        if split == "val" and key in self._eval_cache:
            return dict(self._eval_cache[key])  # the same candidate again: no new rollouts
        self._use_adapter(adapter_dir)
        instances = self._instances(split)
        out.unlink(missing_ok=True)
        started = time.perf_counter()
        self.events("pass", split=split, total=len(instances))
        with JsonlWriter(out) as writer:
            metrics, _ = self.agent.evaluate(harness, instances, split, seed=seed, ledger=ledger, writer=writer,
                                             on_sample=lambda t: self.events("sample", split=split, trajectory=t))
        self.events("pass_done", split=split, total=len(instances), metrics=metrics,
                    seconds=time.perf_counter() - started)
        if split == "val":
            self._eval_cache[key] = dict(metrics)
        return metrics

    def _stop_reason(self, record: RunRecord) -> str | None:
        b, led = record.budget, record.ledger
        done = len(record.generations) - 1
        if done > 0 and "stop" in record.generations[-1].levers:  # persisted, so a resumed run stops the same way
            return record.generations[-1].reason or "the improver stopped"
        if done >= b.generations:
            return f"generation budget reached ({b.generations})"
        if b.task_rollouts is not None and led.task_rollouts() >= b.task_rollouts:
            return f"task-rollout budget reached ({led.task_rollouts()} >= {b.task_rollouts})"
        if b.task_tokens is not None and led.task_tokens() >= b.task_tokens:
            return f"task-token budget reached ({led.task_tokens()} >= {b.task_tokens})"
        if b.wall_seconds is not None and led.wall_seconds >= b.wall_seconds:
            return f"wall-time budget reached ({led.wall_seconds:.0f} s)"
        if b.compute_flops is not None and led.total_flops() >= b.compute_flops:
            return f"compute budget reached ({led.total_flops():.4g} >= {b.compute_flops:.4g} FLOPs)"
        best = record.generations[record.best_generation or 0].val.get(self.metric.name)
        if b.target is not None and best is not None and not self.metric.better(b.target, best):
            return f"target {b.target} reached ({best:.4f})"
        if b.patience is not None:
            since = done - (record.best_generation or 0)
            if since >= b.patience:
                return f"no improvement for {since} generations (patience {b.patience})"
        return None

    # -- the run -----------------------------------------------------------------------------------------------
    def new_record(self) -> RunRecord:
        cfg = self.config
        label = self.improver.label(self.feedback_model)
        if not cfg.harness.is_default:  # a run from another starting harness is another row of the tables
            label += f" · start {cfg.harness.describe()}"
        return RunRecord(
            run_id=self.run_dir.name, created_at=now(),
            task={"name": self.task.name, "version": self.task.version, "options": self.task.opts,
                  "metric": self.metric.name, "higher_is_better": self.metric.higher_is_better,
                  "data": self.task.data_info()},
            improver={"name": cfg.improver, "label": label, "args": self.improver.settings(),
                      **({} if self.agent.answering.is_default else {"answering": asdict(self.agent.answering)})},
            models={"task": self.model.info(), "feedback": self.feedback_model.info() if self.feedback_model else None},
            seed=cfg.seed, limit=cfg.limit, test_limit=cfg.test_limit, budget=cfg.budget, environment=environment(),
            start_harness={**cfg.harness.model_dump(mode="json"), "digest": self.start_harness.digest},
            replicate={"seed": cfg.seed, "varies": list(SEED_VARIES), "fixed": list(SEED_FIXED),
                       "test_subset_seed": EVAL_SAMPLE_SEED, "val_subset_seed": cfg.seed})

    def run(self) -> RunRecord:
        """Start the run, or continue it from its last finished generation; the folder is locked meanwhile."""
        with open_run(self.run_dir, self.config, self.new_record,
                      lambda stored: resolve_run(stored, self._check_models)) as record:
            if record.status == "finished":
                return record
            return self._continue(record)

    def _continue(self, record: RunRecord) -> RunRecord:
        if not record.generations and record.start_harness.get("digest", self.start_harness.digest) != \
                self.start_harness.digest:
            raise RunDirError(f"the starting harness changed since {self.run_dir} was started (digest "
                              f"{record.start_harness.get('digest')} -> {self.start_harness.digest}); restore it or "
                              "use another --run-dir")
        for gen in record.generations:  # candidates scored before a kill are not scored again, as without it
            if gen.candidate is not None and gen.val:
                self._eval_cache[(gen.candidate.harness_digest, gen.candidate.adapter_dir)] = dict(gen.val)
        started = time.perf_counter()
        wall_before = record.ledger.wall_seconds
        # Drop the folders of generations that did not finish: they are redone from their seed.
        for folder in self.run_dir.glob("gen_*"):
            if int(folder.name[4:]) >= len(record.generations):
                shutil.rmtree(folder)
        start_harness = self.start_harness
        if not record.generations:
            meta = Ledger()
            if hasattr(self.improver, "initial_harness"):  # the Meta-Agent drafts the start once, charged to gen 0
                with metering.compute_budget(record.budget.compute_flops, 0.0), metering.charging(meta, "meta"):
                    start_harness = self.improver.initial_harness(self.task, start_harness, self.feedback_model,
                                                                  generation_seed(self.config.seed, 0))
            self._generation_zero(record, start_harness, meta)
        with metering.compute_budget(record.budget.compute_flops, record.ledger.total_flops()):
            while (reason := self._stop_reason(record)) is None:
                record.ledger.wall_seconds = wall_before + time.perf_counter() - started
                self._generation(record, start_harness)
                record.ledger.wall_seconds = wall_before + time.perf_counter() - started
                record.save(self.run_dir)
        record.stop_reason = reason or record.stop_reason
        self._final(record, start_harness)
        record.ledger.wall_seconds = wall_before + time.perf_counter() - started
        record.status = "finished"
        record.save(self.run_dir)
        self.events("finished", record=record)
        return record

    def _best(self, record: RunRecord, like: Harness) -> tuple[Harness, str | None, dict[str, float]]:
        gen = record.generations[record.best_generation or 0]
        assert gen.candidate is not None
        harness = Harness.load(self.run_dir / gen.candidate.harness_dir, like)
        return harness, gen.candidate.adapter_dir, gen.val

    def _generation_zero(self, record: RunRecord, harness: Harness, led: Ledger) -> None:
        t0 = time.perf_counter()
        gen_dir = self.run_dir / "gen_000"
        harness.save(gen_dir / "harness")
        seed = generation_seed(self.config.seed, 0)
        _seed_everything(seed)
        self.events("generation", index=0, note="scoring the starting candidate on val")
        val = self._evaluate(harness, None, "val", gen_dir / "val.jsonl", seed, led)
        record.controls["val"] = self.task.control_scores("val", self._instances("val"))
        gen = GenerationRecord(index=0, proposer="start", levers=[], accepted=True, val=val,
                               candidate=Candidate(harness_digest=harness.digest, harness_dir="gen_000/harness"),
                               best_so_far=val.get(self.metric.name), reason="starting candidate", ledger=led,
                               seconds=time.perf_counter() - t0, finished_at=now())
        self._commit(record, gen, gen_dir)

    def _commit(self, record: RunRecord, gen: GenerationRecord, gen_dir: Path) -> None:
        """Finish a generation with one atomic write of run.json that also moves the best pointer: a kill before it
        redoes the generation, a kill after it finds everything, never half a state."""
        record.ledger = record.ledger.plus(gen.ledger.model_copy(update={"wall_seconds": 0.0}))
        atomic_write_json(gen_dir / "generation.json", gen.model_dump(mode="json"))
        record.generations.append(gen)
        if gen.accepted:
            record.best_generation = gen.index
        record.save(self.run_dir)
        self.events("generation_done", record=record, generation=gen)

    def _generation(self, record: RunRecord, like: Harness) -> None:
        """Run one generation (a stop proposal is recorded as the ``stop`` lever, which ends the run)."""
        index = len(record.generations)
        t0 = time.perf_counter()
        gen_dir = self.run_dir / f"gen_{index:03d}"
        gen_dir.mkdir(parents=True, exist_ok=True)
        seed = generation_seed(self.config.seed, index)
        _seed_everything(seed)
        best_harness, best_adapter, best_val = self._best(record, like)
        self._use_adapter(best_adapter)
        led = Ledger()
        self.events("generation", index=index, note="improver proposing")
        view = TrainOnlyTask(self.task)  # improvers see train instances and val aggregates, nothing else
        agent = Agent(view, self.model, self.agent.memo, self.agent.answering)  # train rollouts answer like val/test
        state = LoopState(generation=index, task=view, agent=agent,
                          train=view.split("train"), val_size=len(self._instances("val")),
                          best_harness=best_harness, best_adapter_dir=self.run_dir / best_adapter if best_adapter
                          else None, best_val=best_val, history=list(record.generations), ledger=record.ledger,
                          gen_ledger=led, budget=record.budget, seed=seed, workdir=gen_dir,
                          feedback_model=self.feedback_model)
        try:
            with metering.charging(led):
                proposal: Proposal = self.improver.propose(state)
        except metering.BudgetExhausted as err:  # the proposal is dropped whole; its spend stays in the ledger
            proposal = Proposal(stop=True, reason=f"stopped by the compute budget while proposing: {err}")
        gen = GenerationRecord(index=index, proposer=proposal.proposer or self.improver.label(self.feedback_model),
                               diagnosis=proposal.diagnosis, actions=proposal.actions, levers=proposal.levers,
                               ledger=led, reason=proposal.reason)
        best_value = best_val.get(self.metric.name)
        if proposal.stop:
            gen.levers = [*gen.levers, "stop"] if "stop" not in gen.levers else gen.levers
            gen.best_so_far = best_value
        else:
            harness = proposal.harness or best_harness
            adapter = (str(Path(proposal.adapter_dir).resolve().relative_to(self.run_dir.resolve()))
                       if proposal.adapter_dir else best_adapter)
            if harness.digest == best_harness.digest and adapter == best_adapter:
                gen.reason = gen.reason or "the proposal changed nothing"
                gen.val, gen.best_so_far = dict(best_val), best_value
            else:
                harness.save(gen_dir / "harness")
                gen.candidate = Candidate(harness_digest=harness.digest, harness_dir=f"gen_{index:03d}/harness",
                                          adapter_dir=adapter)
                self.events("generation", index=index, note="scoring the candidate on val")
                try:
                    gen.val = self._evaluate(harness, adapter, "val", gen_dir / "val.jsonl", seed, led)
                except metering.BudgetExhausted as err:  # never accepted half-scored
                    gen.levers, gen.best_so_far = [*gen.levers, "stop"], best_value
                    gen.reason = f"stopped by the compute budget before val was scored, not accepted: {err}"
                    gen.seconds, gen.finished_at = time.perf_counter() - t0, now()
                    self._commit(record, gen, gen_dir)
                    return
                value = gen.val.get(self.metric.name, float("nan"))
                gen.accepted = self.metric.better(value, best_value if best_value is not None else float("nan"))
                verdict = "kept: strict improvement on val" if gen.accepted else "rejected: no strict improvement on val"
                gen.reason = f"{verdict} ({value:.4f} vs best {best_value:.4f})" + (
                    f"; {gen.reason}" if gen.reason else "")
                gen.best_so_far = value if gen.accepted else best_value
        gen.seconds = time.perf_counter() - t0
        gen.finished_at = now()
        self._commit(record, gen, gen_dir)

    def _final(self, record: RunRecord, like: Harness) -> None:
        """Score the best candidate on test, once."""
        harness, adapter, val = self._best(record, like)
        led = Ledger()
        self.events("generation", index=record.best_generation, note="scoring the best candidate on test (once)")
        test = self._evaluate(harness, adapter, "test", self.run_dir / "final" / "test.jsonl",
                              generation_seed(self.config.seed, 10_000), led)
        record.controls["test"] = self.task.control_scores("test", self._instances("test"))
        record.ledger = record.ledger.plus(led)
        m = self.metric.name
        record.final = {
            "best_generation": record.best_generation, "val": val, "test": test,
            "val_normalised": self.task.normalise(val[m], record.controls["val"]) if m in val else None,
            "test_normalised": self.task.normalise(test[m], record.controls["test"]) if m in test else None,
            "test_ledger": led.model_dump(),
        }
        atomic_write_json(self.run_dir / "final" / "summary.json", record.final)


def new_run_dir(root: Path, config: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{config.task}-{config.improver}-s{config.seed}-{stamp}-{uuid.uuid4().hex[:6]}"


def run(config: RunConfig, run_dir: Path | None = None, **kw: Any) -> RunRecord:
    """Run (or continue) one experiment; returns its finished record."""
    run_dir = Path(run_dir) if run_dir else new_run_dir(Path("runs"), config)
    return Loop(config, run_dir, **kw).run()


def resume(run_dir: Path, **kw: Any) -> RunRecord:
    """Continue a killed run from its last finished generation, with the configuration it was started with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no such folder)")
    return Loop(stored_config(run_dir), run_dir, **kw).run()
