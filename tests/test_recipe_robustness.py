"""Hostile or careless recipes: every one is a one-line `RecipeError` naming the field, key or line (exit 2 from
the CLI), found quickly, before anything runs: alias bombs, aliases inside themselves, deep nesting, duplicate
keys, huge integers, booleans for numbers, names with a newline or 300 characters, malformed or misbehaving
`module:attr` hooks, template styles that shadow built-ins or loop without bound, repeated or empty geographies."""

from __future__ import annotations

import time

import pytest

from factory.errors import DataError, RecipeError
from factory.recipe import load_recipe

Q = "stages: {q: {uses: questions, sets: [election]}}\n"


def refused(write_recipe, text: str, match: str, overrides=()) -> str:
    started = time.monotonic()
    with pytest.raises(RecipeError, match=match) as info:
        load_recipe(write_recipe(text), overrides)
    assert time.monotonic() - started < 5
    assert "\n" not in str(info.value)
    return str(info.value)


def test_an_alias_bomb_is_refused_before_it_expands(write_recipe):
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "name: bomb\nvars:\n" + "".join(f"  {line}\n" for line in levels) + Q
    assert len(text) < 700
    refused(write_recipe, text, r"recipe.yaml:\d+:\d+: more than 20000 values once aliases are expanded")


def test_an_alias_bomb_in_an_override_is_refused(write_recipe):
    parts = ["&a [" + ",".join(["1"] * 10) + "]"]
    for prev, name in zip("abcd", "bcde"):
        parts.append(f"&{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    override = f"vars.x=[{','.join(parts)}]"
    refused(write_recipe, "name: t\n" + Q, r"vars\.x: override .*more than 20000 values", [override])


@pytest.mark.parametrize("text", ["vars: &a {x: *a}\n", "vars: &a [1, *a]\n"])
def test_an_alias_inside_itself_is_refused(write_recipe, text):
    refused(write_recipe, "name: t\n" + text + Q, "an alias refers to a value that contains it")


@pytest.mark.parametrize("depth", [60, 5000])
def test_deep_nesting_is_one_line(write_recipe, depth):
    refused(write_recipe, "name: t\nvars: {x: " + "[" * depth + "]" * depth + "}\n" + Q, "nested deeper than 40")


def test_a_duplicate_key_names_the_key_and_both_lines(write_recipe):
    text = "name: t\nseed: 1\nseed: 2\n" + Q
    refused(write_recipe, text, r"recipe.yaml:3:1: duplicate key 'seed' \(first given on line 2\)")
    refused(write_recipe, "name: t\nstages:\n  q: {uses: questions}\n  q: {uses: questions}\n", "duplicate key 'q'")


def test_yaml_merge_keys_may_still_override(write_recipe):
    r = load_recipe(write_recipe("name: t\nvars:\n  base: &b {n: 1, m: 2}\n  mine: {<<: *b, n: 3}\n" + Q))
    assert r.vars["mine"] == {"n": 3, "m": 2}


def test_a_five_thousand_digit_integer_is_out_of_range(write_recipe):
    refused(write_recipe, "name: t\nseed: " + "9" * 5000 + "\n" + Q, "integer of 5000 digits is out of range")
    refused(write_recipe, "name: t\n" + Q, "out of range", ["seed=" + "9" * 5000])
    refused(write_recipe, "name: t\nseed: 99999999999999999999\n" + Q, "seed: Input should be less than")


@pytest.mark.parametrize(
    "text, field",
    [
        ("seed: true\n" + Q, "seed"),
        ("seed: '3'\n" + Q, "seed"),
        ("version: true\n" + Q, "version"),
        ("stages: {q: {uses: questions, sets: [election], sample: true}}\n", "stages.q.sample"),
    ],
)
def test_a_boolean_or_text_is_not_an_integer(write_recipe, text, field):
    refused(write_recipe, "name: t\n" + text, f"^{field}: ")


@pytest.mark.parametrize(
    "text, field",
    [
        ('name: "t\\n"\n' + Q, "name"),
        ("name: " + "a" * 300 + "\n" + Q, "name"),
        ('name: t\nstages: {"q\\n": {uses: questions, sets: [election]}}\n', r"stages\.'q\\n'"),
        ("name: t\nstages: {" + "a" * 300 + ": {uses: questions}}\n", r"stages\.'aaaa"),
        ('name: t\nbackends: {"b\\n": {type: transformers}}\n' + Q, r"backends\.'b\\n'"),
    ],
)
def test_names_match_in_full_and_are_at_most_100_characters(write_recipe, text, field):
    refused(write_recipe, text, f"^{field}")


def test_a_100_character_name_is_fine(write_recipe):
    assert load_recipe(write_recipe("name: " + "a" * 100 + "\n" + Q)).name == "a" * 100


@pytest.mark.parametrize("uses", ['":x"', '"x:"', '"a b:c"', '"os:path:join"', '"1mod:x"', '"mod:x-y"'])
def test_a_hook_must_be_module_colon_attr(write_recipe, uses):
    text = f"name: t\nstages: {{q: {{uses: {uses}}}}}\n"
    refused(write_recipe, text, r"stages\.q\.uses: stage hook .* is not of the form")


@pytest.mark.parametrize(
    "body, match",
    [
        ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
        ("def f(:\n", "SyntaxError"),
        ("raise RuntimeError('boom\\nmore')\n", "RuntimeError: boom more"),
    ],
)
def test_a_hook_that_misbehaves_on_import_is_a_recipe_error(write_recipe, tmp_path, monkeypatch, body, match, cli):
    name = f"hook_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_recipe(f"name: t\nstages: {{q: {{uses: '{name}:stage'}}}}\n")
    refused(write_recipe, f"name: t\nstages: {{q: {{uses: '{name}:stage'}}}}\n", f"cannot import stage hook .*{match}")
    result = cli("validate", path)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "cannot import stage hook" in result.stderr


def test_a_dotted_hook_attribute_resolves(write_recipe, tmp_path, monkeypatch):
    (tmp_path / "dotted_hook_mod.py").write_text("import toy_stages\nclass Holder:\n    counter = toy_stages.counter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = "name: t\nstages:\n  a: {uses: 'toy_stages:counter'}\n"
    r = load_recipe(write_recipe(text + "  c: {uses: 'dotted_hook_mod:Holder.counter', inputs: [a]}\n"))
    assert r.stages["c"].uses == "dotted_hook_mod:Holder.counter"


PERSONAS = """\
name: t
backends: {s: {type: transformers}}
stages:
  people: {uses: meta_personas, geographies: [WY], n_per_geography: 3}
  p:
    uses: personas
    inputs: [people]
    backend: s
    styles: [descriptive]
    templates: {descriptive: {template: mine.jinja}}
"""


def test_a_template_named_like_a_built_in_style_is_an_error(write_recipe, tmp_path):
    (tmp_path / "mine.jinja").write_text("about {{ facts.age }}")
    refused(write_recipe, PERSONAS, r"stages\.p: templates\.descriptive: 'descriptive' is a built-in style")


@pytest.mark.parametrize(
    "template, match",
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{% set l = [0,1,2,3,4,5,6,7,8,9] %}" + "{% for a in l %}" * 6 + "x" + "{% endfor %}" * 6, "loop iterations"),
        ("{% for i in range(50000) %}{{ 'abcdefghij' }}{% endfor %}", "more than 200000 characters"),
        ("{{ 'x' * 1000000000 }}", "repeated sequence"),
        ("{{ 2 ** 99999999 }}", "more than 4096 bits"),
        ("{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}", "RecursionError"),
    ],
)
def test_a_template_that_loops_without_bound_is_stopped(tmp_path, template, match):
    from factory.prompts import render

    (tmp_path / "t.jinja").write_text(template)
    started = time.monotonic()
    with pytest.raises(DataError, match=match):
        render(tmp_path / "t.jinja", facts={"age": 42})
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("template", ["{% set _ = facts.update({'age': 5}) %}", "{{ facts.pop('age') }}"])
def test_a_template_cannot_change_the_facts_later_styles_see(tmp_path, template):
    from factory.prompts import render

    facts = {"age": 42, "state": "WY"}
    (tmp_path / "t.jinja").write_text(template)
    with pytest.raises(DataError, match="unsafe"):
        render(tmp_path / "t.jinja", facts=facts)
    assert facts == {"age": 42, "state": "WY"}


def test_loops_ranges_and_arithmetic_within_bounds_still_render(tmp_path):
    from factory.prompts import render

    (tmp_path / "t.jinja").write_text(
        "{% for k, v in facts.items() %}{{ k }}={{ v }} {% endfor %}{{ range(3)|list }} {{ 2 ** 10 }} {{ 'ab' * 2 }}"
    )
    assert render(tmp_path / "t.jinja", facts={"age": 42}) == "age=42 [0, 1, 2] 1024 abab"


@pytest.mark.parametrize("geos, match", [("[WY, WY]", "'WY' is listed twice"), ("[]", "name at least one geography")])
def test_geographies_are_distinct_and_at_least_one(write_recipe, geos, match):
    text = f"name: t\nstages:\n  people: {{uses: meta_personas, geographies: {geos}, n_per_geography: 3}}\n"
    refused(write_recipe, text, rf"stages\.people\.geographies: {match}")
