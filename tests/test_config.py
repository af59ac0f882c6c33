"""The configuration layer: one k=v parser, typing against each schema, canonical settings, one-line budget fields."""

from __future__ import annotations

import pytest

from sia_bench.config import (Budget, ConfigError, HarnessStart, RunConfig, auto, coerce, option_hints, parse_budget,
                              parse_pairs, resolve_model_options, resolve_run)


def test_pairs_are_text_until_typed():
    assert parse_pairs(["a=1,b=x y", "c=", "tools=a,b"], "-T") == {"a": "1", "b": "x y", "c": "", "tools": "a,b"}
    for bad in ("novalue", "=3", " =x"):
        with pytest.raises(ConfigError, match="-T takes key=value"):
            parse_pairs([bad], "-T")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        parse_pairs(["path=\udcff"], "-T")


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("1e-5", "1e-5"), ("007", "007"), ("true", True),
                                         ("None", None), ("nan", "nan"), ("inf", "inf"), ("x", "x")])
def test_untyped_values_become_numbers_only_when_exactly_that_number(text, value):
    assert auto(text) == value and type(auto(text)) is type(value)


def test_coerce_follows_the_declared_type():
    assert coerce("-I", "k", "4", int) == 4
    assert coerce("-I", "lr", "1e-5", float) == 1e-5
    assert coerce("-I", "t", "none", float | None) is None
    assert coerce("-I", "mode", "b", __import__("typing").Literal["a", "b"]) == "b"
    assert coerce("-I", "names", "x,y", list[str]) == ["x", "y"]
    for value, hint, words in (("abc", int, "-I k=abc: parameter 'k' takes int"), ("nan", float, "finite"),
                               ("1e999", float, "finite"), ("c", __import__("typing").Literal["a", "b"], "one of"),
                               ("maybe", bool, "true/false"), ("9" * 400, int, "400-character")):
        with pytest.raises(ConfigError, match=words):
            coerce("-I", "k", value, hint)


def test_a_budget_field_is_one_line():
    """``compute_flops`` was added to Budget as one line; parsing, help text and validation followed by themselves."""
    assert "compute_flops (" in Budget.help()
    assert parse_budget(["compute_flops=1e12,patience=2"], 3) == Budget(generations=3, compute_flops=1e12, patience=2)
    with pytest.raises(ConfigError, match="--budget compute_flops=-1.0: Input should be greater than 0"):
        parse_budget(["compute_flops=-1"])
    with pytest.raises(ConfigError, match="no such budget field. Did you mean 'patience'"):
        parse_budget(["patiense=2"])


def test_resolved_settings_are_typed_and_canonical():
    given = RunConfig(task="toy_arithmetic", improver="h", task_options={"max_operand": "20", "data_seed": "5"},
                      improver_options={"minibatch": "16", "edit_budget": "2"}, model="tiny",
                      model_options={"layers": "2", "hidden": "32"})
    resolved = resolve_run(given)
    assert resolved.task_options == {"data_seed": 5}  # max_operand=20 is the default: dropped
    assert resolved.improver_options == {"edit_budget": 2} and resolved.model_options == {"hidden": 32}
    assert resolve_run(resolved) == resolved  # idempotent: a stored configuration compares equal on resume


def test_model_options_are_the_factories_settable_parameters():
    hf = option_hints(__import__("sia_bench.models.hf", fromlist=["HFModel"]).HFModel)
    assert {"model", "path", "device", "batch_size", "threads"} <= set(hf) and not {"hf", "tokenizer"} & set(hf)
    assert resolve_model_options("hf:smollm2-135m", {"threads": "1"}, "-M") == {"threads": 1}
    with pytest.raises(ConfigError, match="-M client: model backend 'openai' has no such option"):
        resolve_model_options("openai", {"client": "x"}, "-M")


def test_harness_start_describes_itself():
    assert HarnessStart().is_default and HarnessStart().describe() == ""
    assert HarnessStart(params={"b": True, "a": 1}).describe() == "a=1, b=true"
    assert HarnessStart(dir="/x/tools-on", params={"k": 2}).describe() == "tools-on (k=2)"
