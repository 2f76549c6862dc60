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
    df = out["elections"][lambda d: d["style"] == "meta"]
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
    summary = out["election_summary"][lambda d: d["style"] == "meta"]
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
    styles = tables["styles"][lambda d: d["style"] == "meta"]
    invalid = styles[(styles.metric == "invalid_share") & (styles.weighting == "population")].iloc[0]
    assert invalid.value == pytest.approx(2 / 14)
    mae = styles[(styles.metric == "election_mae_2016") & (styles.weighting == "population")].iloc[0].value
    summary = tables["election_summary"][lambda d: d["style"] == "meta"]
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
    df = tables["opinionqa"][lambda d: d["style"] == "meta"]
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
    styles = tables["styles"][lambda d: d["style"] == "meta"].set_index("metric")["value"]
    assert styles["opinionqa_alignment"] == pytest.approx((0 + 1 - 5 / 24) / 2)
    assert styles["opinionqa_alignment_train"] == 0.0
    assert styles["opinionqa_alignment_held_out"] == pytest.approx(1 - 5 / 24)
    assert styles["opinionqa_alignment_topic_pew_atp_w1"] == styles["opinionqa_alignment"]  # per wave


def test_opinionqa_group_rows_by_hand(oqa_run):
    _, tables = oqa_run
    df = tables["opinionqa"][lambda d: d["style"] == "meta"]
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
    with pytest.raises(DataError, match="electorate: adults"):
        run(Options(), {"questions": q, "people": paper, "answers": a}, CTX)
    out = run(Options(electorate="adults"), {"questions": q, "people": paper, "answers": a}, CTX)
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
    assert set(manifest["outputs"]) == {"data", "elections", "election_summary", "opinionqa", "styles", "comparisons"}
    summary = load_from_disk(str(store.dir / "election_summary")).to_pandas()
    summary = summary[~summary["style"].str.startswith("baseline:")]
    assert len(summary) == 3 * 2 * 2 and (summary.states == 3).all()
    totals = dict(zip(summary.year, summary.electoral_votes_total))
    assert totals == {2016: 29 + 3 + 3, 2020: 29 + 3 + 3, 2024: 28 + 3 + 3}  # 2010, then 2020 apportionment
    oqa = load_from_disk(str(store.dir / "opinionqa")).to_pandas()
    overall = oqa[oqa.attribute.isna() & ~oqa["style"].str.startswith("baseline:")]
    assert len(overall) == 2 * 2 * 2 and overall.alignment.between(0, 1).all()
    for plot in ("election_map_meta.png", "election_map_descriptive.png", "styles.png"):
        assert (store.dir / "artifacts" / plot).stat().st_size > 1000
    assert manifest["summary"]["plots"] and manifest["summary"]["opinionqa"]


# ---------------------------------------------------------------------------------------------------------------
# baselines, by hand from the vendored results


def real_share(year: int, state: str) -> float:
    return float(RESULTS[(year, state)]["dem_two_party_share"])


