"""Parser matching methods and the metrics on hand-computed examples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.legal_charges.metrics import cail_score, macro_f1, set_f1
from tasks.legal_charges.parser import ChargeParser, edit_distance, normalise

LABELS = ["盗窃", "诈骗", "信用卡诈骗", "故意伤害", "[走私、贩卖、运输、制造]毒品", "[伪造、变造]居民身份证"]
PARSER = ChargeParser(LABELS)


@pytest.mark.parametrize("text,value,method", [
    ("盗窃", "盗窃", "exact"),
    ("罪名：盗窃罪", "盗窃", "normalised"),
    ("[罪名]诈骗<eoa>", "诈骗", "exact"),  # LawBench's own answer wrapper is stripped first
    ("走私、贩卖、运输、制造毒品", "[走私、贩卖、运输、制造]毒品", "normalised"),
    ("被告人构成信用卡诈骗罪，应予处罚", "信用卡诈骗", "contained"),
    ("故意伤书", "故意伤害", "edit_distance"),
    ("伪造居民身份证", "[伪造、变造]居民身份证", "edit_distance"),
])
def test_fuzzy_parser_methods(text, value, method):
    found, got_method, error = ChargeParser(LABELS).parse(text, "fuzzy")
    assert error is None and found == [value] and got_method == method


def test_exact_parser_refuses_what_fuzzy_repairs():
    parser = ChargeParser(LABELS)
    found, method, error = parser.parse("故意伤书", "exact")
    assert found == [] and error and "not a charge name" in error
    assert parser.parse("", "fuzzy")[2].startswith("the answer is empty")
    assert parser.parse("hello world, the weather is nice", "fuzzy")[0] == []
    with pytest.raises(ValueError):
        parser.parse("盗窃", "bogus")


def test_multi_label_parse_keeps_names_with_commas():
    found, method, error = ChargeParser(LABELS).parse("盗窃;走私、贩卖、运输、制造毒品；盗窃", "fuzzy", multi=True)
    assert error is None and found == ["盗窃", "[走私、贩卖、运输、制造]毒品"] and method == "normalised"


def test_normalise_and_edit_distance():
    assert normalise(" [伪造、变造]居民身份证罪。") == "伪造、变造居民身份证"
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("abcdef", "uvwxyz", limit=2) == 3


def test_set_f1_hand_computed():
    assert set_f1(["a"], ["a"]) == 1.0
    assert set_f1(["a", "b"], ["a"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # p=1/2, r=1 -> 2/3
    assert set_f1(["a", "c"], ["a", "b"]) == pytest.approx(0.5)
    assert set_f1([], ["a"]) == 0.0


def test_macro_f1_hand_computed():
    # a: tp1 fp1 fn0 -> 2/3; b: tp1 fp0 fn1 -> 2/3; c: tp0 fp0 fn... (gold c predicted a counted in a's fp)
    preds, golds = [["a"], ["a"], ["b"], []], [["a"], ["b"], ["b"], ["c"]]
    # a: tp1 fp1 fn0 -> 2/3 ; b: tp1 fp0 fn1 -> 2/3 ; c: tp0 fn1 -> 0
    assert macro_f1(preds, golds) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert math.isnan(macro_f1([], []))


def test_cail_score_follows_the_official_judger():
    labels = ["a", "b", "c", "d"]
    preds, golds = [["a", "b"], ["c"]], [["a"], ["c", "d"]]
    # a: tp1 -> 1; b: fp1 -> 0; c: tp1 -> 1; d: fn1 -> 0  => macro 0.5 (d untouched would count 1)
    # micro: tp2 fp1 fn1 -> p=2/3 r=2/3 f=2/3
    out = cail_score(preds, golds, labels)
    assert out["macro_f1_cail"] == pytest.approx(0.5)
    assert out["micro_f1"] == pytest.approx(2 / 3)
    assert out["cail_score"] == pytest.approx((0.5 + 2 / 3) / 2)
    five = cail_score(preds, golds, labels + ["e"])  # an untouched charge scores F1 = 1 in the judger
    assert five["macro_f1_cail"] == pytest.approx(3 / 5)


# -- robustness: any text parses (or fails to) quickly and without an exception ---------------------------------------
def _answer(rng) -> str:
    from tests.fuzz import AWKWARD, pick, text

    parts = [pick(rng, *LABELS, text(rng), "罪名：", "答案:", "<eoa>", "被告人构成", "罪", "；", ",", "\n", " and ",
                  "".join(rng.choice(AWKWARD + LABELS) for _ in range(rng.randint(0, 30))))
             for _ in range(rng.randint(0, 6))]
    return "".join(parts) * pick(rng, 1, 1, 1, 50)


@settings(max_examples=10_000, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1))
def test_any_answer_parses_to_labels_or_an_error(seed):
    import random

    rng = random.Random(seed)
    text = _answer(rng)
    mode, multi = rng.choice(["exact", "fuzzy"]), rng.random() < 0.3
    found, method, error = PARSER.parse(text, mode, multi=multi)
    assert set(found) <= set(LABELS) and isinstance(method, str)
    assert (error is None) == bool(found) and (multi or len(found) <= 1)


def test_a_long_answer_is_parsed_in_milliseconds():
    import time

    for text in ("盗" * 10_000, "x" * 10_000, "被告人" + "诈骗盗窃" * 2_500, ("a" * 10_000 + "\n") * 20):
        start = time.perf_counter()
        PARSER.parse(text, "fuzzy")
        PARSER.parse(text, "fuzzy", multi=True)
        assert time.perf_counter() - start < 0.5, text[:20]
