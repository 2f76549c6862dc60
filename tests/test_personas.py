"""The personas stage on the tiny model: every style runs, garbage lands in failures with reasons, drift is
measured, and a build interrupted mid-stage resumes without asking the model again for finished requests."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from factory.census import vocab
from factory.errors import StageError
from factory.personas import drift
from factory.recipe import load_recipe
from factory.runner import Runner

STYLES = ["objective_table", "subjective_table", "descriptive", "reflective"]


def recipe(tmp_path, tiny_path, extra: str = "") -> str:
    path = tmp_path / "r.yaml"
    path.write_text(f"""\
name: p
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 4}}
stages:
  people: {{uses: meta_personas, geographies: [WY], n_per_geography: 40}}
  personas:
    uses: personas
    inputs: [people]
    backend: tiny
    sample: 6
    batch_size: 3
    max_tokens: 300
    max_retries: 1
{extra}""")
    return path


def build(path, runs, **kw):
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    runner.build(**kw)
    return runner


def test_every_style_runs_and_nothing_is_dropped(tmp_path, tiny_path):
    runner = build(recipe(tmp_path, tiny_path), tmp_path / "runs")
    store = runner.store("personas")
    data = load_from_disk(str(store.data_dir)).to_pandas()
    manifest = store.manifest()
    failures = load_from_disk(str(store.failures_dir)).to_pandas() if store.failures_dir.exists() else None
    n_fail = 0 if failures is None else len(failures)
    assert len(data) + n_fail == 6 * len(STYLES)  # each person x style is a row or a kept failure
    failed_styles = set() if failures is None else {json.loads(r)["style"] for r in failures["record"]}
    assert set(data["style"]) | failed_styles == set(STYLES)
    if failures is not None:
        assert failures["reason"].str.len().min() > 0 and "record" in failures.columns
    for _, row in data[data["style"] != "descriptive"].iterrows():
        json.loads(row["persona"])  # table and reflective personas are valid JSON
    assert manifest["metrics"]["backend_calls"] > 0
    drift_ds = load_from_disk(str(store.dir / "drift")).to_pandas()
    assert set(drift_ds["style"]) == set(data["style"])
    assert {"age", "sex", "state", "mentions_politics"} <= set(drift_ds["field"])
    assert (store.dir / "artifacts" / "drift.png").exists()
    assert set(manifest["summary"]["styles"]) == set(data["style"])
    assert len(data) > 0


def test_interrupted_build_does_not_ask_the_model_twice(tmp_path, tiny_path, monkeypatch):
    """Each answer is in the request cache as soon as the model finishes it: a build killed half-way through the
    model's answers, then resumed, has the model answer every request exactly once over both runs."""
    from factory.llm import backend
    from factory.llm.transformers_backend import TransformersBackend

    answered: list[str] = []  # requests the model finished (follow-ups and retries included)
    original = TransformersBackend.generate
    limit = {"n": 10**9}

    def counting(self, requests, follow=None):
        sent = list(requests)

        def counted(i, result):
            more = follow(i, result)  # the client stores the answer before it returns
            answered.append(sent[i].key(self.model_id, self.revision))
            sent.extend(more)
            if len(answered) >= limit["n"]:
                raise RuntimeError("killed")
            return more

        return original(self, requests, counted)

    monkeypatch.setattr(TransformersBackend, "generate", counting)
    monkeypatch.setattr(backend, "_LOADED", {})
    path = recipe(tmp_path, tiny_path)
    clean = build(path, tmp_path / "clean")
    total = len(answered)
    answered.clear()
    limit["n"] = total // 2  # dies half-way, inside the second batch
    with pytest.raises(StageError, match="killed"):
        build(path, tmp_path / "runs")
    first = len(answered)
    limit["n"] = 10**9
    resumed = build(path, tmp_path / "runs")
    assert len(answered) == len(set(answered)) == total, (first, len(answered), total)
    a = load_from_disk(str(clean.store("personas").data_dir)).to_pandas()
    b = load_from_disk(str(resumed.store("personas").data_dir)).to_pandas()
    assert a.equals(b)
    assert resumed.store("personas").manifest()["metrics"]["requests_cached"] > 0


def test_custom_template_style(tmp_path, tiny_path):
    (tmp_path / "mine.jinja").write_text("Write one sentence about a {{ facts.age }}-year-old from {{ facts.state }}.")
    extra = "    styles: [mine]\n    templates: {mine: {template: mine.jinja, max_tokens: 60}}\n"
    runner = build(recipe(tmp_path, tiny_path, extra), tmp_path / "runs")
    store = runner.store("personas")
    rows = len(load_from_disk(str(store.data_dir)))
    fails = len(load_from_disk(str(store.failures_dir))) if store.failures_dir.exists() else 0
    assert rows + fails == 6


def test_unknown_style_is_a_recipe_error(tmp_path, tiny_path):
    from factory.errors import RecipeError

    with pytest.raises(RecipeError, match=r"unknown style 'descriptiv' \(did you mean 'descriptive'\?\)"):
        load_recipe(recipe(tmp_path, tiny_path, "    styles: [descriptiv]\n"))


NAMES = {
    "sex": vocab.SEX,
    "race_ethnicity": ["Hispanic or Latino", "White"],
    "education": vocab.EDUCATION,
    "employment_status": vocab.EMPLOYMENT,
    "marital_status": vocab.MARITAL,
}
META = {
    "age": 42,
    "age_band": 5,
    "sex": 1,
    "race_ethnicity": 1,
    "geography_name": "Ohio",
    "education": 5,
    "employment_status": 0,
    "marital_status": 1,
}


def test_drift_reads_json_and_prose():
    expect = drift.expected(META, NAMES)
    assert expect["age"] == (40, 44) and expect["education"] == "Bachelor's degree"
    table = {
        "AGE": 43,
        "SEX": "Female",
        "RACE": "White",
        "STATE": "Texas",
        "EDUCATION": "Bachelor's degree",
        "EMPLOYMENT_STATUS": "Employed",
        "MARITAL_STATUS": "Divorced",
    }
    got = drift.compare(expect, drift.stated("objective_table", json.dumps(table), table))
    assert got == {
        "age": False,
        "sex": False,
        "race": False,
        "state": True,
        "education": False,
        "employment": False,
        "marital_status": True,
    }
    prose = "Maria is a 29-year-old Latina nurse in Columbus, Ohio. She loves her job and her family."
    got = drift.compare(expect, drift.stated("descriptive", prose, None))
    assert got["age"] is True and got["sex"] is False and got["state"] is False and got["race"] is True
    assert got["education"] is None  # not stated
    assert drift.text_measures("He votes Republican.")["mentions_politics"] == 1.0
    assert drift.distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
