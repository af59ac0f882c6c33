"""Property: any sequence of patches, valid or not and of any JSON-ish shape, either raises PatchError or gives a
harness that saves and reloads to itself, digest and value types included. 10,000 sequences; nothing else may be
raised (no TypeError, OverflowError, NaN, unreadable harness.toml)."""

from __future__ import annotations

import atexit
import math
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sia_bench.harness import OPS, Harness, ParamSpec, Patch, PatchError
from tests.fuzz import pick, text, value

SKILL = "---\nname: demo\ndescription: A demo skill.\n---\n# Demo\n\nAnswer briefly.\nUse digits.\n"
SPECS = {"mode": ParamSpec(str, "a", choices=("a", "b")), "k": ParamSpec(int, 2, min=0, max=8),
         "flag": ParamSpec(bool, False), "label": ParamSpec(str, "x"), "names": ParamSpec(list, []),
         "rate": ParamSpec(float, 0.5, min=-1e300, max=1e300), "big": ParamSpec(int, 0), "unset": ParamSpec(str, None)}
PARAMS = sorted(SPECS) + ["few_shot", "temperature", "tools", "max_new_tokens", "nope"]
SHM = Path("/dev/shm")
FOLDER = Path(tempfile.mkdtemp(prefix="sia-harness-roundtrip-", dir=SHM if SHM.is_dir() else None))
atexit.register(shutil.rmtree, FOLDER, True)  # reused by every example, removed at exit


def base() -> Harness:
    return Harness.create(SKILL, specs=SPECS, components={"notes.txt": "line one\r\nline two\rend"})


BASE = base()
PLAUSIBLE = (0, 1, 3, 7, 0.25, 1e-5, -2.5e299, 123456789, 2**62, "b", "a", "true", "false", True, False, ["x", "y"],
             "x,y", "generate", "4")


def random_patch(rng: random.Random) -> Patch:
    op = pick(rng, *OPS) if rng.random() < 0.9 else pick(rng, "rewrite", 3, None, text(rng))
    return Patch(op, target=pick(rng, "SKILL.md", "SKILL.md", "notes.txt", text(rng), None, ["SKILL.md"]),
                 anchor=pick(rng, "Answer briefly.", "Use digits.", "# Demo", "\n", "name: demo", "\r", text(rng),
                             None, 7),
                 text=pick(rng, text(rng) + "x", text(rng, 40), text(rng), None, "", 5, ["x"]),
                 param=pick(rng, *PARAMS, text(rng), None, ["k"]),
                 value=value(rng) if rng.random() < 0.5 else pick(rng, *PLAUSIBLE, text(rng), [text(rng)]))


@settings(max_examples=10_000, deadline=None, database=None)
@given(st.integers(0, 2**32 - 1))
def test_patch_sequences_round_trip_exactly(seed):
    rng = random.Random(seed)
    harness = BASE
    for _ in range(rng.randint(1, 5)):
        try:
            harness = harness.apply(random_patch(rng))
        except PatchError:
            continue
    assert all(not isinstance(v, float) or math.isfinite(v) for v in harness.params.values())
    if harness is BASE:
        return
    shutil.rmtree(FOLDER, ignore_errors=True)
    harness.save(FOLDER)
    loaded = Harness.load(FOLDER, BASE)
    assert loaded == harness and loaded.digest == harness.digest, seed
    assert {k: type(v) for k, v in loaded.params.items()} == {k: type(v) for k, v in harness.params.items()}


def test_values_that_cannot_round_trip_are_refused_at_apply_time():
    h = base()
    for param, bad in (("rate", float("nan")), ("rate", "inf"), ("rate", 10**400), ("big", 2**64), ("label", "\ud800"),
                       ("k", True), ("label", ["a"]), ("names", [1]), (["k"], 3)):
        try:
            h.apply(Patch("set_param", param=param, value=bad))
        except PatchError:
            continue
        raise AssertionError(f"{param}={bad!r} was accepted")
    for bad in (Patch("append", text="\udc80"), Patch("replace", anchor=7, text="x"), Patch(3),
                Patch("append", target=["x"])):
        try:
            h.apply(bad)
        except PatchError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    weird = h.apply(Patch("append", target="notes.txt", text='a "quoted" \\ line\x7f\x00\r\nnext')).apply(
        Patch("set_param", param="label", value='x = "y"\n[table]\x7f\x00'))
    weird.save(FOLDER / "weird")
    assert Harness.load(FOLDER / "weird", h).digest == weird.digest