def test_election_baselines_by_hand(election_run):
    _, out = election_run
    summary = out["election_summary"]
    pop = summary[(summary.weighting == "population") & (summary.year == 2020)].set_index("style")
    states = ("NY", "WY", "FL")
    # previous cycle: each state's 2016 share as the 2020 prediction
    mae = sum(abs(real_share(2016, s) - real_share(2020, s)) for s in states) / 3
    assert pop.loc["baseline:previous_cycle", "mae_state_share"] == pytest.approx(mae)
    assert pop.loc["baseline:previous_cycle", "winner_accuracy"] == 1.0  # NY D, WY R, FL R both years
    # national: Biden's two-party share of every vote cast for Biden or Trump, in every state and DC
    dem = sum(float(r["dem_votes"]) for (y, _), r in RESULTS.items() if y == 2020)
    rep = sum(float(r["rep_votes"]) for (y, _), r in RESULTS.items() if y == 2020)
    national = dem / (dem + rep)
    assert national == pytest.approx(0.5226, abs=1e-3)
    assert pop.loc["baseline:national", "mae_state_share"] == pytest.approx(
        sum(abs(national - real_share(2020, s)) for s in states) / 3
    )
    assert pop.loc["baseline:national", "sim_electoral_votes_dem"] == 61  # D everywhere: 29 + 3 + 29
    # uniform: 0.5 everywhere, a tie that calls no state and wins no electors
    assert pop.loc["baseline:uniform", "mae_state_share"] == pytest.approx(
        sum(abs(0.5 - real_share(2020, s)) for s in states) / 3
    )
    assert pop.loc["baseline:uniform", ["winner_accuracy", "sim_electoral_votes_dem"]].tolist() == [0.0, 0]
    assert pop.loc["baseline:uniform", ["mae_ci_low", "mae_ci_high"]].isna().all()  # no persons, no interval
    # no 2012 results shipped: 2016 has no previous-cycle baseline
    assert "baseline:previous_cycle" not in set(summary[summary.year == 2016]["style"])
    # the styles table: baselines as rows, each style's row says by how much it beats them (positive = better)
    styles = out["styles"]
    sel = styles[(styles.weighting == "population") & (styles.metric == "election_mae_2020")].set_index("style")
    assert sel.loc["baseline:previous_cycle", "value"] == pytest.approx(mae)
    meta = sel.loc["meta"]
    assert meta.vs_previous_cycle == pytest.approx(mae - meta.value)
    assert meta.vs_uniform == pytest.approx(sel.loc["baseline:uniform", "value"] - meta.value)
    assert np.isnan(meta.vs_overall_human) and np.isnan(meta.vs_base)
    cmp = out["comparisons"]
    row = cmp[(cmp.weighting == "population") & (cmp.metric == "election_mae_2020")]
    row = row[row.versus == "baseline:previous_cycle"]
    assert row.iloc[0].improvement == pytest.approx(mae - meta.value) and row.iloc[0].beats == (mae > meta.value)


def test_opinionqa_baselines_by_hand(oqa_run):
    _, tables = oqa_run
    df = tables["opinionqa"]
    q2 = df[(df.question_id == "opinionqa/Q2") & df["style"].str.startswith("baseline:")]
    q2 = q2.set_index(["style", "attribute", "group"], drop=False)["alignment"]
    # Q2 human [1/4]*4 -> [1/3, 1/3, 1/3] without "Refused": the uniform guess is exact
    assert q2[("baseline:uniform", None, None)] == pytest.approx(1.0)
    # men [0, 3, 0] vs the overall [1/3]*3: CDFs [0, 1, 1] vs [1/3, 2/3, 1] -> W1 2/3 over a span of 2
    assert q2[("baseline:overall_human", "SEX", "Male")] == pytest.approx(1 - (2 / 3) / 2)
    # the human spread for men: the other sex, women [1/2, 0, 1/2]: CDFs [1/2, 1/2, 1] vs [0, 1, 1] -> W1 1
    assert q2[("baseline:human_groups", "SEX", "Male")] == pytest.approx(0.5)
    # overall spread: mean alignment with the overall of men (2/3), women (5/6) and 18-29 ([1/3]*3: 1)
    assert q2[("baseline:human_groups", None, None)] == pytest.approx((2 / 3 + 5 / 6 + 1) / 3)
    assert ("baseline:overall_human", None, None) not in q2.index  # every group's prediction, not the overall's
    styles = tables["styles"]
    align = styles[styles.metric == "opinionqa_alignment"].set_index("style")
    meta = align.loc["meta"]
    # meta's overall alignment averages Q1 and Q2 (Q3 is null); baselines on the same questions
    uniform_q1 = M.compare([1, 1, 1, 1], OQA[0]["human_distribution"], OQA[0]["ordinal"], 3)[0]
    assert meta.vs_uniform == pytest.approx(meta.value - (uniform_q1 + 1.0) / 2)


