"""legal_charges: predict the charge a Chinese court convicted on (LawBench-191, CAIL2018 JSON lines, LawBench 3-3).

Val is carved from train (stratified, fixed seed) and test is scored once at the end. The default harness ranks three
candidate charges by log-likelihood over 100 characters of facts: a start whose sampled answers earn reward (so
weight updates have a signal) at the cheapest point of the measured accuracy/cost curve (``harness.toml`` says
why). The tools a harness can switch on are similar-case retrieval, the candidate list (its length), few-shot
demonstrations, the full label list and the facts' length; ``answer_mode = "generate"`` answers in free text. No
charge definitions ship with any of these datasets, so there is no definitions tool.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from sia_bench.harness import Harness, ParamSpec, load_default_harness
from sia_bench.task import (Answer, Instance, Metric, OptionError, Prompt, Score, Task, TaskError,
                            stratified_split, subsample)
from tasks.legal_charges import data as D
from tasks.legal_charges.metrics import cail_score, macro_f1, set_f1
from tasks.legal_charges.parser import ChargeParser
from tasks.legal_charges.tools import CaseIndex, cases_checksum, get_index, pick_few_shot

HERE = Path(__file__).parent
DATASETS = ("lawbench191", "cail2018", "lawbench_3_3")

HARNESS_SPECS: dict[str, ParamSpec] = {
    "answer_mode": ParamSpec(str, "generate", choices=("generate", "rank"),
                             help="rank: the agent picks the candidate with the best log-likelihood (needs candidates)"),
    "retrieval": ParamSpec(bool, False, help="show the k most similar training cases with their charges"),
    "retrieval_k": ParamSpec(int, 3, min=1, max=20, help="how many similar cases retrieval shows"),
    "retriever": ParamSpec(str, "tfidf", choices=("tfidf", "bm25"), help="char 1-3-gram TF-IDF or char BM25"),
    "candidates": ParamSpec(bool, False, help="list the top-n charges by similarity to each charge's cases"),
    "candidates_n": ParamSpec(int, 5, min=2, max=30, help="how many candidate charges"),
    "few_shot_selection": ParamSpec(str, "similar", choices=("similar", "random", "confused"),
                                    help="how few_shot demonstrations are picked from train"),
    "example_chars": ParamSpec(int, 120, min=20, max=2000, help="fact characters shown per retrieved case or demo"),
    "fact_chars": ParamSpec(int, 300, min=0, max=20_000,
                            help="the case's facts are cut to this many characters (0 = whole); the main prompt cost"),
    "label_list": ParamSpec(bool, False, help="put every valid charge name in the prompt (~2,400 tokens for 191)"),
    "parser": ParamSpec(str, "fuzzy", choices=("exact", "fuzzy"),
                        help="exact: exact or normalised names only; fuzzy: also contained names and edit distance"),
    "tools": ParamSpec(list, [], choices=(), help="unused here: tools are switched by retrieval/candidates/few_shot"),
}


class LegalChargesTask(Task):
    """Chinese criminal charge prediction (LawBench-191 / CAIL2018 / LawBench 3-3), top-1 accuracy."""

    name = "legal_charges"
    version = "1.0"
    metric = Metric("accuracy")
    description = ("From a Chinese criminal case description, predict the charge the court convicted on "
                   "(LawBench-191: 191 charges, 5,332 train / 913 test).")
    options = {
        "dataset": ParamSpec(str, "lawbench191", choices=DATASETS, help="which dataset"),
        "data_dir": ParamSpec(str, None, help="folder holding lawbench191/ and lawbench_3-3/ (else "
                                              "$SIA_BENCH_LEGAL_DATA, ../shared/data/legal_charges, the wheel cache)"),
        "path": ParamSpec(str, None, help="CAIL2018 JSON-lines file or folder (dataset=cail2018)"),
        "val_fraction": ParamSpec(float, 0.1, min=0.01, max=0.5, help="share of train carved out as val"),
        "seed": ParamSpec(int, 0, help="seed of the val carve and of subsampling"),
        "val_size": ParamSpec(int, 60, min=0, help="fixed random subsample of val for CPU runs; 0 = all"),
        "test_size": ParamSpec(int, 0, min=0, help="fixed random subsample of test; 0 = all (913 for LawBench-191)"),
    }
    search_space = {
        "candidates": [True],
        "answer_mode": ["rank"],
        "candidates_n": [2, 5],
        "retrieval": [True],
        "retrieval_k": [2, 5],
        "few_shot": [2, 4],
        "few_shot_selection": ["confused", "random"],
        "retriever": ["bm25"],
        "fact_chars": [200, 400],
        "example_chars": [60, 200],
    }

    def __init__(self, **options: Any):
        if "max_fact_chars" in options:
            raise OptionError("-T max_fact_chars is now the harness parameter fact_chars (prompt cost is a harness "
                              "choice): set it with -H fact_chars=N or in harness.toml")
        super().__init__(**options)
        self.multi = self.opts["dataset"] != "lawbench191"
        if self.multi:
            self.metric = Metric("set_f1")  # multi-label datasets: LawBench's example-averaged set F1
        self._loaded: dict[str, Any] | None = None
        self._parser: ChargeParser | None = None

    # -- data --------------------------------------------------------------------------------------------------
    def _data(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = getattr(self, f"_load_{self.opts['dataset']}")()
            train = self._loaded["train"]
            counts = Counter(label for c in train for label in c.labels)
            top = max(counts.values())
            self._loaded["majority"] = min(label for label, n in counts.items() if n == top)
        return self._loaded

    def _carve_val(self, cases: list[D.Case]) -> tuple[list[D.Case], list[D.Case]]:
        keep, carved = stratified_split(cases, [c.labels[0] for c in cases], self.opts["val_fraction"],
                                        self.opts["seed"])
        return [cases[i] for i in keep], [cases[i] for i in carved]

    def _load_lawbench191(self) -> dict[str, Any]:
        root, origin = D.resolve_data_dir(self.opts["data_dir"])
        splits, classes, notes = D.load_lawbench191(root)
        train, val = self._carve_val(splits["train"])
        train_facts = {c.fact for c in train}
        dup = sum(c.fact in train_facts for c in splits["test"])
        notes.append(f"{dup} test facts also occur verbatim in train (as published; kept)")
        return {"train": train, "val": val, "test": splits["test"], "labels": classes, "origin": f"{root} ({origin})",
                "notes": notes, "val_from": f"train, stratified {self.opts['val_fraction']:.0%}, seed "
                                           f"{self.opts['seed']}"}

    def _load_lawbench_3_3(self) -> dict[str, Any]:
        root, origin = D.resolve_data_dir(self.opts["data_dir"])
        splits, classes, notes = D.load_lawbench191(root)
        cases, notes33 = D.load_lawbench33(root)
        train = [D.Case(c.id, c.fact, tuple(D.strip_brackets(x) for x in c.labels)) for c in splits["train"]]
        order = list(range(len(cases)))
        random.Random(self.opts["seed"]).shuffle(order)
        n_val = round(len(cases) * self.opts["val_fraction"])
        val = [cases[i] for i in sorted(order[:n_val])]
        test = [cases[i] for i in sorted(order[n_val:])]
        labels = sorted({D.strip_brackets(c) for c in classes} | {x for c in cases for x in c.labels})
        return {"train": train, "val": val, "test": test, "labels": labels, "origin": f"{root} ({origin})",
                "notes": notes + notes33 + [
                    f"evaluation only: train = LawBench-191 train ({len(train)} cases, brackets stripped) for "
                    f"retrieval and few-shot; val/test = a seed-{self.opts['seed']} random "
                    f"{self.opts['val_fraction']:.0%}/{1 - self.opts['val_fraction']:.0%} cut of the 500 3-3 cases",
                    f"label set: {len(labels)} charges (LawBench-191's 191 + those only in 3-3 answers)"],
                "val_from": f"LawBench 3-3, random {self.opts['val_fraction']:.0%}, seed {self.opts['seed']}"}

    def _load_cail2018(self) -> dict[str, Any]:
        if not self.opts["path"]:
            raise TaskError("dataset=cail2018 needs -T path=<CAIL2018 JSON-lines file or folder>")
        splits, notes, official = D.load_cail(Path(self.opts["path"]).expanduser())
        val_from = "the data's own valid file"
        if "all" in splits:  # one file: carve test (20%) then val
            keep, carved = stratified_split(splits["all"], [c.labels[0] for c in splits["all"]], 0.2,
                                            self.opts["seed"])
            splits = {"train": [splits["all"][i] for i in keep], "test": [splits["all"][i] for i in carved]}
            notes.append(f"single file: test = stratified 20% (seed {self.opts['seed']}), val carved from the rest")
        if "val" not in splits:
            splits["train"], splits["val"] = self._carve_val(splits["train"])
            val_from = f"train, stratified {self.opts['val_fraction']:.0%}, seed {self.opts['seed']}"
        if "test" not in splits:
            raise TaskError(f"{self.opts['path']} has no *test* file")
        labels = official or sorted({x for c in splits["train"] for x in c.labels})
        known = set(labels)
        for name in ("train", "val", "test"):
            kept = [c for c in splits[name] if set(c.labels) <= known]
            if len(kept) < len(splits[name]):
                notes.append(f"{name}: skipped {len(splits[name]) - len(kept)} cases whose gold charges are not in "
                             f"the label set ({'accu.txt' if official else 'charges seen in train'})")
            splits[name] = kept
        return {**splits, "labels": labels, "origin": str(self.opts["path"]), "notes": notes, "val_from": val_from}

    def load_split(self, split: str) -> list[Instance]:
        data = self._data()
        cases = data[split]
        if split != "train":
            size = self.opts[f"{split}_size"]
            chosen = subsample(cases, size or None, self.opts["seed"])
        else:
            chosen = cases
        return [Instance(c.id, {"fact": c.fact}, c.labels, {"dataset": self.opts["dataset"], **c.meta})
                for c in chosen]

    @property
    def labels(self) -> list[str]:
        return self._data()["labels"]

    @property
    def label_set(self) -> frozenset[str]:
        data = self._data()
        if "label_set" not in data:
            data["label_set"] = frozenset(data["labels"])
        return data["label_set"]

    def index(self, retriever: str = "tfidf") -> CaseIndex:
        """The retrieval index over train, kept on the task (get_index also caches by data checksum)."""
        indexes = self._data().setdefault("indexes", {})
        if retriever not in indexes:
            indexes[retriever] = get_index(self._data()["train"], retriever)
        return indexes[retriever]

    def data_info(self) -> dict[str, Any]:
        data = self._data()
        return {"dataset": self.opts["dataset"], "source": data["origin"], "val_from": data["val_from"],
                "labels": len(data["labels"]), "majority_charge": data["majority"], "notes": data["notes"],
                "sizes": {s: len(data[s]) for s in ("train", "val", "test")},
                "used": {s: len(self.split(s)) for s in ("val", "test")},
                "checksums": {s: cases_checksum(data[s]) for s in ("train", "val", "test")},
                "options": dict(self.opts)}

    # -- agent side --------------------------------------------------------------------------------------------
    def default_harness(self) -> Harness:
        return load_default_harness(HERE, HARNESS_SPECS)

    def _cut(self, fact: str, limit: int) -> str:
        return fact if not limit or len(fact) <= limit else fact[:limit] + "…"

    def _label_text(self, labels: Sequence[str]) -> str:
        return ";".join(labels)

    def render(self, harness: Harness, instance: Instance) -> Prompt:
        """Prompt from the instance's fact only (never its target); tools search train, excluding this case."""
        train = self._data()["train"]
        fact = instance.input["fact"]
        skill = harness.skill.split("\n---\n", 1)[-1].strip()
        if harness["label_list"]:  # the same for every instance: part of the system block, whose KV state is reused
            skill += "\n\n有效罪名 / Valid charges: " + "; ".join(self.labels)
        messages = [{"role": "system", "content": skill}]
        tool_calls: list[dict[str, Any]] = []
        need_index = harness["retrieval"] or harness["candidates"] or harness["few_shot"] > 0
        index = self.index(harness["retriever"]) if need_index else None
        short = harness["example_chars"]
        if harness["few_shot"] > 0:
            picks = pick_few_shot(index, train, fact, harness["few_shot"], harness["few_shot_selection"],
                                  instance.id, self.opts["seed"])
            tool_calls.append({"tool": "few_shot", "how": harness["few_shot_selection"],
                               "ids": [train[i].id for i in picks]})
            for i in picks:
                messages.append({"role": "user", "content": f"案情 / Facts: {self._cut(train[i].fact, short)}\n"
                                                            f"罪名 / Charge:"})
                messages.append({"role": "assistant", "content": self._label_text(train[i].labels)})
        parts = []
        if harness["retrieval"]:
            hits = index.neighbours(fact, harness["retrieval_k"], instance.id)
            tool_calls.append({"tool": "retrieve", "retriever": harness["retriever"],
                               "ids": [train[i].id for i, _ in hits], "scores": [round(s, 4) for _, s in hits]})
            lines = [f"{n}. {self._cut(train[i].fact, short)} → 罪名: {self._label_text(train[i].labels)}"
                     for n, (i, _) in enumerate(hits, 1)]
            parts.append("相似案例 / Similar cases:\n" + "\n".join(lines))
        options = None
        if harness["candidates"]:
            options = index.candidates(fact, harness["candidates_n"], instance.id)
            tool_calls.append({"tool": "candidates", "n": harness["candidates_n"], "charges": options})
            parts.append("候选罪名 / Candidate charges: " + "; ".join(options))
        parts.append(f"案情 / Facts: {self._cut(fact, harness['fact_chars'])}\n罪名 / Charge:")
        messages.append({"role": "user", "content": "\n\n".join(parts)})
        return Prompt(messages, options, tool_calls)

    @property
    def parser(self) -> ChargeParser:
        if self._parser is None:
            self._parser = ChargeParser(self.labels)
        return self._parser

    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer:
        found, method, error = self.parser.parse(text, harness["parser"], multi=self.multi)
        if error:
            return Answer(None, method, error)
        return Answer(found if self.multi else found[0], method)

    def _pred(self, answer: Answer) -> list[str]:
        if answer.value is None:
            return []
        return [answer.value] if isinstance(answer.value, str) else [str(v) for v in answer.value]

    def score(self, instance: Instance, answer: Answer) -> Score:
        gold = list(instance.target)
        pred = self._pred(answer)
        outside = [p for p in pred if p not in self.label_set]
        if self.multi:
            value = 0.0 if outside else set_f1(pred, gold)
        else:
            value = float(not outside and pred == gold)
        confusable = []
        for g in gold:
            confusable += [c for c in self.index().confusable.get(g, []) if c not in gold and c not in confusable]
        if answer.value is None:
            head = f"no valid charge parsed ({answer.error})"
        else:
            head = f"predicted {self._label_text(pred)} (parser: {answer.method})"
        verdict = "correct" if value == 1.0 else ("partly correct" if value > 0 else "wrong")
        feedback = f"{head}; gold {self._label_text(gold)}: {verdict}."
        if outside:
            feedback += f" {outside} is not in the label set."
        if value < 1.0 and confusable:
            hint = " (the prediction is one of them)" if set(pred) & set(confusable[:5]) else ""
            feedback += f" Charges most easily confused with the gold one in train: {'; '.join(confusable[:5])}{hint}."
        return Score(value, feedback, {"pred": pred, "gold": gold, "parse_method": answer.method,
                                       "outside_label_set": outside})

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        if not scores:
            return {self.metric.name: float("nan"), "n": 0}
        preds = [[p for p in s.details.get("pred", []) if p in self.label_set] for s in scores]
        golds = [list(i.target) for i in instances]
        out: dict[str, float] = {"n": len(scores)}
        if self.multi:
            out["set_f1"] = sum(s.value for s in scores) / len(scores)
            out["exact_match"] = sum(set(p) == set(g) for p, g in zip(preds, golds)) / len(scores)
            out.update(cail_score(preds, golds, self.labels))
        else:
            out["accuracy"] = sum(s.value for s in scores) / len(scores)
            out["macro_f1"] = macro_f1(preds, golds)
        return out

    def tool_answer(self, harness: Harness, instance: Instance) -> str | None:
        """The candidates tool's top charge (the TF-IDF/BM25 order the prompt shows); with candidates off, the charge
        most frequent among the retrieved neighbours (ties: the best-ranked); None when neither tool is on."""
        fact = instance.input["fact"]
        if harness["candidates"]:
            return self.index(harness["retriever"]).candidates(fact, 1, instance.id)[0]
        if harness["retrieval"]:
            train = self._data()["train"]
            hits = self.index(harness["retriever"]).neighbours(fact, harness["retrieval_k"], instance.id)
            votes = Counter(label for i, _ in hits for label in train[i].labels)  # insertion order = rank order
            return max(votes, key=votes.__getitem__) if votes else None
        return None

    def reference_text(self, harness: Harness, instance: Instance) -> str | None:
        """The gold reply: the charges as the prompt's demonstrations write them (generate mode), or the gold option
        (rank mode; None when the candidates miss it, so no reply of that harness is right)."""
        if harness["answer_mode"] == "rank" and harness["candidates"]:
            options = self.render(harness, instance).options or []
            return next((o for o in options if o in instance.target), None)
        return self._label_text(instance.target)

    # -- controls ----------------------------------------------------------------------------------------------
    def perfect_answer(self, instance: Instance) -> Answer:
        return Answer(list(instance.target) if self.multi else instance.target[0], "control")

    def null_answer(self, instance: Instance) -> Answer:
        majority = self._data()["majority"]
        return Answer([majority] if self.multi else majority, "control")
