"""Map a model's free text to charge names of the label set: exact, then normalised, then closest by edit distance.

The method that matched is returned so that trajectories show how much the parser, not the model, did. Parsing is
bounded: only the first :data:`MAX_ANSWER_CHARS` characters are read, and edit distances are only computed where they
can still lead to a match, so a rambling 10,000-character answer costs milliseconds.
"""

from __future__ import annotations

import re

from tasks.legal_charges.data import strip_brackets

_PREFIX = re.compile(r"^\s*(?:\[?罪名\]?|charges?|accusation|答案|answer|预测罪名|final answer)\s*[:：]?\s*", re.I)
_SUFFIX = re.compile(r"(?:<eoa>|</s>|<\|im_end\|>).*$", re.S)
_SPLIT = re.compile(r"[;；,，/|\n]+|\s+and\s+")  # not 、: it occurs inside charge names
_PUNCT = re.compile(r"[\s\"'“”‘’「」《》<>()（）.。!！?？*`#:：]+")
MAX_ANSWER_CHARS = 4000  # charge names are short; the rest of a longer answer is never needed


def normalise(name: str) -> str:
    """Canonical comparison form: no brackets, punctuation, spaces, or trailing 罪 (被告人犯盗窃罪 -> 盗窃)."""
    text = _PUNCT.sub("", strip_brackets(name))
    return text[:-1] if text.endswith("罪") and len(text) > 1 else text


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance (two rows); stops early once every entry exceeds ``limit``."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if limit is not None and min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


class ChargeParser:
    """Parser over a fixed label set; ``mode`` is ``exact`` (exact or normalised match only) or ``fuzzy``."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.exact = set(self.labels)
        self.by_norm: dict[str, str] = {}
        for label in self.labels:
            self.by_norm.setdefault(normalise(label), label)
        # longest first, so 信用卡诈骗 is found before 诈骗 when scanning free text
        self.by_length = sorted(self.by_norm, key=len, reverse=True)
        # the largest edit distance any label accepts: beyond it no answer can match by edit distance
        self.max_distance = max((max(1, len(k) // 2) for k in self.by_norm), default=1)

    def clean(self, text: str) -> str:
        text = _SUFFIX.sub("", (text or "")[:MAX_ANSWER_CHARS]).strip()
        first = next((line for line in text.splitlines() if line.strip()), "")
        return _PREFIX.sub("", first).strip()

    def match_one(self, piece: str, mode: str) -> tuple[str | None, str]:
        piece = piece.strip()
        if not piece:
            return None, "empty"
        if piece in self.exact:
            return piece, "exact"
        norm = normalise(piece)
        if norm in self.by_norm:
            return self.by_norm[norm], "normalised"
        if mode != "fuzzy" or not norm:
            return None, "no_match"
        for key in self.by_length:  # a label named inside a longer phrase: 被告人构成故意伤害罪
            if len(key) >= 2 and key in norm:
                return self.by_norm[key], "contained"
        # The closest label (first on ties), accepted within half its length. Distances above the largest accepted
        # one cannot matter, so they are neither computed in full nor, when the lengths alone rule them out, at all.
        best, best_d = None, None
        for key in self.by_norm:
            if abs(len(norm) - len(key)) > self.max_distance:
                continue
            d = edit_distance(norm, key, self.max_distance if best_d is None else min(best_d, self.max_distance))
            if d <= self.max_distance and (best_d is None or d < best_d):
                best, best_d = key, d
        if best is None or best_d > max(1, len(best) // 2):
            return None, "no_match"
        return self.by_norm[best], "edit_distance"

    def parse(self, text: str, mode: str = "fuzzy", multi: bool = False) -> tuple[list[str], str, str | None]:
        """Charges found, the weakest method used, and an error (None on success)."""
        if mode not in {"exact", "fuzzy"}:
            raise ValueError(f"unknown parser {mode!r}; use exact or fuzzy")
        line = self.clean(text)
        if not line:
            return [], "empty", "the answer is empty; reply with a charge name only"
        pieces = _SPLIT.split(line) if multi else [line]
        if not multi and mode == "fuzzy":
            pieces = [line] + [p for p in _SPLIT.split(line) if p != line]
        found: list[str] = []
        methods: list[str] = []
        rank = ["exact", "normalised", "contained", "edit_distance"]
        for piece in pieces:
            label, method = self.match_one(piece, mode)
            if label is not None and label not in found:
                found.append(label)
                methods.append(method)
                if not multi:
                    break
        if not found:
            return [], "no_match", (f"{line[:40]!r} is not a charge name of the label set; "
                                   f"answer with one name from the list")
        return found, max(methods, key=rank.index), None