# ---------------------------------------------------------------------------------------------------------------
# bootstrap intervals


def binomial_quantile(n: int, p: float, q: float) -> float:
    """The q-quantile of Binomial(n, p) / n, exactly (the bootstrap distribution of a mean of n 0/1 answers)."""
    from math import comb

    total = 0.0
    for k in range(n + 1):
        total += comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k / n
    return 1.0


def test_bootstrap_interval_of_a_share_matches_the_closed_form():
    """400 persons in one state, 120 vote Clinton: resampling persons makes the share Binomial(400, 0.3) / 400,
    whose 2.5% and 97.5% quantiles the percentile interval must hit (and the normal approximation roughly)."""
    n, dem = 400, 120
    persons = [{"person_id": f"p{i}", "geography": "NY", "weight": 1.0} for i in range(n)]
    rows = [{"person_id": f"p{i}", "question_id": "election/1", "choice": 1 if i < dem else 0} for i in range(n)]
    q = questions(load_seed_set("election")[:1])
    _, tables = evaluate(answers(rows, persons), people(persons), q, weightings=["unweighted"], bootstrap=4000)
    ny = tables["elections"][lambda d: d["style"] == "meta"].iloc[0]
    assert ny.sim_dem_share == pytest.approx(0.3)
    lo, hi = binomial_quantile(n, 0.3, 0.025), binomial_quantile(n, 0.3, 0.975)
    assert ny.ci_low == pytest.approx(lo, abs=1.5 / n) and ny.ci_high == pytest.approx(hi, abs=1.5 / n)
    se = (0.3 * 0.7 / n) ** 0.5
    assert ny.ci_low == pytest.approx(0.3 - 1.96 * se, abs=0.006)
    assert ny.ci_high == pytest.approx(0.3 + 1.96 * se, abs=0.006)
    # the same seed gives the same interval
    again = evaluate(answers(rows, persons), people(persons), q, weightings=["unweighted"], bootstrap=4000)[1]
    assert again["elections"].iloc[-1].ci_low == ny.ci_low


def test_paired_bootstrap_of_identical_styles_is_zero():
    """Two styles that answer alike differ by exactly 0 in every draw (same persons resampled for both); an
    unpaired comparison would give an interval as wide as two shares' intervals."""
    persons = [{"person_id": f"p{i}", "geography": g, "weight": 1.0} for i, g in enumerate(["NY", "FL"] * 20)]
    rows = []
    for i, p in enumerate(persons):
        for style in ("meta", "descriptive"):
            rows.append({"person_id": p["person_id"], "question_id": "election/1", "choice": i % 3 % 2, "style": style})
    q = questions(load_seed_set("election")[:1])
    _, tables = evaluate(answers(rows, persons), people(persons), q, weightings=["unweighted"], bootstrap=200)
    cmp = tables["comparisons"]
    pair = cmp[(cmp["style"] == "meta") & (cmp.versus == "descriptive") & (cmp.metric == "election_mae_2016")].iloc[0]
    assert (pair.improvement, pair.ci_low, pair.ci_high, pair.significant) == (0.0, 0.0, 0.0, False)
    mae = tables["election_summary"][lambda d: d["style"] == "meta"].iloc[0]
    assert mae.mae_ci_low < mae.mae_state_share < mae.mae_ci_high


