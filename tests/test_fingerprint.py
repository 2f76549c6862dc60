"""Fingerprints ignore operational knobs and follow everything that changes output."""

from __future__ import annotations

import pytest
import toy_stages

from factory import registry
from factory.fingerprint import recipe_fingerprints
from factory.recipe import load_recipe

RECIPE = """\
name: fp
seed: 7
backends:
  small: {type: transformers, model: tiny}
  remote: {type: openai, model: m}
stages:
  a: {uses: "toy_stages:counter", n_rows: 5, prompt: prompt.txt}
  b: {uses: "toy_stages:counter", inputs: [a]}
  q: {uses: questions, sets: [election]}
"""


@pytest.fixture
def recipe_path(write_recipe, tmp_path):
    (tmp_path / "prompt.txt").write_text("You are {{ persona }}.\n")
    return write_recipe(RECIPE)


def fps(path, *overrides):
    return recipe_fingerprints(load_recipe(path, list(overrides)))


@pytest.mark.parametrize(
    "override",
    [
        "stages.a.batch_size=2",
        "stages.a.sleep_s=0.5",
        "stages.a.crash_at_batch=3",
        "backends.small.batch_size=64",
        "backends.small.device=cuda:1",
        "backends.remote.base_url=http://127.0.0.1:9999/v1",
        "backends.remote.concurrency=64",
        "backends.remote.timeout_s=5",
    ],
)
def test_operational_fields_leave_fingerprints_alone(recipe_path, override):
    assert fps(recipe_path, override) == fps(recipe_path)


def test_semantic_option_changes_stage_and_downstream(recipe_path):
    base, changed = fps(recipe_path), fps(recipe_path, "stages.a.n_rows=6")
    assert changed["a"] != base["a"]
    assert changed["b"] != base["b"]  # upstream fingerprint is part of the downstream one
    assert changed["q"] == base["q"]


def test_prompt_byte_changes_fingerprint(recipe_path, tmp_path):
    base = fps(recipe_path)
    (tmp_path / "prompt.txt").write_text("You are {{ persona }}!\n")
    changed = fps(recipe_path)
    assert changed["a"] != base["a"] and changed["b"] != base["b"] and changed["q"] == base["q"]


def test_seed_changes_every_fingerprint(recipe_path):
    base, changed = fps(recipe_path), fps(recipe_path, "seed=8")
    assert all(changed[s] != base[s] for s in base)


def test_stage_version_changes_fingerprint(recipe_path, monkeypatch):
    base = fps(recipe_path)
    monkeypatch.setattr(toy_stages.counter, "VERSION", 2)
    registry.stage.cache_clear()
    try:
        changed = fps(recipe_path)
    finally:
        registry.stage.cache_clear()
    assert changed["a"] != base["a"] and changed["b"] != base["b"] and changed["q"] == base["q"]


def test_renaming_a_stage_changes_its_fingerprint(recipe_path, tmp_path):
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(recipe_path.read_text().replace("  q: {", "  questions: {"))
    assert fps(renamed)["questions"] != fps(recipe_path)["q"]


def test_backend_identity_is_semantic_for_stages_that_use_it(recipe_path):
    base = fps(recipe_path, "stages.a.backend=small")
    assert base != fps(recipe_path)
    changed = fps(recipe_path, "stages.a.backend=small", "backends.small.model=other")
    assert changed["a"] != base["a"] and changed["q"] == base["q"]
    assert fps(recipe_path, "stages.a.backend=small", "backends.small.revision=abc")["a"] != base["a"]
    assert fps(recipe_path, "stages.a.backend=small", "backends.small.dtype=bfloat16")["a"] != base["a"]
    # a backend the stage does not use changes nothing
    assert fps(recipe_path, "stages.a.backend=small", "backends.remote.model=x") == base


def test_unknown_backend_reference_is_an_error(recipe_path):
    from factory.errors import RecipeError

    with pytest.raises(RecipeError, match=r"stages.a.backend: unknown backend 'smal' \(did you mean 'small'\?\)"):
        fps(recipe_path, "stages.a.backend=smal")


def test_recipe_name_and_description_do_not_matter(recipe_path, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(recipe_path.read_text().replace("name: fp", "name: other\ndescription: hello"))
    assert fps(other) == fps(recipe_path)
