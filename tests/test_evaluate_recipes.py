"""The evaluation recipes end to end on tiny models: the cross-simulation grid (writer x simulator) and persona
styles on OpinionQA, each table carrying baseline rows and intervals."""

from __future__ import annotations

from pathlib import Path

from datasets import load_from_disk

from factory.recipe import load_recipe
from factory.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def test_cross_simulation_reports_writer_x_simulator_beside_baselines(tmp_path, tiny_path):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "tiny_b", seed=1, train_steps=20)
    overrides = [
        f"backends.a.model={tiny_path}",
        f"backends.b.model={other}",
        "vars.n_persons=2",
        "stages.people.n_per_geography=10",
        "stages.personas_a.max_tokens=40",
        "stages.personas_b.max_tokens=40",
        "stages.evaluate.bootstrap=100",
    ]
    recipe = load_recipe(ROOT / "recipes/cross_simulation.yaml", overrides)
    runner = Runner(recipe, runs_dir=tmp_path / "runs", progress=False)
    runner.build()
    store = runner.store("evaluate")
    summary = load_from_disk(str(store.dir / "election_summary")).to_pandas()
    cells = {"write_a_sim_a", "write_a_sim_b", "write_b_sim_a", "write_b_sim_b"}
    assert set(summary.model) == cells
    styles = summary[~summary["style"].str.startswith("baseline:")]
    assert set(styles["style"]) <= {"meta", "descriptive"} and "meta" in set(styles["style"])
    for model in cells:  # every cell carries its baselines, and every style its intervals
        mine = summary[summary.model == model]
        assert {"baseline:uniform", "baseline:national", "baseline:previous_cycle"} <= set(mine["style"])
    # (a percentile interval of an absolute error may sit above the point value: resampling adds error)
    assert styles.mae_ci_low.notna().all() and (styles.mae_ci_low <= styles.mae_ci_high).all()
    table = load_from_disk(str(store.dir / "styles")).to_pandas()
    assert set(table.model) == cells
    assert (store.dir / "artifacts" / "election_map_write_b_sim_a_meta.png").is_file()


def test_opinionqa_styles_recipe_scores_alignment_per_style_group_and_wave(tmp_path, tiny_path):
    overrides = [
        f"backends.small.model={tiny_path}",
        "vars.n_people=3",
        "vars.n_questions=3",
        "stages.people.geographies=[NY,TX]",
        "stages.people.n_per_geography=30",
        "stages.personas.max_tokens=60",
        "stages.personas.styles=[descriptive]",
        "stages.opinions.styles=[meta,base,descriptive]",
        "stages.alignment.bootstrap=100",
    ]
    runner = Runner(load_recipe(ROOT / "recipes/opinionqa_styles.yaml", overrides), runs_dir=tmp_path, progress=False)
    runner.build()
    store = runner.store("alignment")
    oqa = load_from_disk(str(store.dir / "opinionqa")).to_pandas()
    assert {"meta", "base", "descriptive", "baseline:uniform", "baseline:human_groups"} <= set(oqa["style"])
    assert "baseline:overall_human" in set(oqa[oqa.attribute.notna()]["style"])
    styles = load_from_disk(str(store.dir / "styles")).to_pandas()
    waves = styles[styles.metric.str.startswith("opinionqa_alignment_topic_pew_atp_w")]
    assert len(waves) and {"meta", "descriptive"} <= set(waves["style"])
    overall = styles[(styles.metric == "opinionqa_alignment") & (styles["style"] == "descriptive")]
    assert overall.ci_low.notna().all() and overall.vs_uniform.notna().all() and overall.vs_base.notna().all()
    cmp = load_from_disk(str(store.dir / "comparisons")).to_pandas()
    assert {"base", "meta", "baseline:uniform"} <= set(cmp[cmp["style"] == "descriptive"]["versus"])
    card = (store.dir / "artifacts" / "card_section.md").read_text()
    assert "baseline:human_groups" in card