def test_replicate_sums_and_many_comparisons_match_the_plain_computation(monkeypatch):
    from factory.evaluate import bootstrap
    from factory.evaluate.bootstrap import person_counts, replicate_sums

    rng = np.random.default_rng(0)
    geos = np.array(["NY"] * 5 + ["FL"] * 3)
    counts = person_counts(geos, 7, lambda g: np.random.default_rng(len(g) + ord(g[0])))
    assert (counts[:, :5].sum(axis=1) == 5).all() and (counts[:, 5:].sum(axis=1) == 3).all()
    person = rng.integers(0, 8, 40)
    weight = rng.random(40)
    vectors = rng.dirichlet([1, 1, 1], 40)
    codes = rng.integers(-1, 4, 40)
    got = replicate_sums(counts, person, weight, vectors, codes, 4)
    for b in range(7):
        for g in range(4):
            m = codes == g
            w = counts[b, person[m]] * weight[m]
            assert got[b, g, :3] == pytest.approx((w[:, None] * vectors[m]).sum(axis=0), rel=1e-5)
            assert got[b, g, 3] == pytest.approx(w.sum(), rel=1e-5)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 7 * 3)  # chunks of 3 persons, kept within each block
    block = codes % 2  # any partition the groups lie within
    assert replicate_sums(counts, person, weight, vectors, codes, 4, block=block) == pytest.approx(got, rel=1e-5)
    ordinal, human = [1.0, 2.0, 3.0, None], [0.1, 0.2, 0.3, 0.4]
    sims = rng.dirichlet([1, 1, 1, 1], 6)
    alignment, tv = M.compare_many(sims, human, ordinal, 3)
    for s, a, t in zip(sims, alignment, tv):
        assert (a, t) == pytest.approx(M.compare(s, human, ordinal, 3))


def test_no_bootstrap_gives_null_intervals(election_run):
    out = run(Options(bootstrap=0), {"answers": answers(ELECTION_ANSWERS, PERSONS), "people": people(PERSONS),
              "questions": questions(load_seed_set("election")[:2])}, CTX)  # fmt: skip
    states = out.extras["elections"].to_pandas()
    assert states.ci_low.isna().all()
    with_draws = election_run[1]["elections"]
    assert (
        states[states["style"] == "meta"].sim_dem_share.tolist()
        == with_draws[with_draws["style"] == "meta"].sim_dem_share.tolist()
    )


# ---------------------------------------------------------------------------------------------------------------
# electorate and turnout


def test_eligible_electorate_leaves_non_citizens_out():
    persons = [
        {"person_id": "c", "geography": "NY", "weight": 1.0},
        {"person_id": "n", "geography": "NY", "weight": 1.0, "citizenship": "Not a U.S. citizen"},
        {"person_id": "z", "geography": "NY", "weight": 1.0, "citizenship": "Naturalized U.S. citizen"},
    ]
    rows = [  # election/1 options: [Trump, Clinton]
        {"person_id": "c", "question_id": "election/1", "choice": 0},
        {"person_id": "n", "question_id": "election/1", "choice": 1},
        {"person_id": "z", "question_id": "election/1", "choice": 1},
    ]
    a, p, q = answers(rows, persons), people(persons), questions(load_seed_set("election")[:1])
    out, tables = evaluate(a, p, q, weightings=["unweighted"])
    ny = tables["elections"][lambda d: d["style"] == "meta"].iloc[0]
    assert ny.sim_dem_share == pytest.approx(1 / 2) and ny.n_valid == 2
    assert out.metrics["answers_outside_electorate"] == 1
    adults = evaluate(a, p, q, weightings=["unweighted"], electorate="adults")[1]["elections"]
    assert adults[adults["style"] == "meta"].iloc[0].sim_dem_share == pytest.approx(2 / 3)


def turnout_options(tmp_path, text: str) -> Options:
    path = tmp_path / "turnout.csv"
    path.write_text(text)
    return Options.model_validate(
        {"weightings": ["population", "turnout"], "turnout": "turnout.csv"}, context={"base_dir": tmp_path}
    )


