"""meta_personas: fidelity to the census at N=100,000, rule checks, determinism, paper mode, other sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from factory.recipe import load_recipe
from factory.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def build(path, runs, *overrides):
    runner = Runner(load_recipe(path, list(overrides)), runs_dir=runs, progress=False)
    runner.build()
    store = runner.store(next(iter(runner.recipe.stages)))
    return store


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """100,000 persons in each of a big state, DC, two small states."""
    tmp = tmp_path_factory.mktemp("big")
    path = tmp / "r.yaml"
    path.write_text(
        "name: big\nseed: 0\nstages:\n  people: {uses: meta_personas, geographies: [NY, DC, WY, VT], "
        "n_per_geography: 100000}\n"
    )
    store = build(path, tmp / "runs")
    return store, load_from_disk(str(store.data_dir)).to_pandas(), load_from_disk(str(store.dir / "fidelity"))


def test_every_table_within_tvd_001_at_100k(big):
    _, _, fidelity = big
    df = fidelity.to_pandas()
    assert set(df["geography"]) == {"NY", "DC", "WY", "VT"}
    assert len(df) >= 4 * 20
    worst = df.sort_values("tvd").iloc[-1]
    assert df["tvd"].max() <= 0.01, f"{worst['geography']} {worst['margin']}: {worst['tvd']:.4f}"
    assert df["tvd_oneway"].max() <= 0.01
    for table in ("S0101", "S1201", "S1501", "S2301", "S2401", "S2403", "S2701", "S2101", "S1601", "DP02"):
        assert table in set(df["table"]), table
    by_race = {m for m in df["margin"] if "race/ethnicity" in m}
    assert len(by_race) == 5, by_race  # education, employment, marital, veteran by race; the adults' race mix


def test_rule_checks_hold(big):
    store, df, _ = big
    manifest = store.manifest()
    rules = {k: v for k, v in manifest["metrics"].items() if k.startswith("rule_violations.")}
    assert rules and all(v == 0 for v in rules.values()), rules
    names = lambda col: load_from_disk(str(store.data_dir)).features[col].names  # noqa: E731
    edu, emp, occ, rel, mar = (
        names(c) for c in ("education", "employment_status", "occupation", "relationship", "marital_status")
    )
    assert not ((df.education == edu.index("Graduate or professional degree")) & (df.age < 22)).any()
    not_employed = df.employment_status != emp.index("Employed")
    assert (df.occupation[not_employed] == occ.index("None")).all()
    assert (df.occupation[~not_employed] != occ.index("None")).all()
    spouse = df.relationship == rel.index("Spouse")
    assert (df.marital_status[spouse] == mar.index("Now married, except separated")).all()
    old = df.age >= 65
    assert (df.relationship[old] == rel.index("Child")).mean() < 0.02  # the study had 26% of 65+ as children
    assert df.age.min() >= 18 and df.age.max() <= 99


def test_widowed_teenagers_and_insured_elderly_follow_the_census(big):
    from factory.census import acs2018

    _, df, _ = big
    for geo in ("NY", "WY"):
        people = df[df.geography_name == acs2018.geographies().set_index("geo").loc[geo, "name"]]
        teen = people[people.age <= 19]
        widowed = (teen.marital_status == 3).mean()  # vocab.MARITAL index of "Widowed"
        g = acs2018._Geo(geo)
        census_15_19 = max(g.e("S1201", "S1201_C03_003E"), g.e("S1201", "S1201_C03_010E")) / 100
        assert widowed <= census_15_19 + 0.005
        for lo, hi, row in ((65, 74, 9), (75, 99, 10)):
            group = people[(people.age >= lo) & (people.age <= hi) & (people.employment_status != 2)]
            insured = (group.health_insurance == 0).mean()
            census = g.e("S2701", f"S2701_C02_{row:03d}E") / g.e("S2701", f"S2701_C01_{row:03d}E")
            assert abs(insured - census) < 0.01, (geo, lo, insured, census)


def test_weights_sum_to_the_adult_population(big):
    from factory.census import acs2018

    _, df, _ = big
    ny = df[df.person_id.str.startswith("NY-")]
    assert ny.weight.sum() == pytest.approx(acs2018.population("NY"), rel=1e-9)


def test_big_five_columns(big):
    _, df, _ = big
    for t in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"):
        assert df[t].between(0, 1).all()
    assert df.neuroticism.corr(df.extraversion) < -0.3  # the fitted residual correlation is -0.42


def test_fidelity_plot_and_summary(big):
    store, _, _ = big
    summary = store.manifest()["summary"]
    assert summary["tvd_max"] <= 0.01 and summary["tables_over_0.01"] == []
    png = store.dir / "artifacts" / "fidelity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (store.dir / "artifacts" / "card_section.md").read_text()
    assert "Dependency structure" in card and "occupation              | sex, employment" in card
    assert "| core: S1201 marital status x age x sex |" in card and "Big Five" in card
    assert "| veteran: S2101 veteran x race/ethnicity |" in card
    # no shipped table crosses age with race: the card and the manifest say that joint is an assumption
    assert summary["unconstrained_pairs"]["age_band x race_ethnicity"] == 4
    assert "## Joints that are assumptions" in card and "- age band x race ethnicity" in card


SMALL = (
    "name: small\nseed: {seed}\nstages:\n"
    "  people: {{uses: meta_personas, geographies: [WY, DC], n_per_geography: 2000}}\n"
)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / f"{name}.yaml").write_text(SMALL.format(seed=seed))
    a = build(tmp_path / "a.yaml", tmp_path / "ra")
    b = build(tmp_path / "b.yaml", tmp_path / "rb")
    c = build(tmp_path / "c.yaml", tmp_path / "rc")
    assert _files(a.data_dir) == _files(b.data_dir)
    assert _files(a.dir / "fidelity") == _files(b.dir / "fidelity")
    assert load_from_disk(str(a.data_dir))["age"] != load_from_disk(str(c.data_dir))["age"]


def test_n_total_is_split_by_population(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: p\nstages:\n  people: {uses: meta_personas, geographies: [CA, WY, DC], n_total: 1001, "
        "bigfive: {mode: none}}\n"
    )
    store = build(path, tmp_path / "runs")
    df = load_from_disk(str(store.data_dir)).to_pandas()
    counts = df.person_id.str[:2].value_counts()
    assert counts.sum() == 1001 and counts["CA"] > 900 and counts["WY"] >= 1
    assert "openness" not in df.columns


def test_paper_mode_strings(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: p\nstages:\n  meta: {uses: meta_personas, mode: paper, geographies: [NY, WY], "
        "n_per_geography: 1000, bigfive: {mode: none}}\n"
    )
    store = build(path, tmp_path / "runs")
    ds = load_from_disk(str(store.data_dir))
    assert ds.column_names == ["person_id", "STATE", "AGE", "SEX", "RACE", "weight"]
    assert ds.features["AGE"].names == [
        "18-19",
        "20-24",
        "25-29",
        "30-34",
        "35-44",
        "45-54",
        "55-64",
        "65-74",
        "75-84",
        "85+",
    ]
    assert "Hispanic or Latino" in ds.features["RACE"].names and "Black" in ds.features["RACE"].names
    assert ds.to_pandas().STATE.value_counts().to_dict() == {"NY": 1000, "WY": 1000}


def test_big_five_targets_preset(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: p\nstages:\n  people: {uses: meta_personas, geographies: [WY], n_per_geography: 8, "
        "bigfive: {mode: targets, targets: mbti_roles}}\n"
    )
    df = load_from_disk(str(build(path, tmp_path / "runs").data_dir)).to_pandas()
    assert df.openness.tolist()[:4] == pytest.approx([0.9, 0.9, 0.25, 0.4], abs=1e-6)  # round-robin, spread 0


def test_acs2023_vintage_builds_within_tolerance(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: v\nstages:\n  people: {uses: meta_personas, source: acs2023, geographies: [WY], "
        "n_per_geography: 20000}\n"
    )
    store = build(path, tmp_path / "runs")
    fid = load_from_disk(str(store.dir / "fidelity")).to_pandas()
    assert fid["tvd"].max() <= 0.01
    assert any(t.startswith("DP05") for t in fid["margin"])


def test_cambridge_recipe_builds(tmp_path):
    store = build(ROOT / "recipes" / "cambridge_ma.yaml", tmp_path / "runs", "stages.people.n_per_geography=3000")
    df = load_from_disk(str(store.data_dir)).to_pandas()
    assert len(df) == 3000 and df.age.min() >= 18
    assert (df.geography_name == "Cambridge, MA").all()
    fid = load_from_disk(str(store.dir / "fidelity")).to_pandas()
    assert set(fid["margin"]) >= {"cambridge_ma_marginals age x sex", "cambridge_ma_marginals education x age"}
    assert fid["tvd"].max() <= 0.01
    assert json.loads((store.manifest_path).read_text())["summary"]["geographies"] == 1
