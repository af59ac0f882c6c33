import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sia_bench.harness import Harness, ParamSpec, Patch, PatchError, load_default_harness

SKILL = "---\nname: demo\ndescription: A demo skill.\n---\n# Demo\n\nAnswer briefly.\nUse digits.\n"
SPECS = {"mode": ParamSpec(str, "a", choices=("a", "b")), "k": ParamSpec(int, 2, min=0, max=8),
         "flag": ParamSpec(bool, False)}

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


def make() -> Harness:
    return Harness.create(SKILL, specs=SPECS)


def snapshot(h: Harness):
    return copy.deepcopy(h.components), copy.deepcopy(h.params), h.digest


@settings(max_examples=60, deadline=None)
@given(addition=text)
def test_append_keeps_front_matter_and_adds_text(addition):
    h = make()
    before = snapshot(h)
    if not addition.strip():
        with pytest.raises(PatchError):
            h.apply(Patch("append", text=addition))
    else:
        new = h.apply(Patch("append", text=addition))
        assert addition.strip("\n") in new.skill
        assert new.skill.startswith("---\nname: demo")
        assert new.digest != h.digest
    assert snapshot(h) == before  # the original never changes


@settings(max_examples=60, deadline=None)
@given(anchor=text, insert=text)
def test_insert_after_needs_a_unique_anchor(anchor, insert):
    h = make()
    before = snapshot(h)
    count = h.skill.count(anchor)
    try:
        new = h.apply(Patch("insert_after", anchor=anchor, text=insert))
    except PatchError as err:
        assert count != 1 or not insert.strip("\n") or "front matter" in str(err) or "changes nothing" in str(err)
    else:
        assert count == 1
        assert anchor + "\n" + insert.strip("\n") in new.skill
    assert snapshot(h) == before


@settings(max_examples=60, deadline=None)
@given(anchor=st.sampled_from(["Answer briefly.", "Use digits.", "# Demo", "nothing here", "\n"]), repl=text)
def test_replace_and_delete(anchor, repl):
    h = make()
    before = snapshot(h)
    for patch in (Patch("replace", anchor=anchor, text=repl), Patch("delete", anchor=anchor)):
        try:
            new = h.apply(patch)
        except PatchError:
            continue
        assert h.skill.count(anchor) == 1
        if patch.op == "delete":
            assert len(new.skill) == len(h.skill) - len(anchor)
        else:
            assert repl in new.skill
    assert snapshot(h) == before


@settings(max_examples=80, deadline=None)
@given(param=st.sampled_from(["mode", "k", "flag", "few_shot", "temperature", "nope"]),
       value=st.one_of(st.integers(-5, 20), st.floats(-1, 3, allow_nan=False), st.sampled_from(["a", "b", "c", "true"]),
                       st.booleans()))
def test_set_param_is_validated(param, value):
    h = make()
    before = snapshot(h)
    try:
        new = h.apply(Patch("set_param", param=param, value=value))
    except PatchError:
        assert snapshot(h) == before
        return
    assert param in SPECS or param in ("few_shot", "temperature")
    spec = h.specs[param]
    assert new.params[param] == spec.validate(param, value)
    if spec.choices:
        assert new.params[param] in spec.choices
    if spec.min is not None:
        assert spec.min <= new.params[param] <= spec.max


def test_patch_that_breaks_front_matter_is_rejected():
    h = make()
    with pytest.raises(PatchError, match="front matter"):
        h.apply(Patch("delete", anchor="name: demo\n"))


def test_digest_is_content_hash():
    assert make().digest == make().digest
    assert make().apply(Patch("set_param", param="k", value=3)).digest != make().digest


def test_save_and_load_round_trip(tmp_path):
    h = make().apply(Patch("set_param", param="mode", value="b")).apply(Patch("append", text="More: 漢字"))
    h.save(tmp_path / "h")
    loaded = Harness.load(tmp_path / "h", make())
    assert loaded == h and loaded.digest == h.digest


def test_default_harness_from_folder(tmp_path):
    (tmp_path / "SKILL.md").write_text(SKILL)
    (tmp_path / "harness.toml").write_text('k = 5\ncomponents = ["program.py"]\n')
    (tmp_path / "program.py").write_text("print(1)\n")
    h = load_default_harness(tmp_path, SPECS)
    assert h["k"] == 5 and h.components["program.py"] == "print(1)\n"


def test_missing_front_matter_is_an_error():
    with pytest.raises(PatchError):
        Harness.create("# no front matter\n")


def test_unknown_op_from_dict():
    with pytest.raises(PatchError, match="unknown patch op"):
        Patch.from_dict({"op": "rewrite"})
