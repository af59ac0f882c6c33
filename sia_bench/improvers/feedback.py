"""The Feedback-Agent: reads scored train trajectories, history and the ledger; answers with typed actions.

The answer is one JSON object: a short ``diagnosis`` and ``actions`` of type ``harness_patch``, ``weight_update`` or
``stop`` (which types are allowed depends on the improver). Decoding is constrained to a JSON schema narrowed to the
call (:func:`decoding_schema`; xgrammar on local models, ``response_format`` on OpenAI-compatible servers), so even a
135M model answers in form. Output that does not parse or fails validation is re-asked with the validation error;
after the retries it becomes a recorded failed proposal and the run goes on.
Prompts are versioned template files under ``sia_bench/prompts``.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia_bench.agent import Trajectory
from sia_bench.harness import Harness, Patch, PatchError
from sia_bench.models.base import Model, SamplingParams
from sia_bench.records import GenerationRecord, Ledger

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
FEEDBACK_TEMPLATE = "feedback.v1.md"
EXCERPT = 360
MAX_ANSWER_CHARS = 60_000  # far above what the token budget lets a model write; longer answers are refused unread
STRICT = ConfigDict(allow_inf_nan=False)


class HarnessPatchAction(BaseModel):
    model_config = STRICT

    type: Literal["harness_patch"] = "harness_patch"
    op: Literal["append", "insert_after", "replace", "delete", "set_param"]
    target: str = "SKILL.md"
    anchor: str | None = None
    text: str | None = None
    param: str | None = None
    value: Any = None
    rationale: str = ""

    def to_patch(self) -> Patch:
        return Patch(self.op, self.target, self.anchor, self.text, self.param, self.value, self.rationale)


class WeightUpdateAction(BaseModel):
    model_config = STRICT

    type: Literal["weight_update"] = "weight_update"
    algo: Literal["grpo", "rft", "entropic"] = "grpo"
    steps: int = Field(2, ge=1, le=200)
    lr: float = Field(5e-4, gt=0, le=1e-2)
    group_size: int = Field(4, ge=2, le=64)
    prompts_per_step: int = Field(4, ge=1, le=256)
    instance_ids: list[str] | None = None
    rationale: str = ""


class StopAction(BaseModel):
    model_config = STRICT

    type: Literal["stop"] = "stop"
    rationale: str = ""


Action = Annotated[Union[HarnessPatchAction, WeightUpdateAction, StopAction], Field(discriminator="type")]


class FeedbackResponse(BaseModel):
    model_config = STRICT

    diagnosis: str = ""
    actions: list[Action] = Field(default_factory=list)


SCHEMA_EXAMPLES = {
    "harness_patch": [{"type": "harness_patch", "op": "set_param", "param": "<name>", "value": "<value>",
                       "rationale": "why"},
                      {"type": "harness_patch", "op": "append", "text": "<new SKILL.md section>", "rationale": "why"}],
    "weight_update": [{"type": "weight_update", "algo": "grpo", "steps": 2, "lr": 0.0005, "group_size": 4,
                       "instance_ids": None, "rationale": "why train the weights now"}],
    "stop": [{"type": "stop", "rationale": "why nothing more will help"}],
}


# Caps on what constrained decoding may write, so a rambling model's answer ends inside the Feedback-Agent's token
# budget (1,536): at most ~1,500 characters of free text, ~300 tokens in English, ~2,600 if all of it were Chinese
# (1.74 tokens a character with SmolLM2's tokenizer). An answer cut at the limit is re-asked with that reason.
DIAGNOSIS_CAP, RATIONALE_CAP, TEXT_CAP, MAX_DECODED_ACTIONS = 240, 120, 300, 3


def _text(n: int, min_length: int = 0) -> dict[str, Any]:
    return {"type": "string", "maxLength": n, **({"minLength": min_length} if min_length else {})}


def _value_schema(spec: Any, current: Any) -> dict[str, Any]:
    """The values a ``set_param`` may set: the spec's choices (minus the current value, which would change nothing),
    its type and range."""
    if spec.type is list:
        items = {"enum": list(spec.choices)} if spec.choices else _text(60, 1)
        return {"type": "array", "items": items, "maxItems": len(spec.choices) if spec.choices else 8}
    if spec.choices:
        return {"enum": [c for c in spec.choices if c != current] or list(spec.choices)}
    if spec.type is bool:
        return {"enum": [not current]} if isinstance(current, bool) else {"type": "boolean"}
    bounds = {k: v for k, v in (("minimum", spec.min), ("maximum", spec.max)) if v is not None}
    if spec.type is int:
        return {"type": "integer", **{k: int(v) for k, v in bounds.items()}}
    if spec.type is float:
        return {"type": "number", **bounds}
    return _text(120, 1)


def _anchors(text: str, limit: int = 60) -> list[str]:
    """Lines (at most 200 characters of each) that occur exactly once in ``text``: anchors a patch can use. The front
    matter of a SKILL.md is left out: editing it can only break the harness."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines = lines[end + 1:]
    out: list[str] = []
    for line in lines:
        line = line.strip()[:200]
        if line and line not in out and text.count(line) == 1:
            out.append(line)
    return out[:limit]


