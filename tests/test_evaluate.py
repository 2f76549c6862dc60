"""The evaluate stage: hand-computed election and OpinionQA metrics, answer vectors, weightings, plots, end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value, load_from_disk
from fake_answers import OUTPUTS as ANSWER_OUTPUTS

from factory.census import vocab
from factory.census.persons import CITIZENSHIP, PAPER_AGE_NAMES, PAPER_RACE
from factory.errors import DataError
from factory.evaluate import metrics as M
from factory.evaluate.plots import COLS, ROWS, TILE_GRID
from factory.questions.sets import features as question_features
from factory.questions.sets import load_seed_set
from factory.recipe import load_recipe
from factory.resources import data_path
from factory.runner import Runner
from factory.stage import StageContext
from factory.stages.evaluate import Options, run, summarize

STATES = [r["state_po"] for r in csv.DictReader(open(data_path("census", "states.csv")))]
RESULTS = {
    (int(r["year"]), r["state_po"]): r
    for r in csv.DictReader(open(data_path("elections", "us_president_by_state_2016_2020_2024.csv")))
}
CTX = StageContext(recipe="t", stage="evaluate", seed=0)


# ---------------------------------------------------------------------------------------------------------------
# tiny datasets with the exact schemas


def people(rows: list[dict], raking: list[float] | None = None) -> Dataset:
    """rows: person_id, geography, weight, and optionally age, sex, education... (census label strings)."""
    labels = {
        "geography": STATES,
        "sex": vocab.SEX,
        "age_band": vocab.AGE,
        "race_ethnicity": vocab.RACE_ETHNICITY,
        "education": vocab.EDUCATION,
        "marital_status": vocab.MARITAL,
        "citizenship": CITIZENSHIP,
        "household_income": [*vocab.HOUSEHOLD_INCOME, "None"],
    }
    defaults = {
        "age": 40,
        "sex": "Male",
        "race_ethnicity": "White",
        "education": "Bachelor's degree",
        "marital_status": "Never married",
        "citizenship": "U.S. citizen by birth",
        "household_income": "$50,000 to $74,999",
    }
    cols: dict[str, list] = {c: [] for c in ["person_id", "weight", "age", *labels]}
    for r in rows:
        r = {**defaults, **r}
        cols["person_id"].append(r["person_id"])
        cols["weight"].append(float(r["weight"]))
        cols["age"].append(int(r["age"]))
        band = next(i for i, (lo, hi) in enumerate(vocab.AGE_BANDS) if lo <= r["age"] <= hi)
        cols["age_band"].append(band)
        for c, names in labels.items():
            if c != "age_band":
                cols[c].append(names.index(r[c]))
    feats = {
        "person_id": Value("string"),
        "weight": Value("float64"),
        "age": Value("int16"),
        **{c: ClassLabel(names=n) for c, n in labels.items()},
    }
    if raking is not None:
        cols["raking_weight"] = raking
        feats["raking_weight"] = Value("float64")
    return Dataset.from_dict(cols, features=Features(feats))


def answers(rows: list[dict], persons: list[dict]) -> Dataset:
    """rows: person_id, question_id, choice (or distribution), optional style, mode, valid, sample, round."""
    where = {p["person_id"]: p for p in persons}
    out = []
    for i, r in enumerate(rows):
        p = where[r["person_id"]]
        mode = r.get("mode", "fast")
        valid = r.get("valid", True)
        n = len(r["distribution"]) if r.get("distribution") else 4
        out.append(
            {
                "person_id": p["person_id"],
                "geography": p["geography"],
                "weight": float(p["weight"]),
                "style": r.get("style", "meta"),
                "question_id": r["question_id"],
                "mode": mode,
                "sample": r.get("sample", 0),
                "round": r.get("round", 0),
                "option_order": list(range(n)),
                "choice": r.get("choice"),
                "distribution": r.get("distribution"),
                "valid": valid,
                "invalid_reason": None if valid else "unparseable",
                "reasoning": None,
                "text": "A",
                "model": "test",
                "seed": i,
                "prompt_tokens": 5,
                "completion_tokens": 1,
            }
        )
    return Dataset.from_list(out, features=ANSWER_OUTPUTS["data"].features())


def questions(rows: list[dict], split: list[str] | None = None) -> Dataset:
    ds = Dataset.from_list(rows, features=question_features())
    return ds.add_column("split", split) if split is not None else ds


def oqa_question(qid: str, options, ordinal, human, groups=None) -> dict:
    return {
        "question_id": qid,
        "source": "opinionqa",
        "source_id": qid.split("/")[-1],
        "topic": "Pew ATP W1",
        "text": f"Question {qid}?",
        "kind": "choice",
        "options": options,
        "ordinal": ordinal,
        "refusal_index": options.index("Refused") if "Refused" in options else None,
        "human_distribution": human,
        "human_n": 100,
        "human_groups": groups,
    }


def evaluate(a, p, q, **options):
    out = run(Options(**options), {"answers": a, "people": p, "questions": q}, CTX)
    return out, {name: ds.to_pandas() for name, ds in {"data": out.data, **out.extras}.items()}


# ---------------------------------------------------------------------------------------------------------------
# elections, computed by hand

PERSONS = [
    {"person_id": "p1", "geography": "NY", "weight": 3.0},
    {"person_id": "p2", "geography": "NY", "weight": 1.0},
    {"person_id": "p6", "geography": "NY", "weight": 1.0},
    {"person_id": "p3", "geography": "WY", "weight": 2.0},
    {"person_id": "p4", "geography": "WY", "weight": 1.0},
    {"person_id": "p5", "geography": "FL", "weight": 1.0},
]
# election/1 (2016): options [Donald Trump, Hillary Clinton]; election/2 (2020): [Joe Biden, Donald Trump]
ELECTION_ANSWERS = [
    {"person_id": "p1", "question_id": "election/1", "choice": 1},
    {"person_id": "p2", "question_id": "election/1", "choice": 0},
    {"person_id": "p6", "question_id": "election/1", "choice": 0},
    {"person_id": "p3", "question_id": "election/1", "choice": 0},
    {"person_id": "p4", "question_id": "election/1", "choice": 0},
    {"person_id": "p5", "question_id": "election/1", "choice": 1},
    # invalid: counted, never in the shares (its choice would flip NY if it were)
    {"person_id": "p2", "question_id": "election/1", "choice": 1, "valid": False, "sample": 1},
    {"person_id": "p1", "question_id": "election/2", "choice": 0},
    {"person_id": "p2", "question_id": "election/2", "choice": 0},
    {"person_id": "p6", "question_id": "election/2", "choice": 1},
    {"person_id": "p3", "question_id": "election/2", "choice": 1},
    {"person_id": "p4", "question_id": "election/2", "choice": 0},
    {"person_id": "p5", "question_id": "election/2", "choice": 1},
    {"person_id": "p5", "question_id": "election/2", "choice": None, "valid": False, "sample": 1},
]
# simulated two-party Democratic shares, by hand: (weighting, year) -> state -> share
SIM = {
    ("population", 2016): {"NY": 3 / 5, "WY": 0.0, "FL": 1.0},  # NY: p1 (w 3) of p1, p2, p6 (w 3+1+1)
    ("unweighted", 2016): {"NY": 1 / 3, "WY": 0.0, "FL": 1.0},
    ("population", 2020): {"NY": 4 / 5, "WY": 1 / 3, "FL": 0.0},  # NY: p1 + p2; WY: p4 (w 1) of w 2+1
    ("unweighted", 2020): {"NY": 2 / 3, "WY": 1 / 2, "FL": 0.0},
}
EV = {"NY": 29, "WY": 3, "FL": 29}  # 2010 apportionment, both years


@pytest.fixture(scope="module")
def election_run():
    q = questions(load_seed_set("election")[:2])
    return evaluate(answers(ELECTION_ANSWERS, PERSONS), people(PERSONS), q)


def test_election_states_by_hand(election_run):
    _, out = election_run
    df = out["elections"]
    assert len(df) == 2 * 2 * 3  # weighting x year x state
    for (weighting, year), shares in SIM.items():
        for state, sim in shares.items():
            row = df[(df.weighting == weighting) & (df.year == year) & (df.state == state)].iloc[0]
            real = float(RESULTS[(year, state)]["dem_two_party_share"])
            assert row.sim_dem_share == pytest.approx(sim)
            assert row.real_dem_share == pytest.approx(real)
            assert row.error == pytest.approx(sim - real)
            assert row.sim_winner == ("D" if sim > 0.5 else "R" if sim < 0.5 else "tie")
            assert row.real_winner == RESULTS[(year, state)]["winner"]
            assert row.electoral_votes == EV[state]
            assert (
                row.style == "meta"
                and row["mode"] == "fast"
                and row.question_id == {2016: "election/1", 2020: "election/2"}[year]
            )
    # the unweighted 2020 Wyoming tie wins no electors and does not match the real winner
    tie = df[(df.weighting == "unweighted") & (df.year == 2020) & (df.state == "WY")].iloc[0]
    assert tie.sim_winner == "tie"


def test_election_summary_by_hand(election_run):
    _, out = election_run
    summary = out["election_summary"]
    assert len(summary) == 4
    for year in (2016, 2020):  # the file says what the expectations below assume
        assert [RESULTS[(year, s)]["winner"] for s in ("NY", "WY", "FL")] == ["D", "R", "R"]
    expected = {
        # sim winners: NY D, WY R, FL D -> 2 of 3 right; D electors 29 + 29
        ("population", 2016): {"winner_accuracy": 2 / 3, "sim_ev": 58},
        # NY R, WY R, FL D -> only WY right; D electors: FL
        ("unweighted", 2016): {"winner_accuracy": 1 / 3, "sim_ev": 29},
        # NY D, WY R, FL R -> all right
        ("population", 2020): {"winner_accuracy": 1.0, "sim_ev": 29},
        # NY D, WY tie, FL R -> 2 of 3; the tie gives nobody Wyoming's 3
        ("unweighted", 2020): {"winner_accuracy": 2 / 3, "sim_ev": 29},
    }
    for (weighting, year), want in expected.items():
        row = summary[(summary.weighting == weighting) & (summary.year == year)].iloc[0]
        sims = SIM[(weighting, year)]
        reals = {s: float(RESULTS[(year, s)]["dem_two_party_share"]) for s in sims}
        votes = {s: float(RESULTS[(year, s)]["total_votes"]) for s in sims}
        errors = [sims[s] - reals[s] for s in sims]
        assert row.states == 3
        assert row.mae_state_share == pytest.approx(sum(abs(e) for e in errors) / 3)
        assert row.winner_accuracy == pytest.approx(want["winner_accuracy"])
        assert row.sim_electoral_votes_dem == want["sim_ev"]
        assert row.real_electoral_votes_dem == 29  # New York only, both years
        assert row.electoral_votes_total == 61
        total = sum(votes.values())
        assert row.sim_national_dem_share == pytest.approx(sum(votes[s] * sims[s] for s in sims) / total)
        assert row.real_national_dem_share == pytest.approx(sum(votes[s] * reals[s] for s in sims) / total)
        assert row.signed_bias == pytest.approx(sum(errors) / 3)
        assert row.bias_toward == ("D" if sum(errors) > 0 else "R")
    # population 2016: errors 0.6-0.6177, 0-0.2429, 1-0.4938 -> +0.2455 toward the Democrat
    assert summary[(summary.weighting == "population") & (summary.year == 2016)].iloc[0].bias_toward == "D"


def test_aggregates_count_invalid_rows_apart(election_run):
    out, tables = election_run
    agg = tables["data"]
    ny = agg[(agg.question_id == "election/1") & (agg.geography == "NY") & (agg.weighting == "population")].iloc[0]
    assert (ny.n_valid, ny.n_invalid) == (3, 1)
    assert list(ny.shares) == pytest.approx([2 / 5, 3 / 5])  # [Trump, Clinton]: the invalid Clinton is left out
    national = agg[(agg.question_id == "election/1") & (agg.geography == "ALL") & (agg.weighting == "population")]
    # all six persons: Clinton = p1 (3) + p5 (1) of 3+1+1+2+1+1 = 9
    assert list(national.iloc[0].shares) == pytest.approx([5 / 9, 4 / 9])
    unweighted = agg[(agg.question_id == "election/1") & (agg.geography == "ALL") & (agg.weighting == "unweighted")]
    assert list(unweighted.iloc[0].shares) == pytest.approx([4 / 6, 2 / 6])
    assert set(agg.geography) == {"ALL", "NY", "WY", "FL"}
    assert len(agg) == 2 * 2 * 4  # question x weighting x (3 states + ALL)
    styles = tables["styles"]
    invalid = styles[(styles.metric == "invalid_share") & (styles.weighting == "population")].iloc[0]
    assert invalid.value == pytest.approx(2 / 14)
    mae = styles[(styles.metric == "election_mae_2016") & (styles.weighting == "population")].iloc[0].value
    summary = tables["election_summary"]
    want = summary[(summary.weighting == "population") & (summary.year == 2016)].iloc[0].mae_state_share
    assert mae == pytest.approx(want)
    assert out.metrics["answers_invalid"] == 2 and out.metrics["election_questions"] == 2


def test_electoral_votes_and_real_winner_take_all_totals():
    assert sum(M.EV_2010.values()) == 538 and sum(M.EV_2020.values()) == 538
    assert set(M.EV_2010) == set(STATES) and M.EV_2010["DC"] == 3
    # winner-take-all in Maine and Nebraska: Clinton 232 + Maine's district elector, Biden 306, Harris 226
    for year, dem in ((2016, 233), (2020, 306), (2024, 226)):
        won = sum(M.ELECTORAL_VOTES[year][s] for s in STATES if RESULTS[(year, s)]["winner"] == "D")
        assert won == dem, year


def test_candidates_and_years_are_matched_by_name():
    assert M.candidate_option(["Donald Trump", "Hillary Clinton"], "Clinton, Hillary") == 1
    assert M.candidate_option(["Joe Biden", "Donald Trump"], "Biden, Joseph R. Jr") == 0
    assert M.candidate_option(["Joe Biden", "Donald Trump"], "Trump, Donald J.") == 1
    assert M.candidate_option(["Kamala Harris", "Someone Else"], "Trump, Donald J.") is None
    assert M.election_year("Who do you support for the presidential election in 2016?") == 2016
    assert M.election_year("Who won in 2016 or 2020?") is None
    assert M.election_year("Who do you support?") is None


# ---------------------------------------------------------------------------------------------------------------
# OpinionQA alignment


def test_alignment_by_hand():
    ordinal = [1.0, 2.0, 3.0]
    assert M.compare([1, 0, 0], [0, 0, 1], ordinal, None) == (0.0, 1.0)  # W1 = 2 = the maximum
    assert M.compare([0.2, 0.3, 0.5], [0.2, 0.3, 0.5], ordinal, None) == (1.0, 0.0)
    # CDFs [1/2, 1, 1] and [0, 1/2, 1]: W1 = 1/2 + 1/2 = 1 -> 1 - 1/2
    assert M.compare([0.5, 0.5, 0], [0, 0.5, 0.5], ordinal, None)[0] == pytest.approx(0.5)
    # the refusal is dropped from both sides and the rest renormalised: [1, 0, 0] vs [0, 0, 1]
    assert M.compare([0.5, 0, 0, 0.5], [0, 0, 0.4, 0.6], [1.0, 2.0, 3.0, None], 3) == (0.0, 1.0)
    # an option without an ordinal position ("Not sure") is dropped the same way
    assert M.compare([0, 1, 0, 0], [0, 0.5, 0.5, 0], [1.0, 2.0, None, None], 3) == (1.0, 0.0)
    # a middle option at 1.5 (the paper's scale): W1 = 0.5 over a span of 1
    assert M.compare([0, 0, 1], [1, 0, 0], [1.0, 2.0, 1.5], None)[0] == pytest.approx(0.5)
    assert M.compare([0, 0, 0, 1], [0.5, 0.5, 0, 0], [1.0, 2.0, 3.0, None], 3) == (None, None)  # only refusals
    assert M.compare([1, 0], [0, 1], [1.0, 1.0], None) == (None, 1.0)  # nominal: no ordinal distance


OQA = [
    oqa_question("opinionqa/Q1", ["A", "B", "C", "Refused"], [1.0, 2.0, 3.0, None], [0, 0, 0.5, 0.5]),
    oqa_question(
        "opinionqa/Q2",
        ["A", "B", "C", "Refused"],
        [1.0, 2.0, 3.0, None],
        [0.25, 0.25, 0.25, 0.25],
        groups=[
            {"attribute": "SEX", "group": "Male", "counts": [0, 3, 0, 1]},
            {"attribute": "SEX", "group": "Female", "counts": [2, 0, 2, 0]},
            {"attribute": "AGE", "group": "18-29", "counts": [1, 1, 1, 0]},
            {"attribute": "INCOME", "group": "Refused", "counts": [1, 1, 1, 0]},  # no persona maps here
            {"attribute": "POLPARTY", "group": "Democrat", "counts": [1, 1, 1, 0]},  # not mappable
        ],
    ),
    oqa_question("opinionqa/Q3", ["A", "B", "Refused"], [1.0, 2.0, None], [0.5, 0.5, 0]),
]
OQA_PERSONS = [
    {"person_id": "m1", "geography": "NY", "weight": 1.0, "sex": "Male", "age": 25},
    {"person_id": "m2", "geography": "TX", "weight": 3.0, "sex": "Male", "age": 70},
    {"person_id": "f1", "geography": "TX", "weight": 1.0, "sex": "Female", "age": 40},
]
OQA_ANSWERS = [
    *({"person_id": p, "question_id": "opinionqa/Q1", "choice": 0} for p in ("m1", "m2", "f1")),
    {"person_id": "m1", "question_id": "opinionqa/Q2", "choice": 3},  # refused: dropped, leaves no mass for m1
    {"person_id": "m2", "question_id": "opinionqa/Q2", "choice": 1},
    {"person_id": "f1", "question_id": "opinionqa/Q2", "choice": 0},
    {"person_id": "m1", "question_id": "opinionqa/Q3", "choice": 2},  # everyone refuses Q3
]


@pytest.fixture(scope="module")
def oqa_run():
    return evaluate(
        answers(OQA_ANSWERS, OQA_PERSONS),
        people(OQA_PERSONS),
        questions(OQA, split=["train", "held_out", "held_out"]),
        weightings=["population"],
    )


def test_opinionqa_overall_rows_by_hand(oqa_run):
    out, tables = oqa_run
    df = tables["opinionqa"]
    overall = df[df.attribute.isna()].set_index("question_id")
    # Q1: everyone says A = [1, 0, 0] against [0, 0, 1] after dropping "Refused"
    assert (overall.loc["opinionqa/Q1", "alignment"], overall.loc["opinionqa/Q1", "tv"]) == (0.0, 1.0)
    # Q2: weights m1 1 (Refused), m2 3 (B), f1 1 (A) -> [1/5, 3/5, 0, 1/5] -> [1/4, 3/4, 0] vs [1/3, 1/3, 1/3]
    # CDFs [1/4, 1, 1] vs [1/3, 2/3, 1]: W1 = 1/12 + 1/3 = 5/12 over a span of 2
    assert overall.loc["opinionqa/Q2", "alignment"] == pytest.approx(1 - 5 / 24)
    assert overall.loc["opinionqa/Q2", "tv"] == pytest.approx(0.5 * (1 / 12 + 5 / 12 + 1 / 3))
    assert overall.loc["opinionqa/Q2", "n"] == 3 and overall.loc["opinionqa/Q2", "split"] == "held_out"
    # Q3: all simulated mass on the refusal -> null, and counted
    assert np.isnan(overall.loc["opinionqa/Q3", "alignment"]) and np.isnan(overall.loc["opinionqa/Q3", "tv"])
    assert out.metrics["opinionqa_null_alignment"] == 2  # Q3 overall, Q2 age 18-29 below
    styles = tables["styles"].set_index("metric")["value"]
    assert styles["opinionqa_alignment"] == pytest.approx((0 + 1 - 5 / 24) / 2)
    assert styles["opinionqa_alignment_train"] == 0.0
    assert styles["opinionqa_alignment_held_out"] == pytest.approx(1 - 5 / 24)


def test_opinionqa_group_rows_by_hand(oqa_run):
    _, tables = oqa_run
    df = tables["opinionqa"]
    groups = df[(df.question_id == "opinionqa/Q2") & df.attribute.notna()].set_index(["attribute", "group"])
    assert set(groups.index) == {("SEX", "Male"), ("SEX", "Female"), ("AGE", "18-29")}
    # men: m1 refused, m2 said B -> [0, 1, 0]; Pew men [0, 3, 0] -> identical
    assert groups.loc[("SEX", "Male"), ["n", "alignment", "tv"]].tolist() == [2, 1.0, 0.0]
    # women: f1 said A -> [1, 0, 0] vs [1/2, 0, 1/2]: CDFs [1, 1, 1] vs [1/2, 1/2, 1] -> W1 1, alignment 1/2
    assert groups.loc[("SEX", "Female"), "alignment"] == pytest.approx(0.5)
    assert groups.loc[("SEX", "Female"), "tv"] == pytest.approx(0.5)
    # 18-29: only m1, who refused -> no mass left
    assert groups.loc[("AGE", "18-29"), "n"] == 1 and np.isnan(groups.loc[("AGE", "18-29"), "alignment"])


def test_min_group_n_nulls_small_groups():
    _, tables = evaluate(
        answers(OQA_ANSWERS, OQA_PERSONS), people(OQA_PERSONS), questions(OQA), weightings=["population"], min_group_n=2
    )
    df = tables["opinionqa"]
    female = df[(df.question_id == "opinionqa/Q2") & (df.group == "Female")].iloc[0]
    male = df[(df.question_id == "opinionqa/Q2") & (df.group == "Male")].iloc[0]
    assert female.n == 1 and np.isnan(female.alignment)
    assert male.n == 2 and male.alignment == 1.0
    assert df.split.isna().all()


def test_group_mappings():
    ages = M.pew_group("AGE", [18, 29, 30, 49, 50, 64, 65, 99])
    assert ages == ["18-29", "18-29", "30-49", "30-49", "50-64", "50-64", "65+", "65+"]
    incomes = M.pew_group("INCOME", ["$25,000 to $34,999", "None", "$10,000 to $14,999"])
    assert incomes == [None, None, "Less than $30,000"]  # a band across $30,000 and no household: no group
    assert M.pew_group("CREGION", ["NY", "DC", "WY"]) == ["Northeast", "South", "West"]
    assert len(M.PEW_GROUPS["CREGION"]) == 51
    groups = json.loads(data_path("opinionqa", "attribute_groups.json").read_text())
    for attribute, table in M.PEW_GROUPS.items():
        assert set(table.values()) <= set(groups[attribute]) | {"Mixed Race"}, attribute
    # every census category of the mapped columns is known to the mapping (or dropped on purpose)
    assert set(vocab.EDUCATION) == set(M.PEW_GROUPS["EDUCATION"])
    assert set(vocab.RACE_ETHNICITY) == set(M.PEW_GROUPS["RACE"])
    assert set(vocab.MARITAL) == set(M.PEW_GROUPS["MARITAL"]) and set(CITIZENSHIP) == set(M.PEW_GROUPS["CITIZEN"])
    assert set(vocab.HOUSEHOLD_INCOME) - set(M.PEW_GROUPS["INCOME"]) == {"$25,000 to $34,999"}


# ---------------------------------------------------------------------------------------------------------------
# answer vectors, weightings, rounds


def test_logprob_distributions_average_by_weight():
    persons = [
        {"person_id": "a", "geography": "NY", "weight": 1.0},
        {"person_id": "b", "geography": "NY", "weight": 3.0},
    ]
    rows = [
        {"person_id": "a", "question_id": "opinionqa/Q1", "mode": "logprob", "distribution": [0.7, 0.1, 0.1, 0.1]},
        {"person_id": "b", "question_id": "opinionqa/Q1", "mode": "logprob", "distribution": [0.1, 0.1, 0.7, 0.1]},
        {"person_id": "a", "question_id": "opinionqa/Q1", "choice": 1},  # a sampled mode, kept apart
    ]
    _, tables = evaluate(answers(rows, persons), people(persons), questions(OQA[:1]))
    agg = tables["data"].set_index(["mode", "weighting", "geography"])
    assert list(agg.loc[("logprob", "unweighted", "ALL"), "shares"]) == pytest.approx([0.4, 0.1, 0.4, 0.1])
    assert list(agg.loc[("logprob", "population", "NY"), "shares"]) == pytest.approx([0.25, 0.1, 0.55, 0.1])
    assert list(agg.loc[("fast", "population", "ALL"), "shares"]) == [0, 1, 0, 0]
    oqa = tables["opinionqa"]
    row = oqa[(oqa["mode"] == "logprob") & (oqa.weighting == "population") & oqa.attribute.isna()].iloc[0]
    # [0.25, 0.1, 0.55] renormalised over 0.9 vs [0, 0, 1]: CDF gap [0.25, 0.35]/0.9 -> W1 = 0.6/0.9
    assert row.alignment == pytest.approx(1 - (0.6 / 0.9) / 2)


def test_probability_vectors_rules():
    vectors, ok = M.probability_vectors(
        np.array([2, -1, 0, -1, -1]),
        [None, None, None, [0.2, 0.2, 0.2], None],
        np.array([True, True, False, True, True]),
        np.array([False, False, False, True, True]),
        3,
        "q",
    )
    assert ok.tolist() == [True, False, False, True, False]  # no choice / no distribution: not usable
    assert vectors[0].tolist() == [0, 0, 1] and vectors[3] == pytest.approx([1 / 3] * 3)
    with pytest.raises(DataError, match="choice 5"):
        M.probability_vectors(np.array([5]), [None], np.array([True]), np.array([False]), 3, "q")
    with pytest.raises(DataError, match="2 values for 3 options"):
        M.probability_vectors(np.array([-1]), [[0.5, 0.5]], np.array([True]), np.array([True]), 3, "q")


def test_raked_weighting_and_its_error():
    persons = PERSONS[:3]
    rows = ELECTION_ANSWERS[:3]
    a, q = answers(rows, persons), questions(load_seed_set("election")[:1])
    with pytest.raises(DataError, match="raking_weight"):
        evaluate(a, people(persons), q, weightings=["raked"])
    _, tables = evaluate(a, people(persons, raking=[1.0, 2.0, 2.0]), q, weightings=["population", "raked"])
    agg = tables["data"].set_index(["weighting", "geography"])
    assert list(agg.loc[("raked", "NY"), "shares"]) == pytest.approx([4 / 5, 1 / 5])
    assert list(agg.loc[("population", "NY"), "shares"]) == pytest.approx([2 / 5, 3 / 5])


def test_rounds_last_or_all():
    persons = PERSONS[:1]
    rows = [
        {"person_id": "p1", "question_id": "election/1", "mode": "multi_turn", "round": 0, "choice": 0},
        {"person_id": "p1", "question_id": "election/1", "mode": "multi_turn", "round": 1, "choice": 1},
    ]
    a, p, q = answers(rows, persons), people(persons), questions(load_seed_set("election")[:1])
    last = evaluate(a, p, q)[1]["data"]
    assert list(last[last.geography == "ALL"].iloc[0].shares) == [0, 1]
    pooled = evaluate(a, p, q, rounds="all")[1]["data"]
    assert list(pooled[pooled.geography == "ALL"].iloc[0].shares) == [0.5, 0.5]


def test_inputs_are_read_by_role_and_options_checked():
    """Inputs come keyed by role (the recipe's wiring is matched and checked at validate: tests/test_wiring.py)."""
    a, p, q = answers(ELECTION_ANSWERS[:1], PERSONS), people(PERSONS), questions(load_seed_set("election")[:1])
    out = run(Options(), {"questions": q, "answers": a, "people": p}, CTX)
    assert out.data.num_rows > 0
    with pytest.raises(DataError, match="not in the people input"):
        run(Options(), {"answers": a, "people": people(PERSONS[1:]), "questions": q}, CTX)
    with pytest.raises(ValueError, match="2012"):
        Options(elections=[2012])
    with pytest.raises(ValueError, match="did you mean 'INCOME'"):
        Options(group_attributes=["INCOM"])


def test_paper_mode_people_weigh():
    """meta_personas' paper mode (STATE, AGE band, SEX, RACE, weight; no `age`) feeds paper_election.yaml."""
    persons = PERSONS[:3]
    paper = Dataset.from_dict(
        {
            "person_id": [p["person_id"] for p in persons],
            "STATE": [p["geography"] for p in persons],
            "AGE": [0, 1, 2],
            "SEX": [0, 1, 0],
            "RACE": [1, 1, 1],
            "weight": [p["weight"] for p in persons],
        },
        features=Features(
            {
                "person_id": Value("string"),
                "STATE": Value("string"),
                "AGE": ClassLabel(names=PAPER_AGE_NAMES),
                "SEX": ClassLabel(names=vocab.SEX),
                "RACE": ClassLabel(names=PAPER_RACE),
                "weight": Value("float64"),
            }
        ),
    )
    a, q = answers(ELECTION_ANSWERS[:3], persons), questions(load_seed_set("election")[:1])
    out = run(Options(), {"questions": q, "people": paper, "answers": a}, CTX)
    agg = out.data.to_pandas().set_index(["weighting", "geography"])
    assert list(agg.loc[("population", "NY"), "shares"]) == pytest.approx([2 / 5, 3 / 5])


# ---------------------------------------------------------------------------------------------------------------
# plots and end to end


def test_tile_grid_is_the_8x12_layout():
    assert set(TILE_GRID) == set(STATES)
    assert len(set(TILE_GRID.values())) == 51
    assert all(0 <= r < ROWS and 0 <= c < COLS for r, c in TILE_GRID.values())


def test_summarize_writes_plots(election_run, tmp_path):
    out, _ = election_run
    summary = summarize(Options(), {"data": out.data, **out.extras}, CTX, tmp_path)
    for name in ("election_map_meta.png", "styles.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert summary["weighting"] == "population"
    assert {r["year"] for r in summary["election_summary"]} == {2016, 2020}
    json.dumps(summary)  # goes into the manifest


def test_end_to_end_through_the_runner(write_recipe, tmp_path):
    path = write_recipe(
        """
        name: ev
        seed: 0
        stages:
          people: {uses: meta_personas, geographies: [NY, WY, DC], n_per_geography: 12}
          q:
            uses: questions
            sets: [election, opinionqa]
            ids: [election/1, election/2, election/3, opinionqa/GUN_W26, opinionqa/WANTMOVE_W32]
          answers: {uses: "fake_answers:stage", inputs: [people, q]}
          evaluate: {uses: evaluate, inputs: [answers, people, q]}
        """
    )
    runner = Runner(load_recipe(path, []), runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    store = runner.store("evaluate")
    manifest = store.manifest()
    agg = load_from_disk(str(store.data_dir)).to_pandas()
    # 5 questions x 2 styles x 2 weightings x (3 states + ALL)
    assert len(agg) == 5 * 2 * 2 * 4
    assert set(manifest["outputs"]) == {"data", "elections", "election_summary", "opinionqa", "styles"}
    summary = load_from_disk(str(store.dir / "election_summary")).to_pandas()
    assert len(summary) == 3 * 2 * 2 and (summary.states == 3).all()
    totals = dict(zip(summary.year, summary.electoral_votes_total))
    assert totals == {2016: 29 + 3 + 3, 2020: 29 + 3 + 3, 2024: 28 + 3 + 3}  # 2010, then 2020 apportionment
    oqa = load_from_disk(str(store.dir / "opinionqa")).to_pandas()
    overall = oqa[oqa.attribute.isna()]
    assert len(overall) == 2 * 2 * 2 and overall.alignment.between(0, 1).all()
    for plot in ("election_map_meta.png", "election_map_descriptive.png", "styles.png"):
        assert (store.dir / "artifacts" / plot).stat().st_size > 1000
    assert manifest["summary"]["plots"] and manifest["summary"]["opinionqa"]
