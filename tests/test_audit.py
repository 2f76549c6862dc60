"""The `audit` stage: the meta_personas fidelity report for people the factory did not draw, what could not be
compared and why, on the shipped recipe (a Nemotron-Personas-shaped fixture) and on meta_personas' own people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from datasets import load_from_disk

from factory.census import acs2018, vocab
from factory.recipe import load_recipe
from factory.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def built(runner: Runner, stage: str, extra: str | None = None):
    data = runner.store(stage).data_dir
    return load_from_disk(str(data if extra is None else data.parent / extra))


def test_the_shipped_recipe_audits_a_foreign_schema_offline_and_says_what_it_could_not_compare(tmp_path):
    runner = Runner(load_recipe(ROOT / "recipes" / "audit_personas.yaml"), runs_dir=tmp_path / "runs", progress=False)
    runner.build(only=["people", "audit"])  # the audit alone: no model
    report = built(runner, "audit").to_pandas()
    assert set(report["geography"]) == {"NY", "WY", "DC"}
    assert set(report["margin"]) == {
        "S0101 age x sex",
        "S1501 education x sex (18-24)",
        "S1501 education x sex (25+)",
        "S1501 education x age x sex (25+)",
        "S1201 marital status x age x sex",
    }

    # S0101 in NY recomputed by hand: adult shares by age band x sex, fixture against the census table
    people = pq.read_table(ROOT / "recipes/data/nemotron_like/personas.parquet").to_pandas()
    ny = people[people["state"] == "NY"]
    (margin,) = [m for m in acs2018.geo_spec("NY").core_margins if m.name == "S0101 age x sex"]
    ours = np.zeros(margin.table.shape)
    for age, sex in zip(ny["age"], ny["sex"]):
        band = next(i for i, (lo, hi) in enumerate(vocab.AGE_BANDS) if lo <= age <= hi)
        ours[margin.maps["age_band"][band], vocab.SEX.index(sex)] += 1
    census = np.asarray(margin.table, dtype=float)
    expected = np.abs(ours / ours.sum() - census / census.sum()).sum() / 2
    row = report[(report["geography"] == "NY") & (report["margin"] == "S0101 age x sex")].iloc[0]
    assert row["persons"] == len(ny) and abs(row["tvd"] - expected) < 1e-12

    left_out = built(runner, "audit", "not_compared").to_pandas()
    reasons = dict(zip(left_out["what"], left_out["reason"]))
    assert reasons["S2101 race/ethnicity (civilians 18+)"].startswith("needs race_ethnicity, employment_status")
    assert reasons["S0501 nativity x age"] == "needs citizenship, which the dataset does not have"
    assert reasons["race_ethnicity"] == "no 'race_ethnicity' column"
    oneway = built(runner, "audit", "oneway").to_pandas()
    assert set(oneway["attribute"]) == {"age_band", "sex", "education", "marital_status"}

    summary = runner.store("audit").manifest()["summary"]
    lacking = "needs employment_status, which the dataset does not have"
    assert summary["not_compared"]["S2301 employment x age"] == lacking
    artifacts = runner.store("audit").data_dir.parent / "artifacts"
    card = (artifacts / "card_section.md").read_text()
    assert (artifacts / "fidelity.png").stat().st_size > 1000 and "How these people were built" not in card
    assert "Not compared: S1201 marital status x race/ethnicity (15-17 taken out) (needs race_ethnicity" in card


def test_people_outside_the_census_geographies_are_listed_not_compared(tmp_path):
    """ACS 2023 (as shipped) has the 50 states, not DC: DC's people are listed, the other states audited."""
    runner = Runner(
        load_recipe(ROOT / "recipes" / "audit_personas.yaml", ["stages.audit.census.source=acs2023"]),
        runs_dir=tmp_path / "runs",
        progress=False,
    )
    runner.build(only=["people", "audit"])
    people = pq.read_table(ROOT / "recipes/data/nemotron_like/personas.parquet").to_pandas()
    left_out = built(runner, "audit", "not_compared").to_pandas()
    dc = left_out[left_out["geography"] == "DC"]
    reason = f"{(people['state'] == 'DC').sum()} persons in a geography census source acs2023 does not have"
    assert dc["reason"].tolist() == [reason]
    assert set(built(runner, "audit").to_pandas()["geography"]) == {"NY", "WY"}


def test_auditing_meta_personas_own_people_reproduces_its_fidelity_report(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "name: self\nstages:\n"
        "  people: {uses: meta_personas, geographies: [WY], n_per_geography: 3000, bigfive: {mode: none}}\n"
        "  audit: {uses: audit, inputs: [people]}\n"
    )
    runner = Runner(load_recipe(tmp_path / "r.yaml"), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    own = built(runner, "people", "fidelity").to_pandas().set_index("margin")
    audited = built(runner, "audit").to_pandas().set_index("margin")
    assert sorted(audited.index) == sorted(own.index)  # every table: the full schema allows them all
    for column in ("persons", "tvd", "max_abs_error", "tvd_oneway", "fit_tvd"):
        assert np.allclose(audited.loc[own.index, column], own[column], rtol=0, atol=1e-12), column
    assert len(built(runner, "audit", "not_compared")) == 0
    oneway = built(runner, "audit", "oneway").to_pandas().set_index("attribute")
    assert oneway.loc["sex", "tvd"] < 0.001 and oneway.loc["citizenship", "persons"] == 3000