def _patch_variants(harness: Harness) -> list[dict[str, Any]]:
    """One schema per edit shape, so that whatever the schema admits is an edit this harness can take: anchors are
    lines that exist (once) in their component, texts are non-empty, parameters exist and get a value of their type."""
    def variant(op: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"type": {"const": "harness_patch"}, "op": {"const": op},
                                                 **properties, "rationale": _text(RATIONALE_CAP)},
                "required": ["type", "op", *properties, "rationale"], "additionalProperties": False}

    variants = []
    for name, text in sorted(harness.components.items()):
        target = {"const": name}
        variants.append(variant("append", {"target": target, "text": _text(TEXT_CAP, 1)}))
        anchors = _anchors(text)
        if anchors:
            variants += [variant("insert_after", {"target": target, "anchor": {"enum": anchors},
                                                  "text": _text(TEXT_CAP, 1)}),
                         variant("replace", {"target": target, "anchor": {"enum": anchors},
                                             "text": _text(TEXT_CAP, 1)}),
                         variant("delete", {"target": target, "anchor": {"enum": anchors}})]
    for name, spec in sorted(harness.specs.items()):
        variants.append(variant("set_param", {"param": {"const": name},
                                              "value": _value_schema(spec, harness.params.get(name))}))
    return variants


def decoding_schema(allowed: Sequence[str], harness: Harness, max_actions: int = 8) -> str:
    """The JSON schema handed to constrained decoding: the response schema narrowed to this call (the allowed action
    types; harness edits this harness can take, see :func:`_patch_variants`) with length caps, so that even a small
    model's answer parses, applies, and ends within its token budget. Validation still runs on every answer."""
    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "null"}]}

    weight_update = {"type": "object", "properties": {
        "type": {"const": "weight_update"}, "algo": {"enum": ["grpo", "rft", "entropic"]},
        "steps": {"type": "integer", "minimum": 1, "maximum": 200},
        "lr": {"type": "number", "minimum": 1e-6, "maximum": 1e-2},
        "group_size": {"type": "integer", "minimum": 2, "maximum": 64},
        "prompts_per_step": {"type": "integer", "minimum": 1, "maximum": 256},
        "instance_ids": nullable({"type": "array", "items": _text(80), "maxItems": 32}),
        "rationale": _text(RATIONALE_CAP)},
        "required": ["type", "algo", "steps", "lr", "group_size", "rationale"], "additionalProperties": False}
    stop = {"type": "object", "properties": {"type": {"const": "stop"}, "rationale": _text(RATIONALE_CAP)},
            "required": ["type", "rationale"], "additionalProperties": False}
    kinds = {"harness_patch": _patch_variants(harness), "weight_update": [weight_update], "stop": [stop]}
    schema = {"type": "object", "properties": {
        "diagnosis": _text(DIAGNOSIS_CAP),
        "actions": {"type": "array", "items": {"anyOf": [v for k in allowed for v in kinds[k]]}, "minItems": 1,
                    "maxItems": min(max_actions, MAX_DECODED_ACTIONS)}},
        "required": ["diagnosis", "actions"], "additionalProperties": False}
    return json.dumps(schema)


