"""Recipes: every shipped recipe validates; malformed ones fail with one line naming the exact field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from factory.errors import RecipeError
from factory.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))

BASE = """\
name: t
seed: 1
vars: {n: 3}
backends:
  small: {type: transformers}
stages:
  q: {uses: questions, sets: [election, climate], sample: "${vars.n}"}
  c: {uses: "toy_stages:counter", inputs: [q]}
"""


def test_shipped_recipes_exist():
    assert SHIPPED, "recipes/ holds no recipe"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_validates(path, cli):
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok:")


def test_interpolation_and_overrides(write_recipe):
    r = load_recipe(write_recipe(BASE), ["stages.q.sample=2", "vars.n=9"])
    assert r.stages["q"].options.sample == 2
    r = load_recipe(write_recipe(BASE), ["vars.n=2"])
    assert r.stages["q"].options.sample == 2  # ${vars.n} resolves after overrides
    assert r.order == ["q", "c"]
    r = load_recipe(write_recipe(BASE), ["stages.q.sets=[technology]", "seed=5"])
    assert r.stages["q"].options.sets == ["technology"] and r.seed == 5


def _mutate(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


# (recipe text, overrides, expected field path, fragment of the message)
MALFORMED = [
    ("top-level typo", BASE.replace("seed: 1", "sede: 1"), [], "sede", "unknown key (did you mean 'seed'?)"),
    ("missing name", BASE.replace("name: t\n", ""), [], "name", "missing required key"),
    ("bad name", BASE.replace("name: t", "name: 'my recipe'"), [], "name", "should match pattern"),
    ("seed not int", BASE.replace("seed: 1", "seed: abc"), [], "seed", "valid integer"),
    ("negative seed", BASE.replace("seed: 1", "seed: -1"), [], "seed", "greater than or equal to 0"),
    ("no stages", "name: t\n", [], "stages", "missing required key"),
    ("empty stages", "name: t\nstages: {}\n", [], "stages", "at least 1"),
    ("stage not mapping", "name: t\nstages: {q: 3}\n", [], "stages.q", "expected a mapping"),
    ("missing uses", _mutate("{uses: questions, ", "{"), [], "stages.q.uses", "missing required key"),
    (
        "unknown stage",
        _mutate("uses: questions", "uses: questons"),
        [],
        "stages.q.uses",
        "unknown stage 'questons' (did you mean 'questions'?)",
    ),
    ("option typo", _mutate("sample:", "samplng:"), [], "stages.q.samplng", "unknown key (did you mean 'sample'?)"),
    ("option wrong type", _mutate('"${vars.n}"', "many"), [], "stages.q.sample", "valid integer"),
    ("option out of range", _mutate('"${vars.n}"', "0"), [], "stages.q.sample", "greater than or equal to 1"),
    (
        "unknown question set",
        _mutate("climate]", "climat]"),
        [],
        "stages.q.sets[1]",
        "unknown question set 'climat' (did you mean 'climate'?)",
    ),
    (
        "missing file",
        _mutate("sets: [election, climate]", "files: [nope.csv]"),
        [],
        "stages.q.files[0]",
        "file not found: nope.csv",
    ),
    ("no sets nor files", _mutate("sets: [election, climate], ", ""), [], "stages.q", "at least one question set"),
    (
        "unknown input",
        _mutate("inputs: [q]", "inputs: [qq]"),
        [],
        "stages.c.inputs[0]",
        "unknown stage 'qq' (did you mean 'q'?)",
    ),
    ("self input", _mutate("inputs: [q]", "inputs: [c]"), [], "stages.c.inputs[0]", "cannot read its own output"),
    (
        "cycle",
        BASE + "  d: {uses: 'toy_stages:counter', inputs: [e]}\n  e: {uses: 'toy_stages:counter', inputs: [d]}\n",
        [],
        "stages",
        "cycle in inputs: d -> e -> d",
    ),
    (
        "too many inputs",
        _mutate("sample:", "inputs: [c], sample:"),
        [],
        "stages.q.inputs",
        "takes no inputs (a source stage), got 1",
    ),
    ("duplicate input", _mutate("inputs: [q]", "inputs: [q, q]"), [], "stages.c.inputs", "lists a stage twice"),
    (
        "dangling interpolation",
        _mutate("${vars.n}", "${vars.m}"),
        [],
        "stages.q.sample",
        "${vars.m} refers to a key that does not exist",
    ),
    ("env resolver", _mutate('"${vars.n}"', '"${oc.env:HOME}"'), [], "stages.q.sample", "resolvers like"),
    ("invalid yaml", "name: t\nstages:\n  q: [unclosed\n", [], "recipe.yaml:", "invalid YAML"),
    ("not a mapping", "- a\n- b\n", [], "", "must be a YAML mapping"),
    (
        "backend without type",
        BASE.replace("{type: transformers}", "{model: x}"),
        [],
        "backends.small.type",
        "missing required key",
    ),
    (
        "unknown backend type",
        BASE.replace("type: transformers", "type: transformer"),
        [],
        "backends.small.type",
        "unknown backend type 'transformer' (did you mean 'transformers'?)",
    ),
    (
        "backend typo",
        BASE.replace("{type: transformers}", "{type: transformers, modle: x}"),
        [],
        "backends.small.modle",
        "unknown key (did you mean 'model'?)",
    ),
    (
        "backend bad value",
        BASE.replace("{type: transformers}", "{type: transformers, batch_size: 0}"),
        [],
        "backends.small.batch_size",
        "greater than or equal to 1",
    ),
    ("override syntax", BASE, ["stages.q.sample"], "", "expected key=value"),
    ("override typo", BASE, ["stages.q.sampel=2"], "stages.q.sampel", "unknown key (did you mean 'sample'?)"),
    ("override wrong type", BASE, ["stages.c.n_rows=lots"], "stages.c.n_rows", "valid integer"),
    (
        "hook not importable",
        _mutate("toy_stages:counter", "no_such_module:thing"),
        [],
        "stages.c.uses",
        "cannot import stage hook",
    ),
    (
        "hook not a stage",
        _mutate("toy_stages:counter", "toy_stages:NotAStage"),
        [],
        "stages.c.uses",
        "is not a stage: it lacks Options, run",
    ),
    (
        "operational out of range",
        _mutate("inputs: [q]", "inputs: [q], batch_size: 0"),
        [],
        "stages.c.batch_size",
        "greater than or equal to 1",
    ),
    (
        "publish unknown stage",
        BASE + "publish: {profile: local, stages: [qq]}\n",
        [],
        "publish.stages[0]",
        "unknown stage 'qq'",
    ),
    (
        "publish typo",
        BASE + "publish: {profile: local, layuot: per_stage}\n",
        [],
        "publish.layuot",
        "unknown key (did you mean 'layout'?)",
    ),
]


@pytest.mark.parametrize("text,overrides,path,fragment", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_recipe_fails_with_one_precise_line(text, overrides, path, fragment, write_recipe, cli):
    recipe = write_recipe(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, overrides)
    assert info.value.path == path or (path.endswith(":") and str(info.value).startswith(str(recipe) + ":")), str(
        info.value
    )
    assert fragment in str(info.value)

    result = (
        cli("validate", recipe)
        if not overrides
        else cli("plan", recipe, *overrides, "--runs-dir", recipe.parent / "runs")
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


def test_missing_recipe_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "no such recipe file" in result.stderr


def test_validate_reports_every_file(cli, write_recipe):
    good = write_recipe(BASE, "good.yaml")
    bad = write_recipe(BASE.replace("seed: 1", "sede: 1"), "bad.yaml")
    result = cli("validate", good, bad)
    assert result.exit_code == 2
    assert "ok: " in result.stdout and "sede: unknown key" in result.stderr


def test_recipe_comments_survive(write_recipe):
    text = textwrap.dedent("""\
        name: commented  # a comment
        stages:
          q:
            uses: questions   # the registry name
            sets: [election]
        """)
    assert load_recipe(write_recipe(text)).stages["q"].options.sets == ["election"]
