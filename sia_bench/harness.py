"""The harness: the editable scaffold around a model, as named text components plus typed parameters.

Shaped like a GEPA candidate (a dict of text components), with SkillOpt-style patch operations. A harness is
immutable: :meth:`Harness.apply` returns a new harness or raises :class:`PatchError` and leaves the old one as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

SKILL = "SKILL.md"
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


class PatchError(ValueError):
    """A patch that cannot be applied; the message says why."""


@dataclass(frozen=True)
class ParamSpec:
    """Type and allowed values of one harness parameter, so a proposer's ``set_param`` can be validated."""

    type: type
    default: Any
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""

    def validate(self, name: str, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "on", "off"}:
                value = value.lower() in {"true", "1", "on"}
            if not isinstance(value, bool):
                raise PatchError(f"parameter {name!r} takes true/false, got {value!r}")
        elif self.type is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise PatchError(f"parameter {name!r} takes a list of names, got {value!r}")
            value = list(value)
            if self.choices is not None and (bad := [v for v in value if v not in self.choices]):
                raise PatchError(f"parameter {name!r}: unknown {bad}; choose from {list(self.choices)}")
            return value
        else:
            try:
                if self.type is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = self.type(value)
            except (TypeError, ValueError):
                raise PatchError(f"parameter {name!r} takes {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise PatchError(f"parameter {name!r} must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise PatchError(f"parameter {name!r} must lie in [{self.min}, {self.max}], got {value!r}")
        return value


# Parameters every harness has; tasks add their own (retrieval, candidates, program choice, ...).
COMMON_PARAMS: dict[str, ParamSpec] = {
    "few_shot": ParamSpec(int, 0, min=0, max=32, help="demonstrations from train placed before the query"),
    "temperature": ParamSpec(float, 0.0, min=0.0, max=2.0, help="sampling temperature; 0 is greedy"),
    "max_new_tokens": ParamSpec(int, 32, min=1, max=8192, help="generation length limit"),
    "retries": ParamSpec(int, 0, min=0, max=5, help="re-ask with the parse error when an answer does not parse"),
    "parser": ParamSpec(str, "default", help="answer parser; tasks list their choices"),
    "tools": ParamSpec(list, [], help="switched-on tools; tasks list their choices"),
}


@dataclass(frozen=True)
class Patch:
    """One edit. Text ops act on a component (``SKILL.md`` by default); ``set_param`` sets one parameter."""

    op: Literal["append", "insert_after", "replace", "delete", "set_param"]
    target: str = SKILL
    anchor: str | None = None
    text: str | None = None
    param: str | None = None
    value: Any = None
    rationale: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Patch":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if known.get("op") not in {"append", "insert_after", "replace", "delete", "set_param"}:
            raise PatchError(f"unknown patch op {data.get('op')!r}; use append, insert_after, replace, delete, set_param")
        return cls(**known)

    def describe(self) -> str:
        if self.op == "set_param":
            return f"set {self.param} = {self.value!r}"
        what = (self.text or self.anchor or "").strip().replace("\n", " ")
        return f"{self.op} on {self.target}: {what[:80]}"


def parse_front_matter(text: str) -> dict[str, str]:
    """The Agent Skills front matter (``name``, ``description``) of a SKILL.md; raises PatchError when absent."""
    match = _FRONT_MATTER.match(text)
    if not match:
        raise PatchError("SKILL.md must start with front matter between '---' lines")
    fields = {}
    for line in match.group(1).splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    missing = [k for k in ("name", "description") if not fields.get(k)]
    if missing:
        raise PatchError(f"SKILL.md front matter lacks {', '.join(missing)}")
    return fields


@dataclass(frozen=True)
class Harness:
    components: dict[str, str]
    params: dict[str, Any]
    specs: dict[str, ParamSpec] = field(default_factory=lambda: dict(COMMON_PARAMS), compare=False, repr=False)

    def __post_init__(self) -> None:
        parse_front_matter(self.components.get(SKILL, ""))
        for name, value in self.params.items():
            if name not in self.specs:
                raise PatchError(f"unknown harness parameter {name!r}; known: {', '.join(sorted(self.specs))}")
            self.params[name] = self.specs[name].validate(name, value)

    @classmethod
    def create(cls, skill: str, params: dict[str, Any] | None = None, specs: dict[str, ParamSpec] | None = None,
               components: dict[str, str] | None = None) -> "Harness":
        """A harness with every parameter at its default unless given."""
        all_specs = {**COMMON_PARAMS, **(specs or {})}
        merged = {name: spec.default for name, spec in all_specs.items()}
        merged.update(params or {})
        return cls({SKILL: skill, **(components or {})}, merged, all_specs)

    @property
    def skill(self) -> str:
        return self.components[SKILL]

    def __getitem__(self, param: str) -> Any:
        return self.params[param]

    @property
    def digest(self) -> str:
        """Content hash: same text and parameters, same digest."""
        blob = json.dumps({"components": self.components, "params": self.params}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def apply(self, patch: Patch) -> "Harness":
        """Return the patched harness; raise PatchError (this harness untouched) when the patch is invalid."""
        if patch.op == "set_param":
            if patch.param not in self.specs:
                raise PatchError(f"unknown parameter {patch.param!r}; known: {', '.join(sorted(self.specs))}")
            value = self.specs[patch.param].validate(patch.param, patch.value)
            if value == self.params[patch.param]:
                raise PatchError(f"parameter {patch.param!r} is already {value!r}")
            return replace(self, params={**self.params, patch.param: value})
        if patch.target not in self.components:
            raise PatchError(f"unknown component {patch.target!r}; have {', '.join(sorted(self.components))}")
        text = self.components[patch.target]
        if patch.op == "append":
            if not patch.text or not patch.text.strip():
                raise PatchError("append needs non-empty text")
            new = text.rstrip("\n") + "\n\n" + patch.text.strip("\n") + "\n"
        else:
            if not patch.anchor:
                raise PatchError(f"{patch.op} needs an anchor: the exact text to find")
            count = text.count(patch.anchor)
            if count != 1:
                raise PatchError(f"anchor must occur exactly once in {patch.target}, found {count} times: "
                                 f"{patch.anchor[:60]!r}")
            if patch.op == "insert_after":
                if not patch.text:
                    raise PatchError("insert_after needs text")
                new = text.replace(patch.anchor, patch.anchor + "\n" + patch.text.strip("\n"), 1)
            elif patch.op == "replace":
                if patch.text is None:
                    raise PatchError("replace needs text (use delete to remove)")
                new = text.replace(patch.anchor, patch.text, 1)
            else:
                new = text.replace(patch.anchor, "", 1)
        if new == text:
            raise PatchError("patch changes nothing")
        if patch.target == SKILL:
            parse_front_matter(new)  # a patch may not break the skill's front matter
        return replace(self, components={**self.components, patch.target: new})

    def apply_all(self, patches: list[Patch]) -> tuple["Harness", list[tuple[Patch, str | None]]]:
        """Apply patches in order, skipping invalid ones; returns the harness and (patch, error-or-None) pairs."""
        harness, outcomes = self, []
        for patch in patches:
            try:
                harness = harness.apply(patch)
                outcomes.append((patch, None))
            except PatchError as err:
                outcomes.append((patch, str(err)))
        return harness, outcomes

    # -- files ---------------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from sia_bench.records import atomic_write_text

        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.components.items():
            atomic_write_text(directory / name, text)
        atomic_write_text(directory / "harness.toml", _dump_toml(self.params))

    @classmethod
    def load(cls, directory: Path, like: "Harness") -> "Harness":
        """Load a saved harness, validating against the specs of ``like`` (the task's default harness)."""
        params = tomllib.loads((directory / "harness.toml").read_text())
        components = {name: (directory / name).read_text() for name in like.components if (directory / name).exists()}
        return cls(components, {**{k: s.default for k, s in like.specs.items()}, **params}, like.specs)

    def render_params(self) -> str:
        return _dump_toml(self.params)


def _dump_toml(params: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)

    return "".join(f"{k} = {fmt(v)}\n" for k, v in sorted(params.items()))


def load_default_harness(folder: Path, specs: dict[str, ParamSpec] | None = None) -> Harness:
    """A task's default harness from ``SKILL.md`` + ``harness.toml`` (+ any other files listed in it)."""
    params = tomllib.loads((folder / "harness.toml").read_text()) if (folder / "harness.toml").exists() else {}
    extra = params.pop("components", [])
    components = {name: (folder / name).read_text() for name in extra}
    return Harness.create((folder / SKILL).read_text(), params, specs, components)
