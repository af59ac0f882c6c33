import json
from pathlib import Path

import pytest

from sia_bench.agent import Trajectory
from sia_bench.improvers.feedback import (FeedbackAgent, extract_json, render_feedback_prompt, validate_response)
from sia_bench.loop import Loop, RunConfig, build_task
from sia_bench.records import Budget, GenerationRecord, Ledger
from tests.doubles import ScriptedModel, adder

SNAPSHOT = Path(__file__).parent / "snapshots" / "feedback_failures.v1.txt"
GOOD = json.dumps({"diagnosis": "hedged answers", "actions": [
    {"type": "harness_patch", "op": "set_param", "param": "parser", "value": "first_integer", "rationale": "r"}]})


def test_extract_json_from_chatty_text():
    assert extract_json('Sure! ```json\n{"a": {"b": 1}}\n``` done') == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("no braces")


def test_validation_errors_name_the_problem(toy_task):
    h = toy_task.default_harness()
    with pytest.raises(ValueError, match="not allowed"):
        validate_response('{"actions": [{"type": "stop"}]}', ["harness_patch"], h)
    with pytest.raises(ValueError, match="schema"):
        validate_response('{"actions": [{"type": "harness_patch", "op": "explode"}]}', ["harness_patch"], h)
    with pytest.raises(ValueError, match="no patch applies"):
        validate_response('{"actions": [{"type": "harness_patch", "op": "set_param", "param": "parser", '
                          '"value": "regex"}]}', ["harness_patch"], h)
    assert validate_response(GOOD, ["harness_patch"], h).actions[0].value == "first_integer"


def test_malformed_proposal_is_retried_with_the_error(toy_task):
    model = ScriptedModel(replies=["I think you should try harder.", GOOD])
    result = FeedbackAgent(model, max_retries=2).ask("prompt", ["harness_patch"], toy_task.default_harness(),
                                                     Ledger(), seed=0)
    assert result.ok and result.attempts == 2
    assert "no JSON object" in model.seen[1][-1]["content"]


def test_failed_proposal_is_recorded_and_the_run_goes_on(tmp_path):
    config = RunConfig(task="toy_arithmetic", improver="h", seed=1, budget=Budget(generations=1))
    feedback = ScriptedModel(replies=["nonsense"])
    record = Loop(config, tmp_path / "r", model=ScriptedModel(fn=adder()), feedback_model=feedback).run()
    gen = record.generations[1]
    assert record.status == "finished"
    assert any(a["type"] == "failed_proposal" and a["attempts"] == 3 for a in gen.actions)
    assert gen.ledger.feedback_calls == 3 and record.improver["label"] == "h[llm:scripted]"


def traj(i, score):
    return Trajectory(f"train-{i}", "train", [{"role": "user", "content": f"What is {i} + 1?"}], f"{i} or maybe {i+2}",
                      i, "last_integer", None, score, f"answered {i+2}, expected {i+1}" if not score else "correct")


def test_rendered_prompt_snapshot(toy_task):
    history = [GenerationRecord(index=0, val={"accuracy": 0.25}, accepted=True),
               GenerationRecord(index=1, val={"accuracy": 0.2}, accepted=False, levers=["harness"],
                                actions=[{"type": "harness_patch", "op": "set_param", "param": "few_shot", "value": 2}],
                                candidate={"harness_digest": "x", "harness_dir": "gen_001/harness"})]
    text = render_feedback_prompt(task=toy_task, harness=toy_task.default_harness(),
                                  trajectories=[traj(1, 0.0), traj(2, 0.0)], n_total=4, focus="failures",
                                  history=history, ledger=Ledger(), budget=Budget(generations=3),
                                  allowed=["harness_patch", "weight_update", "stop"], max_actions=3)
    if not SNAPSHOT.exists():
        SNAPSHOT.write_text(text)
        pytest.fail(f"snapshot written to {SNAPSHOT}; review it, commit it, and run again")
    assert text == SNAPSHOT.read_text(), "the feedback prompt changed: bump the template version or the snapshot"
    assert "gen 1: set few_shot = 2" in text  # the rejected buffer reaches the prompt


def test_rejected_edit_reaches_the_next_reflection_and_no_test_label_leaks(tmp_path):
    task = build_task("toy_arithmetic", {})
    bad = json.dumps({"diagnosis": "d", "actions": [
        {"type": "harness_patch", "op": "append", "text": "Think in Roman numerals.", "rationale": "r"}]})
    feedback = ScriptedModel(replies=[bad])
    config = RunConfig(task="toy_arithmetic", improver="h", seed=2, budget=Budget(generations=2))
    Loop(config, tmp_path / "r", task=task, model=ScriptedModel(fn=adder()), feedback_model=feedback).run()
    prompts = [m[-1]["content"] for m in feedback.seen]
    later = [p for p in prompts if "## Rejected changes" in p and "Roman numerals" in p.split("## Rejected changes")[1]]
    assert later, "the rejected edit of generation 1 must be shown in generation 2's prompts"
    test_questions = [f"What is {i.input['a']} + {i.input['b']}?" for i in task.split("test")]
    val_questions = [f"What is {i.input['a']} + {i.input['b']}?" for i in task.split("val")]
    for p in prompts:
        assert not any(q in p for q in test_questions + val_questions)