def test_turnout_weighting_multiplies_weights_by_rates(tmp_path):
    persons = [
        {"person_id": "y", "geography": "NY", "weight": 1.0, "age": 20},
        {"person_id": "o", "geography": "NY", "weight": 1.0, "age": 70},
    ]
    rows = [
        {"person_id": "y", "question_id": "election/1", "choice": 1},
        {"person_id": "o", "question_id": "election/1", "choice": 0},
    ]
    a, p, q = answers(rows, persons), people(persons), questions(load_seed_set("election")[:1])
    bands = [b for b in vocab.AGE]
    text = "age_band,rate\n" + "".join(f"{b},{0.2 if i == 0 else 0.8}\n" for i, b in enumerate(bands))
    options = turnout_options(tmp_path, text)
    out = run(options, {"answers": a, "people": p, "questions": q}, CTX)
    states = out.extras["elections"].to_pandas()
    turnout = states[(states["style"] == "meta") & (states.weighting == "turnout")].iloc[0]
    young = next(i for i, (lo, hi) in enumerate(vocab.AGE_BANDS) if lo <= 20 <= hi)
    rate_young = 0.2 if young == 0 else 0.8
    assert turnout.sim_dem_share == pytest.approx(rate_young / (rate_young + 0.8))
    for bad, match in (
        ("age_band,rat\n", "missing column 'rate'"),
        ("age_bnd,rate\n", r"column 'age_bnd' is not a people column \(did you mean 'age_band'"),
        ("age_band,rate\nnot a band,0.5\n", r"row 2, column age_band: unknown category 'not a band'"),
        (f"age_band,rate\n{bands[0]},1.5\n", r"row 2, column rate: 1.5 is not a rate"),
        (f"age_band,rate\n{bands[0]},0.5\n", "no rate for people with age_band="),
    ):
        with pytest.raises(DataError, match=match):
            run(turnout_options(tmp_path, bad), {"answers": a, "people": p, "questions": q}, CTX)
    with pytest.raises(ValueError, match="go together"):
        Options(weightings=["turnout"])


# ---------------------------------------------------------------------------------------------------------------
# several answer inputs: models side by side


def test_several_answer_inputs_are_reported_as_models(tmp_path):
    q = questions(load_seed_set("election")[:2])
    flipped = [{**r, "choice": None if r["choice"] is None else 1 - r["choice"]} for r in ELECTION_ANSWERS]
    inputs = {
        "answers": {"small": answers(ELECTION_ANSWERS, PERSONS), "big": answers(flipped, PERSONS)},
        "people": people(PERSONS),
        "questions": q,
    }
    out = run(Options(), inputs, CTX)
    summary = out.extras["election_summary"].to_pandas()
    styles = summary[summary["style"] == "meta"]
    assert set(styles.model) == {"small", "big"} and len(styles) == 2 * 2 * 2  # models x years x weightings
    small = styles[(styles.model == "small") & (styles.year == 2016) & (styles.weighting == "population")].iloc[0]
    assert small.mae_state_share == pytest.approx(
        sum(abs(SIM[("population", 2016)][s] - real_share(2016, s)) for s in ("NY", "WY", "FL")) / 3
    )
    assert set(summary[summary["style"] == "baseline:uniform"].model) == {"small", "big"}
    tables_out = {"data": out.data, **out.extras}
    result = summarize(Options(), tables_out, CTX, tmp_path)
    assert (tmp_path / "election_map_small_meta.png").exists() and (tmp_path / "election_map_big_meta.png").exists()
    assert {r["model"] for r in result["figures"]} == {"small", "big"}
    section = (tmp_path / "card_section.md").read_text()
    assert "baseline:previous_cycle" in section and "95% bootstrap" in section


