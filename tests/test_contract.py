"""Stage contract v2: named input roles matched or named in the recipe, declared outputs checked, the context."""

from __future__ import annotations

import pytest
from datasets import load_from_disk

from factory.errors import RecipeError, StageError
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.stage import Columns, Needs, spec_from_object
from factory.store import Upstream

HEAD = """\
name: roles
seed: 1
stages:
  a: {uses: 'toy_stages:counter', n_rows: 5}
  b: {uses: 'toy_stages:counter', n_rows: 2}
"""


def build(path, runs):
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    runner.build()
    return runner


def test_a_listed_input_is_matched_to_the_only_role_it_fits(write_recipe, tmp_path):
    path = write_recipe(HEAD + "  j: {uses: 'toy_stages:join', inputs: [a]}\n")
    recipe = load_recipe(path)
    assert recipe.stages["j"].roles == {"values": "a"}
    runner = build(path, tmp_path / "runs")
    row = load_from_disk(str(runner.store("j").data_dir))[0]
    assert row["values_from"] == "a" and row["values_rows"] == 5  # ctx.upstream[role] carries the manifest
    assert runner.store("j").manifest()["roles"] == {"values": "a"}


def test_inputs_that_fit_two_ways_must_be_named(write_recipe):
    path = write_recipe(HEAD + "  j: {uses: 'toy_stages:join', inputs: [a, b]}\n")
    with pytest.raises(RecipeError, match=r"stages\.j\.inputs: the inputs fit the roles in more than one way; name"):
        load_recipe(path)


def test_named_roles_wire_exactly_and_enter_the_fingerprint(write_recipe, tmp_path):
    one = write_recipe(HEAD + "  j: {uses: 'toy_stages:join', inputs: {values: a, subtract: b}}\n", "one.yaml")
    two = write_recipe(HEAD + "  j: {uses: 'toy_stages:join', inputs: {values: b, subtract: a}}\n", "two.yaml")
    r1, r2 = build(one, tmp_path / "r1"), build(two, tmp_path / "r2")
    assert r1.recipe.stages["j"].roles == {"values": "a", "subtract": "b"}
    assert r1.fingerprints["j"] != r2.fingerprints["j"]
    t1 = load_from_disk(str(r1.store("j").data_dir))[0]["total"]
    t2 = load_from_disk(str(r2.store("j").data_dir))[0]["total"]
    assert t1 == pytest.approx(-t2)


def test_a_listed_recipe_keeps_its_fingerprint_when_roles_are_matched(write_recipe):
    """The list form hashes as before contract v2 (inputs by stage name, no roles), so no cache is lost."""
    path = write_recipe(HEAD + "  j: {uses: 'toy_stages:join', inputs: [a]}\n")
    from factory.fingerprint import stage_payload

    recipe = load_recipe(path)
    payload = stage_payload(recipe, "j", {"a": "x", "b": "y"})
    assert "roles" not in payload and payload["inputs"] == {"a": "x"}


@pytest.mark.parametrize(
    "inputs, message",
    [
        ("{valuez: a}", r"stages\.j\.inputs\.valuez: no input role 'valuez' \(did you mean 'values'\?\)"),
        ("{subtract: a}", r"stages\.j\.inputs: role 'values' is not wired \(it needs row, value\)"),
        ("[]", r"stages\.j\.inputs: needs 1 input\(s\) \(values\), got 0"),
        ("{values: [a, b]}", r"stages\.j\.inputs\.values: role 'values' takes one input, got 2"),
        ("[j2]", r"stages\.j\.inputs\.values: no input fits role 'values': the closest, 'j2', does not write "
                 r"column 'row'"),
        ("{values: j2}", r"stages\.j\.inputs\.values: 'j2' does not write column 'row' that role 'values' needs"),
    ],
)
def test_miswired_roles_fail_at_validate_in_one_line(write_recipe, inputs, message):
    extra = "  j2: {uses: 'toy_stages:join', inputs: [a]}\n"
    path = write_recipe(HEAD + extra + f"  j: {{uses: 'toy_stages:join', inputs: {inputs}}}\n")
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_a_many_role_takes_every_input(write_recipe, tmp_path):
    path = write_recipe(HEAD + "  c: {uses: 'toy_stages:counter', inputs: [a, b], n_rows: 1}\n")
    runner = build(path, tmp_path / "runs")
    assert runner.recipe.stages["c"].roles == {"upstream": ["a", "b"]}
    a, b, c = (load_from_disk(str(runner.store(s).data_dir)) for s in "abc")
    assert c[0]["value"] > sum(a["value"]) + sum(b["value"])


@pytest.mark.parametrize(
    "flag, message",
    [
        ("wrong_output", r"stages\.j: output 'data' has undeclared column 'surprise', against the stage's OUTPUTS"),
        ("extra_output", r"stages\.j: wrote a dataset 'undeclared' that its stage does not declare in OUTPUTS"),
    ],
)
def test_outputs_that_break_the_declaration_fail_the_stage(write_recipe, tmp_path, flag, message):
    path = write_recipe(HEAD + f"  j: {{uses: 'toy_stages:join', inputs: [a], {flag}: true}}\n")
    with pytest.raises(StageError, match=message):
        build(path, tmp_path / "runs")


def test_declared_columns_check_types():
    from datasets import ClassLabel, Features, List, Value

    cols = Columns({"a": "string", "b": "list<int32>", "c": "label", "d": "any"})
    good = Features({"a": Value("string"), "b": List(Value("int32")), "c": ClassLabel(names=["x"]), "d": Value("int8")})
    assert cols.mismatch(good) is None
    assert "(declared list<int32>)" in cols.mismatch(Features({**good, "b": List(Value("int64"))}))
    assert cols.mismatch(Features({**good, "e": Value("bool")})) == "has undeclared column 'e'"
    assert Columns(cols.types, open=True).mismatch(Features({**good, "e": Value("bool")})) is None
    assert cols.mismatch(Features({"a": Value("string")})) == "lacks column 'b'"


def test_a_stage_without_roles_or_outputs_is_refused():
    from types import SimpleNamespace

    from factory.options import StageOptions

    old = SimpleNamespace(Options=StageOptions, run=lambda *a: [], INPUTS=(1, 1), OUTPUTS={})
    with pytest.raises(TypeError, match="INPUTS must map role names to Needs"):
        spec_from_object("old", old)
    with pytest.raises(TypeError, match="lacks OUTPUTS"):
        spec_from_object("x", SimpleNamespace(Options=StageOptions, run=lambda *a: [], INPUTS={"a": Needs()}))


def test_upstream_artifacts_never_leave_the_stage_folder(tmp_path):
    up = Upstream("a", "fp", str(tmp_path / "a"))
    assert up.artifact("adapter/config.json") == tmp_path / "a" / "artifacts" / "adapter" / "config.json"
    for bad in ("../manifest.json", "/etc/passwd", "adapter/../../x"):
        with pytest.raises(ValueError, match="leaves a's artifacts"):
            up.artifact(bad)
    assert up.manifest == {} and up.content_hash is None