def _boundary_instance(schema, current=None):
    """One instance of a branch of the decoding schema, with values picked at its edges."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return next((v for v in schema["enum"] if v != current), schema["enum"][0])
    if schema.get("type") == "string":
        return "x" * max(schema.get("minLength", 0), 1)
    if schema.get("type") in ("integer", "number"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 10)
        return low if low != current else high
    if schema.get("type") == "array":
        return [_boundary_instance(schema["items"])]
    if schema.get("type") == "boolean":
        return not current
    raise AssertionError(schema)


def test_every_harness_edit_the_decoding_schema_admits_applies(toy_task):
    from sia_bench.improvers.feedback import SCHEMA_EXAMPLES, HarnessPatchAction, decoding_schema

    jsonschema = pytest.importorskip("jsonschema")
    harness = toy_task.default_harness()
    schema = json.loads(decoding_schema(["harness_patch", "stop"], harness, max_actions=3))
    branches = schema["properties"]["actions"]["items"]["anyOf"]
    assert {b["properties"]["type"]["const"] for b in branches} == {"harness_patch", "stop"}
    assert schema["properties"]["actions"]["maxItems"] == 3
    assert list(schema["properties"]) == ["diagnosis", "actions"]  # generation order: diagnose first
    ops = set()
    for branch in branches[:-1]:
        props = branch["properties"]
        param = props.get("param", {}).get("const")
        action = {k: _boundary_instance(v, harness.params.get(param) if k == "value" else None)
                  for k, v in props.items()}
        jsonschema.validate({"diagnosis": "d", "actions": [action]}, schema)
        harness.apply(HarnessPatchAction.model_validate(action).to_patch())  # raises PatchError if it cannot apply
        ops.add(action["op"])
    assert ops == {"append", "insert_after", "replace", "delete", "set_param"}
    assert {b["properties"]["param"]["const"] for b in branches if "param" in b["properties"]} == set(harness.specs)
    with pytest.raises(jsonschema.ValidationError):  # an anchor that is not in SKILL.md
        jsonschema.validate({"diagnosis": "d", "actions": [{"type": "harness_patch", "op": "delete",
                                                            "target": "SKILL.md", "anchor": "not there",
                                                            "rationale": "r"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):  # weight updates are not allowed in this call
        jsonschema.validate({"diagnosis": "d", "actions": SCHEMA_EXAMPLES["weight_update"]}, schema)
    full = json.loads(decoding_schema(["harness_patch", "weight_update", "stop"], harness))
    jsonschema.validate({"diagnosis": "d", "actions": SCHEMA_EXAMPLES["weight_update"] + SCHEMA_EXAMPLES["stop"]}, full)


def test_feedback_agent_asks_the_model_for_structured_output(toy_task):
    model = ScriptedModel(replies=['{"diagnosis": "d", "actions": [{"type": "stop", "rationale": "r"}]}'])
    seen = []
    original = model.generate
    model.generate = lambda batch, params: seen.append(params) or original(batch, params)
    result = FeedbackAgent(model).ask("p", ["stop"], toy_task.default_harness(), Ledger(), seed=0)
    assert result.ok and json.loads(seen[0].json_schema)["required"] == ["diagnosis", "actions"]
    FeedbackAgent(model, structured=False).ask("p", ["stop"], toy_task.default_harness(), Ledger(), seed=0)
    assert seen[-1].json_schema is None


def test_a_cut_off_answer_is_named_as_such_and_failed_answers_are_kept(tmp_path):
    cut = '{"diagnosis": "d", "actions": [{"type": "harness_patch", "op": "append", "text": "never ends'
    with pytest.raises(ValueError, match="cut off"):
        validate_response(cut + ' {"type": "stop"}', ["stop"])  # an inner object must not pass for the answer
    config = RunConfig(task="toy_arithmetic", improver="h", seed=0, budget=Budget(generations=1))
    record = Loop(config, tmp_path / "run", model=ScriptedModel(fn=adder()),
                  feedback_model=ScriptedModel(replies=[cut])).run()
    [failed] = [a for a in record.generations[1].actions if a["type"] == "failed_proposal"]
    assert failed["raw"] and failed["raw"][0].startswith(cut[:40]) and "cut off" in failed["errors"][0]
