"""Charge-prediction metrics: top-1 accuracy and macro-F1 (single label); example set F1 and the CAIL2018 score.

The CAIL2018 score follows the official judger: per-charge TP/FP/FN over the whole label set, a charge with no TP,
FP or FN counts F1 = 1, and the score is (micro-F1 + macro-F1) / 2 (reported here on a 0-1 scale, not x100).
"""

from __future__ import annotations

from typing import Iterable, Sequence


def set_f1(pred: Iterable[str], gold: Iterable[str]) -> float:
    """F1 between two label sets for one example (LawBench 3-3's metric); empty prediction scores 0."""
    p, g = set(pred), set(gold)
    tp = len(p & g)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(p), tp / len(g)
    return 2 * precision * recall / (precision + recall)


def _f1(tp: int, fp: int, fn: int, empty: float) -> float:
    if tp == 0:
        return empty if fp == 0 and fn == 0 else 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def per_label_counts(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], labels: Iterable[str]
                     ) -> dict[str, list[int]]:
    counts = {label: [0, 0, 0] for label in labels}  # tp, fp, fn
    for pred, gold in zip(preds, golds):
        p, g = set(pred), set(gold)
        for label in p | g:
            c = counts.setdefault(label, [0, 0, 0])
            c[0 if label in p and label in g else 1 if label in p else 2] += 1
    return counts


def macro_f1(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> float:
    """Macro-F1 over the charges that occur in gold or predictions (sklearn's convention)."""
    counts = per_label_counts(preds, golds, [])
    if not counts:
        return float("nan")
    return sum(_f1(*c, empty=0.0) for c in counts.values()) / len(counts)


def cail_score(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], labels: Sequence[str]
               ) -> dict[str, float]:
    """Micro-F1, macro-F1 over ``labels`` (judger convention) and their mean, the CAIL2018 charge score."""
    counts = per_label_counts(preds, golds, labels)
    macro = sum(_f1(*counts[label], empty=1.0) for label in labels) / len(labels) if labels else float("nan")
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    micro = _f1(tp, fp, fn, empty=1.0)
    return {"micro_f1": micro, "macro_f1_cail": macro, "cail_score": (micro + macro) / 2}
