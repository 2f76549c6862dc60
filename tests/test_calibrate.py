"""calibrate: raking repairs a skewed sample; the LLM judge path records every call and re-draws flagged persons
from their own geography's joint; the re-draw loop with a fake judge keeps the census structure (no urn); the
same recipe gives the same bytes; census options that differ from the upstream people are an error."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, load_from_disk

from factory.census import persons, redraw
from factory.census.raking import rake, tvd
from factory.errors import DataError, RecipeError
from factory.recipe import load_recipe
from factory.runner import Runner
from factory.seeds import derive_seed
from factory.stage import StageContext
from factory.stages import calibrate as cal

MAX_ROUNDS = 2


@pytest.fixture(scope="module")
def vermont():
    return redraw.CensusGeography.fit(cal.CensusOptions(), "VT")


def recipe_text(tiny_path, calibrate: str) -> str:
    return f"""\
name: c
seed: 0
backends:
  tiny: {{type: transformers, model: "{tiny_path}", batch_size: 32}}
stages:
  people: {{uses: meta_personas, geographies: [WY, VT], n_per_geography: 20}}
  calibrated:
    uses: calibrate
    inputs: [people]
{calibrate}"""


JUDGED = f"    judge: {{backend: tiny, max_rounds: {MAX_ROUNDS}, temperature: 1.0}}\n"  # greedy: one constant verdict


def build(path, runs):
    runner = Runner(load_recipe(path), runs_dir=runs, progress=False)
    runner.build()
    return runner


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_path):
    tmp = tmp_path_factory.mktemp("judged")
    path = tmp / "r.yaml"
    path.write_text(recipe_text(tiny_path, JUDGED))
    return tmp, build(path, tmp / "runs")


def run_stage(options: cal.Options, people: Dataset):
    ctx = StageContext(recipe="r", stage="calibrate", seed=5)
    (batch,) = cal.plan(options, {"people": people}, ctx)
    ctx.batch = batch
    return cal.run(options, {"people": people}, ctx)


def rule_violations(df) -> dict[str, float]:
    codes = {c: df[c].to_numpy() for c in df.columns if df[c].dtype.kind in "iub"}
    codes["veteran"] = codes["veteran_status"]
    return {k: v for k, v in persons.rule_checks(codes).items() if v}


def test_raking_repairs_a_skewed_sample(vermont):
    people = vermont.people(2000, np.random.default_rng(1))
    sex = np.asarray(people["sex"])
    skew = people.select(np.flatnonzero((sex == 0) | (np.arange(len(sex)) % 5 == 0)))  # 4 of 5 women dropped
    out = run_stage(cal.Options(), skew)
    report = out.extras["raking"].to_pandas().set_index("attribute")
    assert set(report.index) == {"age_band", "sex", "race_ethnicity", "education"}
    assert report.loc["sex", "tvd_before"] > 0.2
    assert (report["tvd_after"] < 1e-3).all(), report
    data = out.data.to_pandas()
    assert data["raking_weight"].sum() == pytest.approx(vermont.spec.population, rel=1e-9)
    assert data.drop(columns=list(cal.ADDED)).equals(skew.to_pandas())  # same persons, order and columns
    assert not data["flagged"].any() and (data["judge_rounds"] == 0).all() and data["replaced_from"].isna().all()
    assert out.data.features["raking_weight"].dtype == "float64"
    assert out.data.features["judge_rounds"].dtype == "int32"
    assert "judgements" not in out.extras  # no judge: raking only
    assert out.metrics["raking.tvd_before.VT.sex"] == report.loc["sex", "tvd_before"]


def test_raking_of_distorted_weights_keeps_the_total_and_respects_trim(vermont):
    people = vermont.people(2000, np.random.default_rng(2))
    age = np.asarray(people["age"])
    weight = np.asarray(people["weight"]) * np.where(age < 40, 3.0, 1.0)
    weight *= vermont.spec.population / weight.sum()  # the same total, the wrong composition
    codes = [np.asarray(people[c], dtype=np.int64) for c in ("age_band", "sex", "race_ethnicity", "education")]
    targets = [vermont.margin(c) for c in ("age_band", "sex", "race_ethnicity", "education")]
    assert tvd(weight, codes[0], targets[0]) > 0.1
    fit = rake(weight, codes, targets, tol=1e-8)
    assert fit.converged and fit.weights.sum() == pytest.approx(weight.sum(), rel=1e-9)
    assert max(tvd(fit.weights, c, t) for c, t in zip(codes, targets)) < 1e-3
    trimmed = rake(weight, codes, targets, tol=1e-8, trim=(0.5, 2.0))
    ratio = trimmed.weights / weight
    assert ratio.min() >= 0.5 * 0.98 and ratio.max() <= 2.0 * 1.02
    assert trimmed.weights.sum() == pytest.approx(weight.sum(), rel=1e-9)
    assert tvd(trimmed.weights, codes[0], targets[0]) < tvd(weight, codes[0], targets[0]) / 3


def test_redraw_with_a_fake_judge_keeps_the_census_joint(vermont):
    people = vermont.people(1000, np.random.default_rng(3))
    orig = people.to_pandas()
    seen: list[tuple[int, int]] = []

    def judge(rows, round_):
        seen.append((round_, len(rows)))
        return [redraw.Verdict("implausible" if p["age"] < 30 else "plausible") for p in rows]

    rng_for = lambda pid, r: np.random.default_rng(derive_seed(7, "calibrate", pid, r))  # noqa: E731
    done = redraw.redraw_flagged(people, judge, vermont.drawer(rng_for), max_rounds=8)
    t = done.table.to_pandas()
    assert not ((t["age"] < 30) & ~t["flagged"]).any()  # nobody under 30 is left unflagged
    assert t["judge_rounds"].max() <= 8 and [r for r, _ in seen] == list(range(len(seen)))
    assert len(done.judgements) == sum(n for _, n in seen) and done.counts["round0.rejected"] == (orig.age < 30).sum()
    replaced = t["judge_rounds"] > 0
    assert (replaced == (orig["age"] < 30)).all()  # exactly the rejected persons were re-drawn
    assert (t.loc[replaced, "replaced_from"] == t.loc[replaced, "person_id"]).all()
    assert t.loc[~replaced, "replaced_from"].isna().all()
    assert (t["person_id"] == orig["person_id"]).all() and (t["weight"] == orig["weight"]).all()
    assert t.loc[~replaced, orig.columns].equals(orig.loc[~replaced])
    assert not rule_violations(t)  # joint structure kept: no employed person without occupation, etc.
    # rejection sampling from the joint: the other attributes follow the census given age >= 30 (bands 30-34 on),
    # not the sample's own counts (the study's urn) and not independent draws
    core = vermont.fitted.core[3:]
    for axis, col in enumerate(["sex", "race_ethnicity", "education", "marital_status", "employment_status"], 1):
        target = core.sum(axis=tuple(i for i in range(core.ndim) if i != axis))
        after = tvd(np.ones(len(t)), t[col].to_numpy(), target)
        assert after < 0.04, (col, after)
        if col == "marital_status":  # the young are mostly never married: the original sample is far off
            assert after < tvd(np.ones(len(orig)), orig[col].to_numpy(), target) / 2


def test_judge_path_records_every_call_and_redraws_from_the_same_geography(judged):
    _, runner = judged
    store = runner.store("calibrated")
    ds = load_from_disk(str(store.data_dir))
    data = ds.to_pandas()
    people = load_from_disk(str(runner.store("people").data_dir)).to_pandas()
    calls = load_from_disk(str(store.dir / "judgements")).to_pandas()
    metrics, summary = store.manifest()["metrics"], store.manifest()["summary"]

    assert list(data["person_id"]) == list(people["person_id"])  # same persons, same order
    assert list(data.columns) == list(people.columns) + list(cal.ADDED)
    assert len(calls) == metrics["judge.calls"] and set(calls["verdict"]) <= {"plausible", "implausible", "invalid"}
    assert metrics["judge.round0.judged"] == len(people) == metrics["judge.judged"]
    assert {"judge.round0.rejected", "judge.flagged", "judge.rejection_rate.WY", "judge.rejection_rate.VT"} <= set(
        metrics
    )
    assert 0 <= summary["judge"]["rejection_rate"] <= 1 and "round0" in summary["judge"]["rounds"]
    for _, p in data.iterrows():
        mine = calls[calls["person_id"] == p["person_id"]].sort_values("round")
        assert list(mine["round"]) == list(range(p["judge_rounds"] + 1))  # judged once per round, every round
        last = mine["verdict"].iloc[-1]
        assert p["flagged"] == (last == "implausible")
        if p["flagged"]:
            assert p["judge_rounds"] == MAX_ROUNDS
    assert data["judge_rounds"].between(0, MAX_ROUNDS).all()
    replaced = data["judge_rounds"] > 0
    assert (data.loc[replaced, "replaced_from"] == data.loc[replaced, "person_id"]).all()
    assert data.loc[~replaced, "replaced_from"].isna().all()
    for col in ("geography", "geography_id", "geography_name", "weight"):
        assert (data[col] == people[col]).all()  # a replacement comes from its own geography, same weight
    assert data.loc[~replaced, people.columns].equals(people.loc[~replaced])
    for col, feature in ds.features.items():  # every value a valid category
        if isinstance(feature, ClassLabel):
            assert data[col].between(0, feature.num_classes - 1).all(), col
    assert data["age"].between(18, 99).all() and not rule_violations(data)
    raking = load_from_disk(str(store.dir / "raking")).to_pandas()
    assert set(raking["geography"]) == {"WY", "VT"} and len(raking) == 8
    for geo, pop in data.groupby("geography")["weight"].sum().items():
        assert data.loc[data["geography"] == geo, "raking_weight"].sum() == pytest.approx(pop, rel=1e-6)
    print("rejection rates by round:", {k: v["rejection_rate"] for k, v in summary["judge"]["rounds"].items()})


def test_same_recipe_twice_gives_the_same_bytes(judged, tiny_path, tmp_path):
    import shutil

    first_dir, first = judged
    path = tmp_path / "r.yaml"
    path.write_text((first_dir / "r.yaml").read_text())
    second = Runner(load_recipe(path), runs_dir=tmp_path / "runs", progress=False)
    # the people are meta_personas' own determinism test: copy them; calibrate runs afresh (empty request cache)
    shutil.copytree(first.store("people").dir, second.store("people").dir)
    second.build()
    assert second.store("calibrated").manifest()["metrics"]["requests_cached"] == 0  # the model really ran again
    a, b = first.store("calibrated"), second.store("calibrated")
    assert a.marker()["content_hash"] == b.marker()["content_hash"]
    assert load_from_disk(str(a.data_dir)).to_pandas().equals(load_from_disk(str(b.data_dir)).to_pandas())
    for extra in ("judgements", "raking"):
        assert load_from_disk(str(a.dir / extra)).to_pandas().equals(load_from_disk(str(b.dir / extra)).to_pandas())


def test_census_options_must_match_the_upstream_people(judged, tiny_path):
    tmp, _ = judged
    path = tmp / "mismatch.yaml"
    path.write_text(recipe_text(tiny_path, "    census: {min_age: 21}\n"))  # people (cached) were 18+
    with pytest.raises(DataError, match="census.min_age"):
        build(path, tmp / "runs")


def test_plan_keeps_row_order_when_geographies_interleave(vermont):
    import pyarrow as pa

    people = vermont.people(6, np.random.default_rng(4))
    names = people.features["geography"].names
    geo = [names.index(g) for g in ("VT", "WY", "VT", "WY", "DC", "DC")]
    table = people.with_format("arrow")[:]
    table = table.set_column(table.schema.get_field_index("geography"), "geography", pa.array(geo, pa.int64()))
    mixed = Dataset(table.cast(people.features.arrow_schema), info=people.info)
    ctx = StageContext(recipe="r", stage="calibrated", seed=0)
    batches = cal.plan(cal.Options(), {"people": mixed}, ctx)
    assert batches == [{"geographies": ["VT", "WY"], "rows": [0, 4]}, {"geographies": ["DC"], "rows": [4, 6]}]


def test_bad_inputs_and_options_are_one_line_errors(tmp_path):
    ctx = StageContext(recipe="r", stage="calibrated", seed=0)
    paper = Dataset.from_dict({"person_id": ["a"], "STATE": ["WY"], "weight": [1.0]})
    with pytest.raises(DataError, match="lacks geography.*full-mode meta_personas"):
        cal.plan(cal.Options(), {"people": paper}, ctx)
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: c\nstages:\n  people: {uses: meta_personas, geographies: [WY]}\n"
        "  calibrated: {uses: calibrate, inputs: [people], rake_on: [sexx]}\n"
    )
    with pytest.raises(RecipeError, match="did you mean 'sex'"):
        load_recipe(path)


# --- contract v2 with a hand-made context: the role `people`, a backend config object, an Upstream -------------


class VerdictClient:
    """A stand-in judge backend: every person implausible in the first round, plausible after."""

    model_id = "verdicts"
    cache = None

    def __init__(self):
        self.calls = 0
        self.rounds = 0

    def generate(self, requests, follow=None):
        from factory.llm.types import GenerationResult, in_rounds

        verdict = "implausible" if self.rounds == 0 else "plausible"
        self.rounds += 1

        def answer(batch):
            self.calls += len(batch)
            return [GenerationResult(verdict, "stop", 10, 1) for _ in batch]

        return in_rounds(answer, requests, follow)


def test_judge_run_by_hand_opens_the_backend_through_ctx_llm(vermont, monkeypatch):
    from factory.llm import backend
    from factory.llm.config import TransformersConfig

    client = VerdictClient()
    opened = []
    monkeypatch.setattr(backend, "load", lambda config, cache=None: opened.append(config) or client)
    people = vermont.people(12, np.random.default_rng(5))
    options = cal.Options.model_validate({"judge": {"backend": "j", "max_rounds": 2}})
    ctx = StageContext(recipe="r", stage="calibrated", seed=5, backends={"j": TransformersConfig()})
    (ctx.batch,) = cal.plan(options, {"people": people}, ctx)
    out = cal.run(options, {"people": people}, ctx)
    assert opened == [TransformersConfig()] and ctx.metrics["backend_calls"] == client.calls == 24
    data = out.data.to_pandas()
    assert (data["judge_rounds"] == 1).all() and not data["flagged"].any()
    assert out.extras["judgements"].num_rows == 24 and out.metrics["judge.round0.rejected"] == 12
    declared = cal.outputs(options)
    assert set(declared) == {"data", "raking", "judgements"}
    for name, ds in [("data", out.data), *out.extras.items()]:
        assert declared[name].mismatch(ds.features) is None, name
    assert cal.outputs(cal.Options()).keys() == {"data", "raking"}  # no judge, no judgements


def test_census_check_reads_the_upstream_manifest(vermont, tmp_path):
    import json

    from factory.store import Upstream

    people = vermont.people(4, np.random.default_rng(6))
    manifest = tmp_path / "manifest.json"
    ctx = StageContext(
        recipe="r", stage="calibrated", seed=0, upstream={"people": Upstream("people", "f", str(tmp_path))}
    )
    manifest.write_text(json.dumps({"uses": "meta_personas", "config": {"min_age": 21}}))
    with pytest.raises(DataError, match="census.min_age: 18 but the input's people were built with 21"):
        cal.plan(cal.Options(), {"people": people}, ctx)
    manifest.write_text(json.dumps({"uses": "calibrate", "config": {"min_age": 21}}))  # not meta_personas: unchecked
    assert cal.plan(cal.Options(), {"people": people}, ctx) == [{"geographies": ["VT"], "rows": [0, 4]}]


def test_input_without_traits_under_a_trait_drawing_census_is_an_error(vermont):
    people = vermont.people(4, np.random.default_rng(7)).remove_columns(
        ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
    )
    with pytest.raises(DataError, match="bigfive.mode: 'census' but the input has no Big Five traits"):
        run_stage(cal.Options(), people)
