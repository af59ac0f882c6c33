"""One typed configuration layer: the budget, a run's settings, an ablation's settings, and the one option parser.

Everything a user types (``-T/-I/-M/-F/-H k=v``, ``--budget``) goes through :func:`parse_pairs` (text to raw
strings) and :func:`coerce` (a raw string to the type its schema declares: a task's ``ParamSpec``, an improver's
dataclass field, a model factory's parameter, a :class:`Budget` field). A bad value becomes one :class:`ConfigError`
line that names the flag and the fix, before anything is created on disk.

Settings are kept in canonical form: options equal to their default are dropped and values are typed, so the same
experiment always has the same settings and the ablation id (a digest of them) does not depend on the order of flags
or arms. A new budget field is one line in :class:`Budget`: help text, parsing and records derive from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia_bench.task import OptionError

NONE_WORDS = {"none", "null"}


class ConfigError(OptionError):
    """A setting that cannot be used; the message is one line naming the flag and the fix."""


# -- the schemas ------------------------------------------------------------------------------------------------------
class Budget(BaseModel):
    """Limits of a run; ``None`` means unlimited. Test-split evaluation is never charged."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    generations: int = Field(4, ge=0, le=100_000, description="improvement generations after generation 0")
    task_rollouts: int | None = Field(None, ge=1, description="task-model rollouts (train + val; test excluded)")
    task_tokens: int | None = Field(None, ge=1, description="task-model tokens (train + val; test excluded)")
    wall_seconds: float | None = Field(None, gt=0, description="wall-clock seconds")
    patience: int | None = Field(None, ge=1, description="stop after this many generations without a kept change")
    target: float | None = Field(None, description="stop once val reaches this")
    compute_flops: float | None = Field(None, gt=0, description="FLOPs of model calls and training (test excluded)")

    @classmethod
    def help(cls) -> str:
        """The ``--budget`` help text, derived from the fields (a new field documents itself)."""
        return "; ".join(f"{name} ({f.description})" for name, f in cls.model_fields.items())


class HarnessStart(BaseModel):
    """Where a run starts: a harness folder (``--harness DIR``) and parameter overrides (``-H k=v``) over it, or over
    the task's default harness when ``dir`` is None."""

    model_config = ConfigDict(extra="forbid")

    dir: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return self.dir is None and not self.params

    def describe(self) -> str:
        """Short label for records and tables, e.g. ``tools-on (answer_mode=rank)`` or ``answer_mode=rank``."""
        name = Path(self.dir).name if self.dir else ""
        params = ", ".join(f"{k}={_show(v)}" for k, v in sorted(self.params.items()))
        return f"{name} ({params})" if name and params else name or params


