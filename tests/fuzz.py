"""Cheap generators for the property tests: hypothesis draws one seed, and a seeded ``random.Random`` builds the case
from pools of values that have broken things before (so 10,000 cases run in seconds, and a failure names its seed)."""

from __future__ import annotations

import json
import random
from typing import Any

# Characters that broke files, parsers or records: controls, DEL, CR, quotes, backslashes, TOML and JSON syntax,
# line separators, non-BMP characters, a lone surrogate, Chinese text.
AWKWARD = list("\r\n\t\x00\x1f\x7f\"\\'[]=#{}:,") + ["\u2028", "\U0001f600", "\ud800", "罪", "盗窃", "诈骗", "---",
                                                   "\r\n", "name:", "é"]
PLAIN = list("abcdefghij ABC 0123456789.-_")
NUMBERS = [0, 1, -1, 2, 3, 8, 9, 32, 0.5, -0.0, 1e-320, 1e300, 2**63, -2**63, 10**310, 3.7, float("nan"),
           float("inf"), True, False]
STRINGS = ["a", "b", "true", "off", "3", "1e400", "nan", "inf", "-0.0", "0x10", "", " ", "rank", "generate",
           "first_integer", "last_integer", "SKILL.md", "Answer briefly.", "Use digits.", "# Demo", "name: demo"]


def text(rng: random.Random, max_len: int = 12) -> str:
    pool = AWKWARD if rng.random() < 0.5 else PLAIN
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, max_len)))


def scalar(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(NUMBERS)
    if kind < 0.6:
        return rng.choice(STRINGS)
    if kind < 0.9:
        return text(rng)
    return None


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth < 2 and kind < 0.1:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 2 and kind < 0.15:
        return {text(rng, 4): value(rng, depth + 1) for _ in range(rng.randint(0, 2))}
    return scalar(rng)


def pick(rng: random.Random, *options: Any) -> Any:
    return rng.choice(options)


def json_text(data: Any, rng: random.Random) -> str:
    """``data`` as JSON, sometimes with NaN/Infinity literals or a number far too long to convert."""
    out = json.dumps(data, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if rng.random() < 0.05:
        out = out.replace("0", "9" * rng.choice([310, 5000]), 1)
    return out