@dataclass
class FeedbackResult:
    diagnosis: str
    actions: list[HarnessPatchAction | WeightUpdateAction | StopAction]
    ok: bool
    attempts: int
    errors: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows here; use a finite number")


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in ``text`` (fenced or bare); raises ValueError with a reason, and nothing else, for
    any text: too deep, NaN/Infinity, numbers too long to convert, lone surrogates."""
    if len(text) > MAX_ANSWER_CHARS:
        raise ValueError(f"the answer is {len(text):,} characters; answer with one short JSON object")
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except RecursionError:
            raise ValueError("the JSON is nested too deeply; answer with one flat object") from None
        except json.JSONDecodeError:
            obj = None
        except ValueError as err:  # NaN/Infinity, or a number of more than 4,300 digits
            raise ValueError(f"the JSON holds an unusable value: {str(err)[:120]}") from None
        if isinstance(obj, dict):
            _check_values(obj)
            return obj
        start = text.find("{", start + 1)
    if "{" in text:
        raise ValueError("the JSON object is incomplete (was the answer cut off at the token limit? keep texts short)")
    raise ValueError("no JSON object found in the answer")


def _check_values(obj: Any) -> None:
    """Every string must be writable as UTF-8 (no lone surrogates) and every float finite; iterative, so depth
    cannot exhaust the stack."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the JSON holds a string that is not valid UTF-8 (a lone surrogate escape)") from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("the JSON holds a number that is not finite")


def validate_response(text: str, allowed: Sequence[str], harness: Harness | None = None,
                      max_actions: int = 8) -> FeedbackResponse:
    """Parse and validate one answer; raises ValueError whose message is fed back to the model."""
    data = extract_json(text)
    if "actions" not in data:  # e.g. the answer was cut at the token limit and an inner object was found instead
        raise ValueError("the JSON object has no 'actions' (was the answer cut off at the token limit? keep texts short)")
    try:
        response = FeedbackResponse.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
        raise ValueError(f"the JSON does not fit the schema: {problems}") from None
    bad = [a.type for a in response.actions if a.type not in allowed]
    if bad:
        raise ValueError(f"action type {bad[0]!r} is not allowed here; allowed: {', '.join(allowed)}")
    if not response.actions:
        raise ValueError("no actions: propose at least one action")
    response.actions = response.actions[:max_actions]
    if harness is not None:
        patches = [a for a in response.actions if isinstance(a, HarnessPatchAction)]
        errors = []
        for action in patches:
            try:
                harness.apply(action.to_patch())
            except PatchError as err:
                errors.append(f"{action.to_patch().describe()}: {err}")
        if patches and len(errors) == len(patches) and len(patches) == len(response.actions):
            raise ValueError("no patch applies to the current harness: " + " | ".join(errors))
    return response


# -- rendering -----------------------------------------------------------------------------------------------------
def render_trajectories(trajectories: Sequence[Trajectory]) -> str:
    if not trajectories:
        return "(none)"
    blocks = []
    for t in trajectories:
        question = t.messages[-1]["content"] if t.messages else ""
        blocks.append(f"- case {t.instance_id}: score {t.score:.3f}\n  input: {_clip(question)}\n"
                      f"  output: {_clip(t.raw, 200)}\n  parsed: {_clip(repr(t.answer), 120)} ({t.parse_method}"
                      f"{'; parse error: ' + t.parse_error if t.parse_error else ''})\n  feedback: {_clip(t.feedback)}")
    return "\n".join(blocks)


def render_history(history: Sequence[GenerationRecord], metric: str) -> str:
    lines = []
    for g in history:
        acts = "; ".join(_describe_action(a) for a in g.actions) or "(start)"
        value = g.val.get(metric)
        lines.append(f"- gen {g.index} [{'+'.join(g.levers) or 'start'}] val {metric}="
                     f"{'-' if value is None else f'{value:.4f}'} {'ACCEPTED' if g.accepted else 'rejected'}: {acts}")
    return "\n".join(lines) or "(none)"


def rejected_buffer(history: Sequence[GenerationRecord]) -> list[dict[str, Any]]:
    """Actions of generations whose candidate the gate rejected (and invalid actions), newest last."""
    out = []
    for g in history:
        for a in g.actions:
            if a.get("error") or (g.candidate is not None and not g.accepted):
                out.append({**a, "generation": g.index})
    return out


def _describe_action(a: dict[str, Any]) -> str:
    if a.get("type") == "harness_patch":
        text = Patch.from_dict(a).describe() if a.get("op") else str(a)
    elif a.get("type") == "weight_update":
        text = f"weight_update {a.get('algo')} steps={a.get('steps')} lr={a.get('lr')}"
    else:
        text = a.get("type", "?")
    return text + (f" (invalid: {a['error']})" if a.get("error") else "")