class RunConfig(BaseModel):
    """Everything that defines one run; stored in ``run.json`` and ``config.json`` and compared on resume."""

    model_config = ConfigDict(extra="forbid")

    task: str
    improver: str = "none"
    task_options: dict[str, Any] = Field(default_factory=dict)
    improver_options: dict[str, Any] = Field(default_factory=dict)
    model: str = "hf"
    model_options: dict[str, Any] = Field(default_factory=dict)
    feedback_model: str | None = None
    feedback_options: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)  # test instances when they differ from ``limit`` (None: as ``limit``)
    budget: Budget = Field(default_factory=Budget)
    harness: HarnessStart = Field(default_factory=HarnessStart)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"run configuration: {pydantic_line(err)}") from None

    def canonical(self) -> str:
        return canonical_json(self.to_dict())

    def differences(self, other: "RunConfig") -> list[str]:
        """Names of the top-level settings that differ (for "this folder holds another run" errors)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if canonical_json(mine[k]) != canonical_json(theirs.get(k)))


FLAGS = {"seed": "--seed", "limit": "--limit", "test_limit": "--test-limit", "budget": "--budget", "task": "--task",
         "improver": "--improver", "model": "--model", "feedback_model": "--feedback-model", "harness": "--harness"}
HINTS = {"limit": " (leave --limit out to use whole splits)",
         "test_limit": " (leave --test-limit out to score as many test instances as --limit)",
         "seed": " (seeds are 0 .. 2**31-1)"}


def build_run_config(**values: Any) -> RunConfig:
    """A RunConfig from command-line values; a value the schema refuses is one line naming its flag."""
    try:
        return RunConfig(**values)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise ConfigError(f"{FLAGS.get(name, name)} {printable(first.get('input'))}: {first['msg']}"
                          f"{HINTS.get(name, '')}") from None


class AblationSpec(BaseModel):
    """Everything shared by the arms of an ablation; only the improver and the seed differ between its runs."""

    model_config = ConfigDict(extra="forbid")

    task: str
    arms: list[str] = Field(default_factory=lambda: ["none", "h", "w", "wh", "bt"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    task_options: dict[str, Any] = Field(default_factory=dict)
    improver_options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # arm -> settings
    model: str = "hf"
    model_options: dict[str, Any] = Field(default_factory=dict)
    feedback_model: str | None = None
    feedback_options: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(32, ge=1)
    test_limit: int | None = Field(None, ge=1)
    budget: Budget = Field(default_factory=lambda: Budget(generations=3))
    harness: HarnessStart = Field(default_factory=HarnessStart)
    start_digest: str | None = None  # filled by ablate.prepare when --harness/-H change the start

    def comparable(self) -> dict[str, Any]:
        """The canonical settings whose equality makes runs of different arms comparable (arms and seeds excluded);
        budget fields at their default are left out, so adding a budget field keeps existing ids."""
        return {"task": self.task, "task_options": self.task_options, "model": self.model,
                "model_options": self.model_options, "feedback_model": self.feedback_model,
                "feedback_options": self.feedback_options, "limit": self.limit,
                **({"test_limit": self.test_limit} if self.test_limit is not None else {}),  # old ids unchanged
                "budget": self.budget.model_dump(mode="json", exclude_defaults=True),
                "improver_options": {arm: s for arm, s in sorted(self.improver_options.items()) if s},
                "harness": None if self.harness.is_default else {**self.harness.model_dump(mode="json"),
                                                                 "digest": self.start_digest}}

    @property
    def id(self) -> str:
        return hashlib.sha256(canonical_json(self.comparable()).encode()).hexdigest()[:10]

    def config(self, arm: str, seed: int) -> RunConfig:
        return RunConfig(task=self.task, improver=arm, task_options=dict(self.task_options),
                         improver_options=dict(self.improver_options.get(arm, {})), model=self.model,
                         model_options=dict(self.model_options), feedback_model=self.feedback_model,
                         feedback_options=dict(self.feedback_options), seed=seed, limit=self.limit,
                         test_limit=self.test_limit,
                         budget=self.budget, harness=self.harness)


# -- text ------------------------------------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)


def printable(text: Any) -> str:
    """``text`` safe to print: undecodable bytes (lone surrogates) shown as escapes."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(flag: str, text: str) -> str:
    """Refuse text that cannot be written to a UTF-8 record (e.g. a path with non-UTF-8 bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{flag} {printable(text)!r} is not valid UTF-8 text; records are UTF-8 JSON, so rename "
                          "the file or folder (or re-encode the value)") from None
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def suggest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# -- parsing ----------------------------------------------------------------------------------------------------------
def parse_pairs(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["a=1,b=2", "c=x"]`` -> ``{"a": "1", "b": "2", "c": "x"}``; values stay text until :func:`coerce` types them.
    A comma inside a value stays when no ``=`` follows it (``tools=a,b``)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        check_text(flag, pair)
        for item in _split_items(pair):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"{flag} takes key=value, got {printable(item)!r}; e.g. {flag} name=value")
            out[key] = value.strip()
    return out


def _split_items(pair: str) -> list[str]:
    items: list[str] = []
    for part in pair.split(","):
        if "=" in part or not items:
            items.append(part)
        else:
            items[-1] += "," + part
    return items


def auto(value: Any) -> Any:
    """Untyped values (``Any`` fields): true/false, none, an integer or a float when the text is exactly that
    number, else the text itself."""
    if not isinstance(value, str):
        return value
    low = value.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low in NONE_WORDS:
        return None
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        if str(number) == value and (cast is int or math.isfinite(number)):
            return number
    return value


def coerce(flag: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` declares (bool, int, float, str, list[str], Literal, optional ones, Any)."""
    from sia_bench.harness import ParamSpec, PatchError

    if hint is Any or hint is inspect.Parameter.empty:
        return auto(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in NONE_WORDS)):
            return None
        options = [a for a in args if a is not type(None)]
        first: ConfigError | None = None
        for option in options:
            try:
                return coerce(flag, key, value, option)
            except ConfigError as err:
                first = first or err
        raise first or ConfigError(f"{flag} {key}: no usable type")
    if origin is Literal:
        spec = ParamSpec(type(args[0]), args[0], choices=tuple(args))
    elif hint in (bool, int, float, str):
        spec = ParamSpec(hint, None)
    elif hint in (list, tuple) or origin in (list, tuple, Sequence):
        spec = ParamSpec(list, [])
    elif hint is Path:
        spec = ParamSpec(str, None)
    else:
        raise ConfigError(f"{flag} {key}: this setting ({getattr(hint, '__name__', hint)}) cannot be set from the "
                          "command line")
    try:
        return spec.validate(key, value)
    except PatchError as err:
        raise ConfigError(f"{flag} {printable(key)}={printable(value)}: {err}") from None


