"""Baselines for legal_charges (fitted on the task's train split only) and published anchor rows for the leaderboard.

Which data they fit on: the task's train split, i.e. LawBench-191 train *minus* the val cases carved from it (10%,
stratified, seed 0), so that their val scores are honest. Measured here on the 913 test cases (scikit-learn 1.9.1,
LinearSVC random_state=0): tfidf_svm fitted on train minus val (4,798 cases) 76.3% (0.7634); the same classifier
fitted on all 5,332 train cases (``TfidfSVM(include_val=True)``) 75.9% (0.7590, the same with random_state 1 and
2). The figure quoted for this classifier, 76.8%, was fitted on all 5,332 cases; it is within one point of both but
not reproduced exactly here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from sia_bench.task import Answer, Baseline, Instance, Task


def _train_texts_labels(task: Task) -> tuple[list[str], list[tuple[str, ...]]]:
    train = task.split("train")
    return [i.input["fact"] for i in train], [tuple(i.target) for i in train]


def _answer(task: Task, labels: list[str], method: str) -> Answer:
    return Answer(labels if getattr(task, "multi", False) else labels[0], method)


class Majority(Baseline):
    """Always the most frequent training charge (ties: first by name) — the null control as a baseline."""

    name = "majority"

    def fit(self, task: Task) -> None:
        counts = Counter(label for _, labels in zip(*_train_texts_labels(task)) for label in labels)
        top = max(counts.values())
        self.label = min(label for label, n in counts.items() if n == top)

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        return [_answer(task, [self.label], "majority") for _ in instances]


class TfidfSVM(Baseline):
    """Char 1-3-gram TF-IDF (sublinear tf, min_df=2) + LinearSVC(C=1, random_state=0), fitted on train minus val;
    multi-label: one-vs-rest, score > 0 or top-1."""

    name = "tfidf_svm"

    def __init__(self, include_val: bool = False):
        self.include_val = include_val  # True: fit on train + val, as the published 76.8% was (val is then seen)

    def fit(self, task: Task) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import MultiLabelBinarizer
        from sklearn.svm import LinearSVC

        texts, labels = _train_texts_labels(task)
        if self.include_val:
            val = task.split("val")
            texts, labels = texts + [i.input["fact"] for i in val], labels + [tuple(i.target) for i in val]
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        x = self.vectorizer.fit_transform(texts)
        self.multi = getattr(task, "multi", False)
        if self.multi:
            from sklearn.multiclass import OneVsRestClassifier

            self.binarizer = MultiLabelBinarizer()
            y = self.binarizer.fit_transform(labels)
            self.model = OneVsRestClassifier(LinearSVC(C=1.0, random_state=0)).fit(x, y)
            self.classes = list(self.binarizer.classes_)
        else:
            self.model = LinearSVC(C=1.0, random_state=0).fit(x, [ls[0] for ls in labels])
            self.classes = list(self.model.classes_)

    def decision(self, instances: Sequence[Instance]) -> np.ndarray:
        scores = self.model.decision_function(self.vectorizer.transform([i.input["fact"] for i in instances]))
        return np.asarray(scores).reshape(len(instances), -1)

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        out = []
        for row in self.decision(instances):
            picked = [self.classes[j] for j in np.flatnonzero(row > 0)] if self.multi else []
            out.append(_answer(task, picked or [self.classes[int(np.argmax(row))]], "tfidf_svm"))
        return out


class KnnVote(Baseline):
    """Similarity-weighted vote of the k nearest training cases (the task's TF-IDF retrieval index)."""

    name = "knn_vote"

    def __init__(self, k: int = 10, retriever: str = "tfidf"):
        self.k, self.retriever = k, retriever

    def fit(self, task: Task) -> None:
        self.index = task.index(self.retriever)

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        out = []
        for inst in instances:
            votes: dict[str, float] = {}
            for i, s in self.index.neighbours(inst.input["fact"], self.k, inst.id):
                for label in self.index.labels[i]:
                    votes[label] = votes.get(label, 0.0) + s
            best = max(sorted(votes), key=votes.__getitem__) if votes else self.index.charges[0]
            out.append(_answer(task, [best], "knn_vote"))
        return out


class ZeroShotModel(Baseline):
    """The task's default harness (zero-shot generation; or the one given with --harness / -H) on the default local
    model, through the agent.

    Runs the model on every instance it is given: on 2 CPU cores ~3-5 s a case, so the full 913-case test split
    takes about an hour; pass a limit to the CLI for a quick number.
    """

    name = "zero_shot_model"
    uses_harness = True

    def __init__(self, model: str = "hf", **model_options: Any):
        self.model_spec, self.model_options = model, model_options
        self.model = None
        self.harness = None  # set by the baselines runner; None: the task's default harness

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        from sia_bench.agent import Agent
        from sia_bench.models import build_model

        if self.model is None:
            self.model = build_model(self.model_spec, **self.model_options)
        harness = self.harness or task.default_harness()
        trajectories = Agent(task, self.model).run(harness, list(instances), "test")
        return [Answer(t.answer, t.parse_method, t.parse_error) for t in trajectories]


BASELINES: dict[str, Baseline] = {b.name: b for b in (Majority(), TfidfSVM(), KnnVote(), ZeroShotModel())}

# Published reference numbers on the LawBench-191 test split (913 cases), top-1 accuracy. The source names the paper
# and its results on LawBench-191; the table number was not available to us to check, so it is not given.
_SIA = ("SIA: Self Improving AI with Harness & Weight Updates, arXiv 2605.27276, LawBench-191 charge-prediction "
        "results (test split, 913 cases)")
ANCHORS: list[dict[str, Any]] = [
    {"name": "zero-shot LLM", "metric": "accuracy", "value": 0.07, "split": "test", "dataset": "lawbench191",
     "model": "gpt-oss-120b", "source": _SIA, "table": "not given",
     "note": "about 7%"},
    {"name": "Meta-Harness", "metric": "accuracy", "value": 0.450, "split": "test", "dataset": "lawbench191",
     "model": "gpt-oss-120b", "source": _SIA, "table": "not given",
     "note": "few-shot harness found by Meta-Harness"},
    {"name": "SIA harness-only (h)", "metric": "accuracy", "value": 0.500, "split": "test", "dataset": "lawbench191",
     "model": "gpt-oss-120b", "source": _SIA, "table": "not given", "note": ""},
    {"name": "SIA harness+weights (wh)", "metric": "accuracy", "value": 0.701, "split": "test",
     "dataset": "lawbench191", "model": "gpt-oss-120b", "source": _SIA, "table": "not given", "note": ""},
    {"name": "TF-IDF char 1-3 + LinearSVC", "metric": "accuracy", "value": 0.768, "split": "test",
     "dataset": "lawbench191", "model": None,
     "source": "measured for sia-bench with scikit-learn 1.9 (char 1-3-gram TF-IDF, sublinear tf, min_df=2, "
               "LinearSVC C=1) fitted on all 5,332 LawBench-191 train cases",
     "table": "none: measured here, not published",
     "note": "here the tfidf_svm baseline (train minus val, random_state=0) scores 76.3%; on all train cases 75.9%"},
]
