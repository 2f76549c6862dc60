"""The `dataset` stage: any local or published dataset mapped onto a role's schema, sampled by seed without loading
it whole, with every mistake one line naming dataset, column and row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from factory.recipe import load_recipe
from factory.runner import Runner

FIXTURE = Path(__file__).resolve().parents[1] / "recipes" / "data" / "nemotron_like" / "personas.parquet"
EDUCATION = {
    "less_than_9th": "Less than 9th grade",
    "9th_12th_no_diploma": "9th to 12th grade, no diploma",
    "high_school": "High school graduate (includes equivalency)",
    "some_college": "Some college, no degree",
    "associates": "Associate's degree",
    "bachelors": "Bachelor's degree",
    "graduate": "Graduate or professional degree",
}
PEOPLE = """\
name: mapped
seed: 3
stages:
  people:
    uses: dataset
    from: {source}
    role: people
    columns: {{uuid: person_id, sex: sex, age: age, state: geography, education_level: education}}
    values:
      education: {education}
    sample: {sample}
"""


def people_recipe(tmp_path: Path, source: str, sample: int | str = "null", extra: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(PEOPLE.format(source=source, sample=sample, education=EDUCATION) + extra)
    return path


def build(path: Path, *overrides: str, runs: str = "runs") -> Dataset:
    runner = Runner(load_recipe(path, list(overrides)), runs_dir=path.parent / runs, progress=False)
    runner.build()
    return load_from_disk(str(runner.store(next(iter(runner.recipe.stages))).data_dir))


def fixture_rows() -> list[dict]:
    return pq.read_table(FIXTURE).to_pylist()


def test_parquet_csv_jsonl_and_saved_folders_give_the_same_people(tmp_path):
    table = pq.read_table(FIXTURE)
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 100), tmp_path / "parts" / "a.parquet")
    pq.write_table(table.slice(100), tmp_path / "parts" / "b.parquet")
    pcsv.write_csv(table, tmp_path / "people.csv")
    Dataset(table).to_json(tmp_path / "people.jsonl", lines=True)
    Dataset(table).save_to_disk(str(tmp_path / "saved"))
    shutil.copy(FIXTURE, tmp_path / "people.parquet")
    got = {
        src: build(people_recipe(tmp_path, src), runs=f"runs-{src}").to_list()
        for src in ("people.parquet", "parts", "people.csv", "people.jsonl", "saved")
    }
    first = got["people.parquet"]
    assert len(first) == table.num_rows and all(rows == first for rows in got.values())
    source = fixture_rows()
    ds = build(people_recipe(tmp_path, "people.parquet"))
    assert ds.features["education"].names[ds[0]["education"]] == EDUCATION[source[0]["education_level"]]
    assert ds.features["geography"].names[ds[0]["geography"]] == source[0]["state"]
    assert (ds[0]["person_id"], ds[0]["age"], ds[0]["weight"]) == (source[0]["uuid"], source[0]["age"], 1.0)
    assert ds.features["age"].dtype == "int16" and set(ds.column_names) == {
        "person_id", "geography", "weight", "age", "sex", "education"
    }  # fmt: skip


def test_a_seeded_sample_is_the_same_bytes_whatever_the_batch_size_and_moves_with_the_seed(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "people.parquet")
    path = people_recipe(tmp_path, "people.parquet", sample=40)
    one = build(path, runs="a")
    batched = build(path, "stages.people.batch_size=7", runs="b")
    assert one.to_list() == batched.to_list() and len(one) == 40
    assert len(set(one["person_id"])) == 40
    order = [r["uuid"] for r in fixture_rows()]
    assert [order.index(p) for p in one["person_id"]] == sorted(order.index(p) for p in one["person_id"])
    other = build(path, "seed=4", runs="c")
    assert set(other["person_id"]) != set(one["person_id"])


def test_splits_of_a_saved_dataset_dict_are_read_in_the_order_asked(tmp_path):
    table = pq.read_table(FIXTURE)
    DatasetDict({"train": Dataset(table.slice(0, 30)), "test": Dataset(table.slice(30, 20))}).save_to_disk(
        str(tmp_path / "dict")
    )
    both = build(people_recipe(tmp_path, "dict", extra="    split: [test, train]\n"), runs="a")
    ids = [r["uuid"] for r in table.to_pylist()]
    assert both["person_id"] == ids[30:50] + ids[:30]
    test_only = build(people_recipe(tmp_path, "dict", extra="    split: test\n"), runs="b")
    assert test_only["person_id"] == ids[30:50]


def test_personas_and_questions_roles(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "people.parquet")
    (tmp_path / "r.yaml").write_text(
        "name: roles\nstages:\n"
        "  texts:\n    uses: dataset\n    from: people.parquet\n    role: personas\n"
        "    columns: {uuid: person_id, persona: persona}\n    constants: {style: nemotron}\n"
    )
    personas = build(tmp_path / "r.yaml")
    assert personas.column_names == ["person_id", "style", "persona"] and set(personas["style"]) == {"nemotron"}
    Dataset.from_list(
        [{"qid": "q1", "prompt": "Pick one", "choices": ["Yes", "No"]}, {"qid": "q2", "prompt": "Why?", "choices": []}]
    ).to_json(tmp_path / "q.jsonl", lines=True)
    (tmp_path / "q.yaml").write_text(
        "name: qs\nstages:\n  survey:\n    uses: dataset\n    from: q.jsonl\n    role: questions\n"
        "    columns: {qid: question_id, prompt: text, choices: options}\n    constants: {source: my_survey}\n"
    )
    qs = build(tmp_path / "q.yaml", runs="q")
    assert qs["kind"] == ["choice", "open"]
    assert qs.to_list()[0] == {
        "question_id": "q1", "source": "my_survey", "text": "Pick one", "kind": "choice", "options": ["Yes", "No"]
    }  # fmt: skip


def test_answers_from_elsewhere_take_the_columns_evaluate_reads(tmp_path):
    Dataset.from_list(
        [{"who": "p1", "state": "NY", "q": "election/1", "pick": 0}, {"who": "p2", "state": "WY", "q": "election/1",
          "pick": 1}]
    ).to_json(tmp_path / "a.jsonl", lines=True)  # fmt: skip
    (tmp_path / "a.yaml").write_text(
        "name: ans\nstages:\n  votes:\n    uses: dataset\n    from: a.jsonl\n    role: answers\n"
        "    columns: {who: person_id, state: geography, q: question_id, pick: choice}\n"
        "    constants: {style: survey_panel, valid: true}\n"
    )
    votes = build(tmp_path / "a.yaml")
    assert votes.to_list()[1] == {
        "person_id": "p2", "geography": "WY", "style": "survey_panel", "question_id": "election/1", "mode": "fast",
        "round": 0, "choice": 1, "distribution": None, "valid": True,
    }  # fmt: skip
    assert votes.features["choice"].dtype == "int32"


BASE = "uuid: person_id, sex: sex, state: geography"
MALFORMED = [
    # at `factory validate`: the recipe alone is wrong
    ("columns: {uuid: person_id, sex: gender}", "columns.sex: 'gender' is not a people column"),
    ("columns: {uuid: person_id, state: geography, city: geography}", "'state' and 'city' both map to geography"),
    (
        "columns: {uuid: person_id, education_level: education}\n    values: {education_level: {x: y}}",
        "values.education_level: 'education_level' is not a mapped people column (values are keyed by role column: "
        "'education')",
    ),
    ("columns: {uuid: person_id}\n    constants: {stile: x}", "constants.stile: 'stile' is not a people column"),
    ("role: personas\n    columns: {uuid: person_id}\n    constants: {style: s}", "nothing maps to persona"),
    (f"columns: {{{BASE}}}\n    from: hub://org/name", "pin a revision, e.g. hub://org/name@v1"),
    (f"columns: {{{BASE}}}\n    from: ../outside.parquet", "'../outside.parquet' resolves outside the recipe's folder"),
    # at build: the data does not fit the mapping (one line naming dataset, column and row)
    ("columns: {uuid: person_id, gender: sex}", "people.parquet: no column 'gender' (mapped to sex)"),
    (
        "columns: {uuid: person_id, education_level: education}",
        "people.parquet: column 'education_level' (-> education), train row 0: 'graduate' is not one of the "
        "education categories (closest: 'Graduate or professional degree'",
    ),
    (
        "columns: {uuid: person_id, state: age}",
        "people.parquet: column 'state' (-> age), train row 0: 'DC' is not an int16",
    ),
    (
        "columns: {uuid: person_id, sex: sex}\n    values: {sex: {Female: Woman}}",
        "column 'sex' (-> sex), train row 0: 'Woman' is not one of the sex categories (closest: 'Male', 'Female'",
    ),
    ("columns: {bachelors_field: person_id}\n    values: {person_id: {'': null}}", "train row 1: no value (required)"),
    (f"columns: {{{BASE}}}\n    sample: 1000", "people.parquet: sample 1000 is more than its 240 rows"),
]


@pytest.mark.parametrize("mapping,message", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_mappings_are_one_line_each(tmp_path, cli, mapping, message):
    shutil.copy(FIXTURE, tmp_path / "people.parquet")
    (tmp_path / "outside.parquet").touch()
    (tmp_path / "in").mkdir()
    recipe = tmp_path / "in" / "recipe.yaml"
    shutil.copy(FIXTURE, tmp_path / "in" / "people.parquet")
    given = {line.strip().split(":")[0] for line in mapping.splitlines()}
    defaults = "".join(f"    {k}: {v}\n" for k, v in (("from", "people.parquet"), ("role", "people")) if k not in given)
    recipe.write_text("name: bad\nstages:\n  people:\n    uses: dataset\n" + defaults + "    " + mapping)
    result = cli("build", recipe, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