def render_ledger(ledger: Ledger, budget: Any) -> str:
    limits = budget.model_dump() if hasattr(budget, "model_dump") else {}
    return (f"task rollouts used {ledger.task_rollouts()} (limit {limits.get('task_rollouts')}), tokens "
            f"{ledger.task_tokens()}, training steps {ledger.train_steps}, feedback calls {ledger.feedback_calls}; "
            f"generation limit {limits.get('generations')}")


def _clip(text: str, n: int = EXCERPT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render_feedback_prompt(*, task: Any, harness: Harness, trajectories: Sequence[Trajectory], n_total: int,
                           focus: str, history: Sequence[GenerationRecord], ledger: Ledger, budget: Any,
                           allowed: Sequence[str], max_actions: int) -> str:
    specs = "\n".join(f"- {name}: {spec.type.__name__}"
                      f"{', one of ' + str(list(spec.choices)) if spec.choices else ''}"
                      f"{f', range [{spec.min}, {spec.max}]' if spec.min is not None or spec.max is not None else ''}"
                      f"{' — ' + spec.help if spec.help else ''}" for name, spec in sorted(harness.specs.items()))
    example = {"diagnosis": "one or two sentences", "actions": [x for kind in allowed for x in SCHEMA_EXAMPLES[kind]]}
    rejected = rejected_buffer(history)
    template = string.Template((PROMPTS / FEEDBACK_TEMPLATE).read_text())
    return template.substitute(
        focus="failed cases" if focus == "failures" else "successful cases",
        focus_title="Failed cases" if focus == "failures" else "Successful cases (what to keep)",
        task_name=task.name, metric=task.metric.name,
        direction="higher" if task.metric.higher_is_better else "lower", task_description=task.description,
        skill=harness.skill, params=harness.render_params().strip(), param_specs=specs,
        n_shown=len(trajectories), n_total=n_total, trajectories=render_trajectories(trajectories),
        history=render_history(history, task.metric.name),
        rejected="\n".join(f"- gen {r['generation']}: {_describe_action(r)}" for r in rejected) or "(none)",
        budget=render_ledger(ledger, budget), allowed=", ".join(allowed),
        schema_example=json.dumps(example, indent=2, ensure_ascii=False), max_actions=max_actions)


class FeedbackAgent:
    """A language-model Feedback-Agent on any registered model backend."""

    def __init__(self, model: Model, max_retries: int = 2, max_new_tokens: int = 1536, temperature: float = 0.0,
                 structured: bool = True):
        self.model, self.max_retries, self.structured = model, max_retries, structured
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)

    @property
    def label(self) -> str:
        return f"llm:{self.model.name}"

    def ask(self, prompt: str, allowed: Sequence[str], harness: Harness, ledger: Ledger, seed: int,
            max_actions: int = 8) -> FeedbackResult:
        messages = [{"role": "user", "content": prompt}]
        result = FeedbackResult("", [], False, 0)
        schema = decoding_schema(allowed, harness, max_actions) if self.structured else None
        for attempt in range(self.max_retries + 1):
            params = SamplingParams(self.params.max_new_tokens, self.params.temperature, seed=seed + attempt,
                                    json_schema=schema)
            before = self.model.usage.tokens_in + self.model.usage.tokens_out
            gen = self.model.generate([messages], params)[0]
            ledger.feedback_calls += 1
            ledger.feedback_tokens += self.model.usage.tokens_in + self.model.usage.tokens_out - before
            result.attempts, result.prompts = attempt + 1, result.prompts + [messages[-1]["content"]]
            result.raw.append(gen.text)
            if gen.error:
                result.errors.append(f"model error: {gen.error}")
                continue
            try:
                response = validate_response(gen.text, allowed, harness, max_actions)
            except ValueError as err:
                result.errors.append(str(err))
                messages = messages + [{"role": "assistant", "content": gen.text},
                                       {"role": "user", "content": f"Your answer was not valid: {err}\n"
                                                                   "Answer again with one JSON object only."}]
                continue
            result.diagnosis, result.actions, result.ok = response.diagnosis, list(response.actions), True
            return result
        return result