def test_the_same_style_on_two_models_is_compared_paired():
    q = questions(load_seed_set("election")[:2])
    flipped = [{**r, "choice": None if r["choice"] is None else 1 - r["choice"]} for r in ELECTION_ANSWERS]
    same = answers(ELECTION_ANSWERS, PERSONS)
    inputs = {"answers": {"small": same, "big": answers(flipped, PERSONS), "twin": same}, "people": people(PERSONS),
              "questions": q}  # fmt: skip
    out = run(Options(weightings=["population"]), inputs, CTX)
    cmp = out.extras["comparisons"].to_pandas()
    summary = out.extras["election_summary"].to_pandas()
    mae = {m: summary[(summary.model == m) & (summary["style"] == "meta") & (summary.year == 2016)]
           .mae_state_share.iloc[0] for m in ("small", "big")}  # fmt: skip
    row = cmp[(cmp.model == "small") & (cmp.versus == "model:big") & (cmp.metric == "election_mae_2016")].iloc[0]
    assert row["style"] == "meta" and row.value == pytest.approx(mae["small"])
    assert row.versus_value == pytest.approx(mae["big"]) and row.improvement == pytest.approx(mae["big"] - mae["small"])
    twin = cmp[(cmp.model == "small") & (cmp.versus == "model:twin")]
    assert len(twin) and (twin.improvement == 0).all() and (twin.ci_low == 0).all() and (twin.ci_high == 0).all()


def test_replicates_score_each_sample_on_its_own_and_report_the_spread(tmp_path):
    q = questions(load_seed_set("election")[:2])
    first = [{**r, "sample": 0} for r in ELECTION_ANSWERS if r.get("valid", True)]
    second = [{**r, "sample": 1, "choice": 1 - r["choice"]} for r in first]
    inputs = {"answers": answers(first + second, PERSONS), "people": people(PERSONS), "questions": q}
    options = Options(weightings=["population"], replicates=2, bootstrap=0)
    out = run(options, inputs, CTX)
    per = out.extras["replicates"].to_pandas()
    mae = per[(per["style"] == "meta") & (per.metric == "election_mae_2016")].sort_values("replicate")
    states = ("NY", "WY", "FL")
    by_hand = [
        sum(abs(SIM[("population", 2016)][s] - real_share(2016, s)) for s in states) / 3,
        sum(abs(1 - SIM[("population", 2016)][s] - real_share(2016, s)) for s in states) / 3,
    ]  # the second replicate voted the other way: every state's share flips
    assert list(mae.replicate) == [0, 1] and list(mae.value) == pytest.approx(by_hand)
    spread = out.extras["replicate_spread"].to_pandas()
    row = spread[(spread["style"] == "meta") & (spread.metric == "election_mae_2016")].iloc[0]
    assert row.replicates == 2 and row["mean"] == pytest.approx(np.mean(by_hand))
    assert row.sd == pytest.approx(np.std(by_hand, ddof=1)) and (row["min"], row["max"]) == pytest.approx(
        (min(by_hand), max(by_hand))
    )
    assert not per["style"].str.startswith("baseline:").any()
    result = summarize(options, {"data": out.data, **out.extras}, CTX, tmp_path)
    assert "2 replicates" in result["replicate_spread"][0]["election_mae_2016"]
    assert "**Replicates.**" in (tmp_path / "card_section.md").read_text()
    with pytest.raises(DataError, match=r"stages.evaluate.replicates: 3, but no sampled answer has sample 2 "):
        run(Options(weightings=["population"], replicates=3, bootstrap=0), inputs, CTX)


