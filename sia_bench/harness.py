"""The harness: the editable scaffold around a model, as named text components plus typed parameters.

Shaped like a GEPA candidate (a dict of text components), with SkillOpt-style patch operations. A harness is
immutable: :meth:`Harness.apply` returns a new harness or raises :class:`PatchError` and leaves the old one as it was.
Whatever a patch can produce saves and reloads to the same harness (same digest): values that could not (NaN, text
that is not UTF-8, a number out of TOML's range, a wrong type) are refused when the patch is applied.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

SKILL = "SKILL.md"
PARAMS_FILE = "harness.toml"
OPS = ("append", "insert_after", "replace", "delete", "set_param")
MAX_COMPONENT_CHARS = 200_000  # a component grown past this by patches is refused (prompts have to fit a model)
MAX_PARAM_TEXT = 10_000
MAX_LIST_ITEMS = 256
INT_RANGE = 2**63  # TOML integers are 64-bit
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_TRUE, _FALSE = {"true", "1", "on", "yes"}, {"false", "0", "off", "no"}


class PatchError(ValueError):
    """A patch that cannot be applied, or a harness that cannot be built or loaded; the message says why."""


def check_text(what: str, text: Any, limit: int | None = None) -> str:
    """``text`` if it is a str that UTF-8 can hold (no lone surrogates) and within ``limit`` characters."""
    if not isinstance(text, str):
        raise PatchError(f"{what} must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PatchError(f"{what} is not valid UTF-8 text (it holds a lone surrogate)") from None
    if limit is not None and len(text) > limit:
        raise PatchError(f"{what} is {len(text):,} characters; at most {limit:,}")
    return text


@dataclass(frozen=True)
class ParamSpec:
    """Type and allowed values of one harness parameter (or task option), so a proposer's ``set_param`` or a
    ``-T/-H k=v`` can be validated. ``default=None`` means "unset" and then None is a valid value."""

    type: type
    default: Any
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    help: str = ""

    def validate(self, name: str, value: Any) -> Any:
        """``value`` converted to this parameter's type and checked; raises PatchError and nothing else."""
        if value is None and self.default is None:
            return None
        try:
            value = self._convert(name, value)
        except PatchError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError):
            raise PatchError(f"parameter {name!r} takes {self.type.__name__}, got {_short(value)}") from None
        if self.type is list:
            return value
        if self.choices is not None and value not in self.choices:
            raise PatchError(f"parameter {name!r} must be one of {list(self.choices)}, got {_short(value)}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise PatchError(f"parameter {name!r} must lie in [{self.min}, {self.max}], got {_short(value)}")
        return value

    def _convert(self, name: str, value: Any) -> Any:
        kind = self.type
        if kind is bool:
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                value = value.strip().lower() in _TRUE
            if not isinstance(value, bool):
                raise PatchError(f"parameter {name!r} takes true/false, got {_short(value)}")
            return value
        if kind is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise PatchError(f"parameter {name!r} takes a list of names, got {_short(value)}")
            if len(value) > MAX_LIST_ITEMS:
                raise PatchError(f"parameter {name!r} takes at most {MAX_LIST_ITEMS} names")
            value = [check_text(f"parameter {name!r}", v, MAX_PARAM_TEXT) for v in value]
            if self.choices is not None and (bad := [v for v in value if v not in self.choices]):
                raise PatchError(f"parameter {name!r}: unknown {bad[:5]}; choose from {list(self.choices)}")
            return value
        if isinstance(value, bool) and kind is not str:
            raise PatchError(f"parameter {name!r} takes {kind.__name__}, got {value!r}")
        if kind is int:
            if isinstance(value, float):
                if not (math.isfinite(value) and value.is_integer()):
                    raise ValueError
            elif isinstance(value, str):
                value = value.strip()
            elif not isinstance(value, int):
                raise TypeError
            if isinstance(value, str) and len(value) > 30:
                raise PatchError(f"parameter {name!r} takes int, got a {len(value)}-character number")
            value = int(value)
            if not -INT_RANGE < value < INT_RANGE:
                raise PatchError(f"parameter {name!r} takes int, got a number outside +-2**63")
            return value
        if kind is float:
            if isinstance(value, str):
                value = value.strip()
                if len(value) > 60:
                    raise PatchError(f"parameter {name!r} takes float, got a {len(value)}-character number")
            elif not isinstance(value, (int, float)):
                raise TypeError
            value = float(value)
            if not math.isfinite(value):
                raise PatchError(f"parameter {name!r} takes a finite number, got {value}")
            return value
        if kind is str:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                value = str(value)
            return check_text(f"parameter {name!r}", value, MAX_PARAM_TEXT)
        return kind(value)


def _plain(value: Any) -> str:
    """A value as the user typed it (no quotes), safe to print, at most 60 characters."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 60 else text[:57] + "..."


def _short(value: Any) -> str:
    text = repr(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 60 else text[:57] + "..."


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
        if not isinstance(known.get("op"), str) or known["op"] not in OPS:
            raise PatchError(f"unknown patch op {_short(data.get('op'))}; use {', '.join(OPS)}")
        return cls(**known)

    def describe(self) -> str:
        if self.op == "set_param":
            return f"set {self.param} = {_short(self.value)}"
        what = (self.text if isinstance(self.text, str) else self.anchor if isinstance(self.anchor, str) else "")
        return f"{self.op} on {self.target}: {what.strip().replace(chr(10), ' ')[:80]}"

    def check(self) -> None:
        """Field types, before anything is looked up (a proposer may send any JSON)."""
        if not isinstance(self.op, str) or self.op not in OPS:
            raise PatchError(f"unknown patch op {_short(self.op)}; use {', '.join(OPS)}")
        if self.op == "set_param":
            check_text("set_param's param", self.param, 200)
            return
        check_text("the patch target", self.target, 200)
        for name in ("anchor", "text"):
            value = getattr(self, name)
            if value is not None:
                check_text(f"the patch {name}", value, MAX_COMPONENT_CHARS)


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


def _component_name(name: Any) -> str:
    check_text("a component name", name, 200)
    if not name or name in (PARAMS_FILE, ".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise PatchError(f"component name {_short(name)} must be a plain file name other than {PARAMS_FILE}")
    return name


@dataclass(frozen=True)
class Harness:
    components: dict[str, str]
    params: dict[str, Any]
    specs: dict[str, ParamSpec] = field(default_factory=lambda: dict(COMMON_PARAMS), compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, text in self.components.items():
            check_text(f"component {_component_name(name)}", text, MAX_COMPONENT_CHARS)
        parse_front_matter(self.components.get(SKILL, ""))
        for name, value in self.params.items():
            if name not in self.specs:
                raise PatchError(f"unknown harness parameter {_short(name)}; known: {', '.join(sorted(self.specs))}")
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
        patch.check()
        if patch.op == "set_param":
            if patch.param not in self.specs:
                raise PatchError(f"unknown parameter {_short(patch.param)}; known: {', '.join(sorted(self.specs))}")
            value = self.specs[patch.param].validate(patch.param, patch.value)
            if value == self.params[patch.param]:
                raise PatchError(f"parameter {patch.param!r} is already {_short(value)}")
            return replace(self, params={**self.params, patch.param: value})
        if patch.target not in self.components:
            raise PatchError(f"unknown component {_short(patch.target)}; have {', '.join(sorted(self.components))}")
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
                                 f"{_short(patch.anchor)}")
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
        if len(new) > MAX_COMPONENT_CHARS:
            raise PatchError(f"{patch.target} would grow to {len(new):,} characters; at most {MAX_COMPONENT_CHARS:,}")
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

    def with_params(self, values: dict[str, Any], what: str = "-H") -> "Harness":
        """This harness with parameters set from ``k=v`` values (typed by the specs); PatchError names the key."""
        params = dict(self.params)
        for name, value in values.items():
            if name not in self.specs:
                close = difflib.get_close_matches(str(name), list(self.specs), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise PatchError(f"{what} {_plain(name)}: no such harness parameter.{hint} "
                                 f"Parameters: {', '.join(sorted(self.specs))}")
            try:
                params[name] = self.specs[name].validate(name, value)
            except PatchError as err:
                raise PatchError(f"{what} {_plain(name)}={_plain(value)}: {err}") from None
        return replace(self, params=params)

    # -- files ---------------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from sia_bench.records import atomic_write_text

        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.components.items():
            atomic_write_text(directory / name, text)
        atomic_write_text(directory / PARAMS_FILE, _dump_toml(self.params))

    @classmethod
    def load(cls, directory: Path, like: "Harness", fill_missing: bool = False) -> "Harness":
        """Load a saved harness, validating against the specs of ``like`` (the task's default harness). Components
        missing from the folder are an error naming the file, or taken from ``like`` with ``fill_missing``; a missing
        ``harness.toml`` means default parameters only with ``fill_missing``. Errors name the file."""
        directory = Path(directory)
        toml_path = directory / PARAMS_FILE
        if toml_path.exists() or not fill_missing:
            params = _read_toml(toml_path)
        else:
            params = {}
        components = {}
        for name in like.components:
            path = directory / name
            if path.exists():
                components[name] = _read_text(path)
            elif fill_missing:
                components[name] = like.components[name]
            else:
                raise PatchError(f"{path} is missing: the harness folder is incomplete")
        params.pop("components", None)
        try:
            return cls(components, {**{k: s.default for k, s in like.specs.items()}, **params}, like.specs)
        except PatchError as err:
            raise PatchError(f"{directory}: {err}") from None

    def render_params(self) -> str:
        return _dump_toml(self.params)


def _read_text(path: Path) -> str:
    """Exact file text (no newline translation, so '\\r' survives a round trip); errors name the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise PatchError(f"{path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise PatchError(f"{path} is not UTF-8 text") from None


def _read_toml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PatchError(f"{path} is not valid TOML ({err})") from None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character (U+0000-U+001F, U+007F) escaped."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite by validation; repr round-trips exactly
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in value) + "]"
    return _toml_string(str(value))


def _dump_toml(params: dict[str, Any]) -> str:
    """Parameters as TOML; unset (None) ones are left out and come back as their default None."""
    return "".join(f"{k if _BARE_KEY.fullmatch(k) else _toml_string(k)} = {_toml_value(v)}\n"
                   for k, v in sorted(params.items()) if v is not None)


def load_default_harness(folder: Path, specs: dict[str, ParamSpec] | None = None) -> Harness:
    """A task's default harness from ``SKILL.md`` + ``harness.toml`` (+ any other files listed in it)."""
    params = _read_toml(folder / PARAMS_FILE) if (folder / PARAMS_FILE).exists() else {}
    extra = params.pop("components", [])
    components = {name: _read_text(folder / name) for name in extra}
    return Harness.create(_read_text(folder / SKILL), params, specs, components)
