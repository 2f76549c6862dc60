"""The shipped CPU election recipe end to end on the tiny model, and its evaluation recomputed by hand from the
answers dataset and the certified results."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from factory.recipe import load_recipe
from factory.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "factory/data/elections/us_president_by_state_2016_2020_2024.csv"


def test_cpu_election_recipe_tables_and_maps_recomputed_by_hand(tmp_path, tiny_path):
    overrides = [
        f"backends.small.model={tiny_path}",
        "vars.n_persons=5",
        "stages.people.n_per_geography=30",
        "stages.personas.styles=[descriptive]",
        "stages.personas.max_tokens=120",
    ]
    runner = Runner(load_recipe(ROOT / "recipes/election_cpu.yaml", overrides), runs_dir=tmp_path, progress=False)
    runner.build()
    votes = load_from_disk(str(runner.store("votes").data_dir)).to_pandas()
    people = load_from_disk(str(runner.store("people").data_dir))
    citizenship = people.features["citizenship"].names
    eligible = {p for p, c in zip(people["person_id"], people["citizenship"]) if citizenship[c] != "Not a U.S. citizen"}
    votes = votes[votes.person_id.isin(eligible)]  # the default electorate: citizens 18+
    evaluate = runner.store("evaluate")
    elections = load_from_disk(str(evaluate.dir / "elections")).to_pandas()
    summary = load_from_disk(str(evaluate.dir / "election_summary")).to_pandas()
    questions = {q["question_id"]: q for q in load_from_disk(str(runner.store("election").data_dir))}
    styles = set(votes["style"])
    assert "meta" in styles
    for style in styles:  # a map per persona style
        assert (evaluate.dir / "artifacts" / f"election_map_{style}.png").stat().st_size > 10_000
    assert (evaluate.dir / "artifacts" / "styles.png").is_file()

    # every table carries the baselines beside the styles, and the styles carry intervals
    assert {"baseline:uniform", "baseline:national", "baseline:previous_cycle"} <= set(summary["style"])
    assert {"baseline:uniform", "baseline:national"} <= set(elections["style"])
    simulated = summary[~summary["style"].str.startswith("baseline:")]
    assert simulated.mae_ci_low.notna().all() and simulated.national_ci_high.notna().all()
    assert elections[elections["style"] == "meta"].ci_low.notna().all()

    real = {(int(r["year"]), r["state_po"]): r for r in csv.DictReader(RESULTS.open())}
    for (qid, style), group in votes.groupby(["question_id", "style"]):
        q = questions[qid]
        year = int(q["text"].split()[-1].rstrip("?"))
        dem_name = real[(year, "NY")]["dem_candidate"].split(",")[0]
        dem = next(i for i, o in enumerate(q["options"]) if dem_name in o)
        rows = elections[(elections.question_id == qid) & (elections["style"] == style)]
        errors = []
        for state, people in group.groupby("geography"):
            dist = np.stack(people["distribution"].to_list())
            w = people["weight"].to_numpy()
            by_hand = {
                "unweighted": dist[:, dem].mean() / dist.sum(1).mean(),
                "population": (w * dist[:, dem]).sum() / (w * dist.sum(1)).sum(),
            }
            truth = float(real[(year, state)]["dem_two_party_share"])
            for weighting, share in by_hand.items():
                row = rows[(rows.weighting == weighting) & (rows.state == state)].iloc[0]
                assert row["sim_dem_share"] == pytest.approx(share, abs=1e-6)
                assert row["real_dem_share"] == pytest.approx(truth, abs=1e-6)
                assert row["sim_winner"] == ("D" if share > 0.5 else "R")
            errors.append(by_hand["population"] - truth)
        s = summary[(summary.question_id == qid) & (summary["style"] == style) & (summary.weighting == "population")]
        assert s["mae_state_share"].iloc[0] == pytest.approx(np.mean(np.abs(errors)), abs=1e-6)
        assert s["signed_bias"].iloc[0] == pytest.approx(np.mean(errors), abs=1e-6)