def test_map_tiles_carry_their_interval_and_hatch_noise(election_run, tmp_path):
    from factory.evaluate.plots import election_map, tile_label

    assert tile_label(12.4, None) == ("+12", False)
    assert tile_label(12.4, (8.0, 16.2)) == ("+12±4", False)
    assert tile_label(-3.0, (-9.0, 2.0)) == ("-3±6", True)  # the real result is inside: noise
    election_map({2016: {"NY": 10.0, "WY": -4.0}}, tmp_path / "m.png", "t", {2016: {"NY": (6.0, 14.0)}})
    assert (tmp_path / "m.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------------------
# your own survey as ground truth


SURVEY_QUESTIONS = "id,topic,question,options\nq1,Parks,Should the city build more parks?,Yes|Maybe|No\n"


def survey_questions(tmp_path, human: str):
    from factory.stages.questions import Options as QuestionOptions
    from factory.stages.questions import run as questions_run

    (tmp_path / "survey.csv").write_text(SURVEY_QUESTIONS)
    (tmp_path / "answers.csv").write_text(human)
    options = QuestionOptions.model_validate(
        {"files": ["survey.csv"], "human_answers": ["answers.csv"]}, context={"base_dir": tmp_path}
    )
    return questions_run(options, {}, StageContext(recipe="t", stage="questions", seed=0)).data


def test_user_survey_answers_are_ground_truth(tmp_path):
    human = (
        "question_id,attribute,group,option,count\n"
        "q1,,,Yes,50\nq1,,,Maybe,25\nq1,,,No,25\n"
        "q1,SEX,Female,Yes,30\nq1,SEX,Female,No,10\n"
        "survey/q1,SEX,Male,Yes,20\nq1,SEX,Male,maybe,25\nq1,SEX,Male,No,15\n"
    )
    q = survey_questions(tmp_path, human)
    row = q.to_list()[0]
    assert row["human_distribution"] == [0.5, 0.25, 0.25] and row["human_n"] == 100
    assert row["ordinal"] == [1.0, 2.0, 3.0]
    groups = {(g["attribute"], g["group"]): g["counts"] for g in row["human_groups"]}
    assert groups == {("SEX", "Female"): [30, 0, 10], ("SEX", "Male"): [20, 25, 15]}
    persons = [
        {"person_id": "f", "geography": "NY", "weight": 1.0, "sex": "Female"},
        {"person_id": "m", "geography": "NY", "weight": 1.0, "sex": "Male"},
    ]
    rows = [
        {"person_id": "f", "question_id": "survey/q1", "choice": 0},
        {"person_id": "m", "question_id": "survey/q1", "choice": 2},
    ]
    _, tables = evaluate(
        answers(rows, persons), people(persons), q, weightings=["unweighted"], group_attributes=["SEX"]
    )
    oqa = tables["opinionqa"].set_index(["style", "attribute", "group"], drop=False)
    # women: all Yes = [1, 0, 0] vs [3/4, 0, 1/4]: CDFs [1, 1, 1] vs [3/4, 3/4, 1] -> W1 1/2 over a span of 2
    assert oqa.loc[("meta", "SEX", "Female"), "alignment"] == pytest.approx(1 - 0.5 / 2)
    # overall: [1/2, 0, 1/2] vs [1/2, 1/4, 1/4]: CDFs [1/2, 1/2, 1] vs [1/2, 3/4, 1] -> W1 1/4
    assert oqa.loc[("meta", None, None), "alignment"] == pytest.approx(1 - 0.25 / 2)


@pytest.mark.parametrize(
    "human, message",
    [
        (
            "question_id,attribute,group,option,share\nq1,,,Yes,0.5\nq1,,,No,0.4\n",
            r"rows 2-3, column share: .*sum to 0.9, not 1",
        ),
        (
            "question_id,attribute,group,option,share\nq1,,,Perhaps,1\n",
            r"row 2, column option: 'Perhaps' is not an option",
        ),
        (
            "question_id,attribute,group,option,share\nq1,SEX,Men,Yes,1\n",
            r"row 2, column group: unknown SEX group 'Men'",
        ),
        ("question_id,attribute,group,option,share\nq9,,,Yes,1\n", r"row 2, column question_id: no question 'q9'"),
        (
            "question_id,attribute,group,option,share\nq1,GENDER,Male,Yes,1\n",
            r"row 2, column attribute: unknown attribute",
        ),
        ("question_id,attribute,group,option,share\nq1,,,Yes,lots\n", r"row 2, column share: 'lots' is not a number"),
        ("question_id,attribute,group,option\nq1,,,Yes\n", r"give one of the columns 'share' or 'count'"),
    ],
)
def test_malformed_survey_answers_fail_in_one_line(tmp_path, human, message):
    with pytest.raises(DataError, match=message) as caught:
        survey_questions(tmp_path, human)
    assert "answers.csv" in str(caught.value) and "\n" not in str(caught.value)