def pydantic_line(err: ValidationError, flag: str = "") -> str:
    """The first problem of a pydantic error as one line (pydantic's own text is several, with markup-like
    brackets)."""
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    shown = printable(first.get("input"))[:60] if "input" in first else ""
    head = f"{flag} {where}" if flag else where
    return f"{head}={shown}: {first['msg']}" if shown and where else f"{head}: {first['msg']}"


def parse_budget(pairs: Sequence[str] | None, generations: int | None = None, base: Budget | None = None) -> Budget:
    """``--budget k=v,...`` (and the ``--generations`` shortcut) over ``base``; unknown fields and bad values are one
    line each."""
    raw: dict[str, Any] = dict(parse_pairs(pairs, "--budget"))
    hints = typing.get_type_hints(Budget)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in Budget.model_fields:
            raise ConfigError(f"--budget {key}: no such budget field.{suggest(key, list(Budget.model_fields))} "
                              f"Fields: {', '.join(Budget.model_fields)}")
        values[key] = coerce("--budget", key, value, hints[key])
    if generations is not None:
        values["generations"] = generations
    try:
        return Budget.model_validate({**(base or Budget()).model_dump(), **values})
    except ValidationError as err:
        raise ConfigError(pydantic_line(err, "--budget")) from None


# -- resolution against the registries --------------------------------------------------------------------------------
def option_hints(target: Any) -> dict[str, Any]:
    """Settable options of an improver class or a model factory, name -> type hint: dataclass fields or keyword
    parameters with a command-line type (objects such as an injected client are not settable)."""
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        names = [f.name for f in dataclasses.fields(target) if f.init]
        defaults = {f.name: f.default for f in dataclasses.fields(target)}
    else:
        params = inspect.signature(target).parameters
        hints = typing.get_type_hints(target)
        names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        defaults = {n: p.default for n, p in params.items()}
    out = {}
    for name in names:
        hint = hints.get(name, Any)
        if _settable(hint):
            out[name] = (hint, defaults.get(name))
    return out


