"""Property: the Feedback-Agent's answer validator, fed 10,000 generated answers (well-formed, malformed, hostile),
either returns a response or raises ValueError. An accepted answer is safe downstream: its record serialises as
UTF-8 JSON without NaN, and every patch it carries that applies gives a harness that saves and reloads to itself."""

from __future__ import annotations

import atexit
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sia_bench.harness import Harness, PatchError
from sia_bench.improvers.feedback import HarnessPatchAction, validate_response
from tests.fuzz import json_text, pick, text, value

ALLOWED = [["harness_patch", "weight_update", "stop"], ["harness_patch"], ["weight_update", "stop"]]
SHM = Path("/dev/shm")
FOLDER = Path(tempfile.mkdtemp(prefix="sia-feedback-fuzz-", dir=SHM if SHM.is_dir() else None))
atexit.register(shutil.rmtree, FOLDER, True)  # reused by every example, removed at exit


def harness() -> Harness:
    from sia_bench.loop import build_task

    return build_task("toy_arithmetic", {}).default_harness()


HARNESS = harness()


def action(rng: random.Random) -> object:
    kind = pick(rng, "harness_patch", "harness_patch", "weight_update", "stop", text(rng), None, 3)
    out: dict = {"type": kind} if rng.random() < 0.95 else {}
    if kind == "harness_patch" or rng.random() < 0.1:
        out.update(op=pick(rng, "append", "insert_after", "replace", "delete", "set_param", text(rng)),
                   target=pick(rng, "SKILL.md", "SKILL.md", text(rng), 4),
                   anchor=pick(rng, None, text(rng), HARNESS.skill.splitlines()[-1] if HARNESS.skill else "x"),
                   text=pick(rng, text(rng) + "y", text(rng, 60), None, 5),
                   param=pick(rng, *sorted(HARNESS.params), text(rng), None),
                   value=value(rng) if rng.random() < 0.6 else pick(rng, 0, 1, 2, 0.7, "first_integer", "true",
                                                                    float("nan"), 10**310, "\ud800"))
    if kind == "weight_update" or rng.random() < 0.1:
        out.update(algo=pick(rng, "grpo", "rft", "entropic", text(rng)), steps=value(rng), lr=value(rng),
                   group_size=pick(rng, 4, value(rng)), instance_ids=pick(rng, None, [text(rng)], value(rng)))
    for key in rng.sample(["rationale", text(rng, 3)], rng.randint(0, 2)):
        out[key] = value(rng)
    return out if rng.random() < 0.97 else value(rng)


def plausible(rng: random.Random) -> dict:
    """An answer a real model might give: right shape, sometimes wrong details."""
    actions = []
    for _ in range(rng.randint(1, 3)):
        kind = pick(rng, "harness_patch", "harness_patch", "weight_update", "stop")
        if kind == "harness_patch":
            actions.append(pick(rng, {"type": kind, "op": "set_param", "param": pick(rng, *sorted(HARNESS.params)),
                                      "value": pick(rng, 0, 1, 3, 0.5, 1.5, 100, "first_integer", "true", ["x"],
                                                    clean(rng))},
                                {"type": kind, "op": "append", "text": clean(rng) + pick(rng, "", "\r\n", "\x7f")},
                                {"type": kind, "op": pick(rng, "replace", "insert_after", "delete"),
                                 "anchor": pick(rng, *HARNESS.skill.splitlines()), "text": clean(rng)}))
        elif kind == "weight_update":
            actions.append({"type": kind, "algo": pick(rng, "grpo", "rft"), "steps": pick(rng, 1, 2, 500),
                            "lr": pick(rng, 1e-4, 5e-4, 0.5), "group_size": pick(rng, 2, 4, 1)})
        else:
            actions.append({"type": kind, "rationale": clean(rng)})
    return {"diagnosis": clean(rng), "actions": actions}


def clean(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefgh ABC 0123,.:-罪盗窃\"'") for _ in range(rng.randint(0, 20)))


def answer(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return pick(rng, json.dumps(plausible(rng), ensure_ascii=False), "Here: " + json.dumps(plausible(rng)))
    shape = rng.random()
    if shape < 0.05:  # nested far beyond the recursion limit
        return '{"actions": ' + "[" * rng.choice([50, 5000]) + "]" * rng.choice([0, 50, 5000]) + "}"
    if shape < 0.1:
        return text(rng, 80)
    data: object = {"diagnosis": value(rng), "actions": [action(rng) for _ in range(rng.randint(0, 4))]}
    if rng.random() < 0.1:
        data = {"actions": value(rng)}
    out = json_text(data, rng)
    if rng.random() < 0.05:
        out = out[: rng.randint(0, len(out))]  # cut at the token limit
    return pick(rng, out, f"Sure! ```json\n{out}\n```", out + " trailing {")


@settings(max_examples=10_000, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1))
def test_validator_accepts_safely_or_raises_value_error(seed):
    rng = random.Random(seed)
    try:
        response = validate_response(answer(rng), pick(rng, *ALLOWED), HARNESS, max_actions=rng.randint(1, 8))
    except ValueError:
        return
    record = response.model_dump(mode="json")
    json.dumps(record, allow_nan=False, ensure_ascii=False).encode("utf-8")  # what the run record will do
    for a in response.actions:
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in a.model_dump().values())
        if isinstance(a, HarnessPatchAction):
            try:
                patched = HARNESS.apply(a.to_patch())
            except PatchError:
                continue
            shutil.rmtree(FOLDER, ignore_errors=True)
            patched.save(FOLDER)
            assert Harness.load(FOLDER, HARNESS).digest == patched.digest


def test_the_inputs_that_crashed_before_are_value_errors():
    digits = "9" * 310
    for bad in ('{"actions":[{"type":"harness_patch","op":"set_param","param":"temperature","value":' + digits + "}]}",
                '{"actions":[{"type":"harness_patch","op":"set_param","param":"temperature","value":NaN}]}',
                '{"actions":[{"type":"harness_patch","op":"set_param","param":"temperature","value":"nan"}]}',
                '{"actions":' + "[" * 100_000 + "]" * 100_000 + "}",
                '{"actions":[{"type":"stop","rationale":"\\ud800"}]}',
                '{"actions":[{"type":"weight_update","lr":' + "1" * 5000 + "}]}"):
        try:
            validate_response(bad, ["harness_patch", "weight_update", "stop"], HARNESS)
        except ValueError:
            continue
        raise AssertionError(f"accepted: {bad[:80]}")