def _settable(hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return all(_settable(a) for a in args if a is not type(None))
    if origin is Literal or hint in (bool, int, float, str, Path):
        return True
    return origin in (list, tuple) and all(a in (str, Ellipsis) for a in args)


def resolve_options(flag: str, what: str, raw: dict[str, Any], hints: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Typed, canonical options: unknown names answer "did you mean", values equal to the default are dropped."""
    out = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(f"{flag} {printable(key)}: {what} has no such option.{suggest(key, list(hints))} "
                              f"Options: {', '.join(sorted(hints)) or '(none)'}")
        hint, default = hints[key]
        typed = coerce(flag, key, value, hint)
        if typed != default or type(typed) is not type(default):
            out[key] = typed
    return dict(sorted(out.items()))


def resolve_task_options(task: str, raw: dict[str, Any]) -> dict[str, Any]:
    from sia_bench.registry import TASKS

    specs = TASKS.get(task).options
    out = {}
    for key, value in raw.items():
        if key not in specs:
            raise ConfigError(f"-T {printable(key)}: task {task!r} has no such option.{suggest(key, list(specs))} "
                              f"Options: {', '.join(sorted(specs)) or '(none)'}")
        spec = specs[key]
        if value is None or (isinstance(value, str) and value.lower() in NONE_WORDS and spec.default is None):
            typed = None
        else:
            typed = coerce_spec("-T", key, value, spec)
        if isinstance(typed, str):
            check_text(f"-T {key}", typed)
        if typed != spec.default:
            out[key] = typed
    return dict(sorted(out.items()))


def coerce_spec(flag: str, key: str, value: Any, spec: Any) -> Any:
    from sia_bench.harness import PatchError

    try:
        return spec.validate(key, value)
    except PatchError as err:
        raise ConfigError(f"{flag} {printable(key)}={printable(value)}: {err}") from None


def resolve_improver_options(name: str, raw: dict[str, Any], flag: str = "-I") -> dict[str, Any]:
    from sia_bench.registry import IMPROVERS

    cls = IMPROVERS.get(name)
    return resolve_options(flag, f"improver {name!r}", raw, option_hints(cls))


def resolve_model_options(spec: str, raw: dict[str, Any], flag: str) -> dict[str, Any]:
    """Options of the model backend named by ``spec`` (``backend`` or ``backend:model``)."""
    from sia_bench.registry import MODELS

    backend = spec.partition(":")[0]
    try:
        factory = MODELS.get(backend)
    except ImportError as err:
        raise ConfigError(f"model backend {backend!r} cannot be loaded ({err}); install its extra") from None
    return resolve_options(flag, f"model backend {backend!r}", raw, option_hints(factory))


def resolve_run(config: RunConfig, check_models: bool = True) -> RunConfig:
    """The same settings with every name checked and every option typed and canonical; raises ConfigError (or the
    registry's UnknownNameError) with one line. Nothing is built or written. ``check_models=False`` leaves the model
    settings as they are (for callers that hand in ready model objects)."""
    from sia_bench.registry import IMPROVERS, MODELS, TASKS

    for flag, text in (("--task", config.task), ("--improver", config.improver), ("--model", config.model),
                       ("--feedback-model", config.feedback_model or ""), ("--harness", config.harness.dir or "")):
        check_text(flag, text)
    TASKS.get(config.task)
    IMPROVERS.get(config.improver)
    update: dict[str, Any] = {
        "task_options": resolve_task_options(config.task, config.task_options),
        "improver_options": resolve_improver_options(config.improver, config.improver_options),
        "harness": resolve_harness_start(config.harness)}
    if check_models:
        MODELS.get(config.model.partition(":")[0])
        update["model_options"] = resolve_model_options(config.model, config.model_options, "-M")
        if config.feedback_model:
            MODELS.get(config.feedback_model.partition(":")[0])
            update["feedback_options"] = resolve_model_options(config.feedback_model, config.feedback_options, "-F")
        elif config.feedback_options:
            raise ConfigError("-F sets Feedback-Agent model options: give --feedback-model too")
    return config.model_copy(update=update)


def resolve_harness_start(start: HarnessStart) -> HarnessStart:
    """The harness folder as an absolute path that exists; parameter values stay raw until the task's specs type
    them (:func:`sia_bench.loop.starting_harness`)."""
    if start.dir is None:
        return start
    folder = Path(check_text("--harness", start.dir)).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"--harness {printable(start.dir)}: no such folder (it should hold SKILL.md and "
                          "harness.toml, e.g. a run's gen_000/harness)")
    if not (folder / "SKILL.md").is_file():
        raise ConfigError(f"--harness {printable(start.dir)}: the folder has no SKILL.md")
    return start.model_copy(update={"dir": str(folder)})


def split_improver_options(options: dict[str, Any], arms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-I key=v`` applies to every arm, ``-I arm:key=v`` to one arm only and wins over the former whatever the
    order of the flags."""
    out: dict[str, dict[str, Any]] = {arm: {} for arm in arms}
    scoped: dict[str, dict[str, Any]] = {arm: {} for arm in arms}
    for key, value in options.items():
        arm, sep, name = key.rpartition(":")
        if not sep:
            for settings in out.values():
                settings[key] = value
        elif arm not in out:
            raise ConfigError(f"-I {printable(key)}: {printable(arm)!r} is not one of the arms {', '.join(arms)}")
        else:
            scoped[arm][name] = value
    return {arm: {**out[arm], **scoped[arm]} for arm in arms if out[arm] or scoped[arm]}
